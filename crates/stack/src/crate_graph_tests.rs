//! The crate graph points down: no crate of the workspace depends on a service crate, so a change
//! inside one service never ripples into another's build. A service crate is one with both a
//! library and a binary target (command-api, eventstore-service, projector-service, scim-gateway,
//! notifier, and any added later). Exempt are the harnesses that run the whole system (this crate
//! and `cairn-bench`) and dev-dependencies (a service's integration tests may start the others).
//! Read from `cargo metadata`, so it sees what Cargo builds.

use serde_json::Value;
use std::collections::BTreeSet;

/// Crates whose job is to assemble the services.
const HARNESSES: [&str; 2] = ["cairn-stack", "cairn-bench"];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn names(values: &Value) -> impl Iterator<Item = &Value> {
    values.as_array().into_iter().flatten()
}

fn has_target(package: &Value, kind: &str) -> bool {
    names(&package["targets"]).any(|t| names(&t["kind"]).any(|k| k == kind))
}

#[test]
fn no_crate_depends_on_a_service_crate() {
    let metadata = metadata();
    let packages: Vec<&Value> = names(&metadata["packages"]).collect();
    let services: BTreeSet<&str> = packages
        .iter()
        .filter(|p| has_target(p, "lib") && has_target(p, "bin"))
        .filter_map(|p| p["name"].as_str())
        .collect();
    for known in [
        "cairn-command-api",
        "cairn-eventstore-service",
        "cairn-projector-service",
        "cairn-scim-gateway",
        "cairn-notifier",
    ] {
        assert!(
            services.contains(known),
            "{known} is not recognised as a service: {services:?}"
        );
    }
    let mut offences = Vec::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default();
        if HARNESSES.contains(&name) {
            continue;
        }
        for dependency in names(&package["dependencies"]) {
            let target = dependency["name"].as_str().unwrap_or_default();
            let for_tests = dependency["kind"].as_str() == Some("dev");
            if services.contains(target) && !for_tests {
                offences.push(format!("{name} -> {target}"));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "crates depend on a service crate (move the shared code into a library under crates/): {offences:?}"
    );
}
