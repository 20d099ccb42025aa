//! `cairn-bench <group>`: runs one benchmark group against the local services and prints one figure
//! a line as `BENCH <key> <number>`, with the raw limit measured in the same run beside it.
//! Driven by `scripts/bench`; see the README for the figures of the latest run.

mod actions;
mod api;
mod append;
mod harness;
mod notifier;
mod projector;
mod relay;
mod scim;
mod services;
mod tenants;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let group = std::env::args().nth(1).context(
        "usage: cairn-bench <group>   (groups: append, relay, projector, notifier, actions, api, scim, tenants, services)",
    )?;
    let settings = harness::Settings::from_env()?;
    let outcome = match group.as_str() {
        "append" => append::run(&settings).await,
        "relay" => relay::run(&settings).await,
        "projector" => projector::run(&settings).await,
        "notifier" => notifier::run(&settings).await,
        "actions" => actions::run(&settings).await,
        "api" => api::run(&settings).await,
        "scim" => scim::run(&settings).await,
        "tenants" => tenants::run(&settings).await,
        "services" => services::run(&settings).await,
        other => {
            anyhow::bail!(
                "unknown benchmark group {other:?} (groups: append, relay, projector, notifier, actions, api, scim, tenants, services)"
            )
        }
    };
    if outcome.is_ok() && group != "services" {
        // These groups run the services' libraries inside this process: one figure for all of
        // them (the `services` group measures each service as its own process).
        let (_, peak) = services::memory_mib(std::process::id())?;
        harness::bench(&format!("{group}.in_process_rss_mib"), peak);
    }
    outcome
}
