//! `services`: the five service binaries as separate processes (the release builds beside this
//! benchmark's own executable) on a database and stream of their own, to measure what each one
//! holds in memory: resident memory once all are ready and idle (`<service>.idle_rss_mib`), and the
//! peak (`VmHWM`, `<service>.rss_mib`) after SCIM creates and `userName` lookups at concurrency 32
//! through the gateway, which drive every service (the gateway, command-api, the relay, the
//! projector and the notifier's intake). Targets: under 64 MiB idle, under 256 MiB under load.
//! The throughput of the load is printed too; the `scim` group compares it with its raw limit.

use crate::harness::{BenchDb, Settings, bench, closed_loop};
use anyhow::Context;
use cairn_stack::request;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;
const SERVICES: [&str; 5] = [
    "eventstore",
    "projector",
    "command-api",
    "notifier",
    "scim-gateway",
];

fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
pub fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

struct Running {
    name: &'static str,
    child: tokio::process::Child,
    ready: SocketAddr,
}

async fn wait_ready(service: &mut Running, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = cairn_testkit::http_get(service.ready, "/readyz").await {
            return Ok(());
        }
        if let Some(status) = service.child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("{} exited with {status}: {tail}", service.name);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} not ready within 60 s",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // poll_interval while starting
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("the benchmark's executable has no directory")?
        .to_path_buf();
    for name in SERVICES {
        anyhow::ensure!(
            bin_dir.join(name).exists(),
            "{} is missing: scripts/bench builds the services in release mode",
            bin_dir.join(name).display()
        );
    }
    let db = BenchDb::create(settings, 4).await?;
    let logs = std::env::temp_dir().join(format!("cairn-bench-services-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs)?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let stream = format!("BENCH_{tag}");
    let keys = format!("k1:{}", cairn_secrets::Keyring::generate_key_string()?.as_str());

    // The instance and its tokens, as `cairn init` and `cairn token create` would make them.
    let store = cairn_eventstore::PgEventStore::new(db.pool.clone());
    let vault = cairn_personal::Vault::new(cairn_secrets::Keyring::parse(&keys)?);
    let (_, scim_token) = cairn_stack::bootstrap(
        &db.pool,
        &store,
        &vault,
        "Bench",
        cairn_domain::Clock::now(&cairn_domain::SystemClock),
    )
    .await?;

    let (es_grpc, es_http, proj_http) = (free_addr()?, free_addr()?, free_addr()?);
    let (api_grpc, api_http, not_grpc, not_http, scim) = (
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
    );
    let common: Vec<(&str, String)> = vec![
        ("CAIRN_DATABASE_URL", db.url()),
        ("CAIRN_NATS_URL", settings.nats_url.clone()),
        ("CAIRN_STREAM_NAME", stream.clone()),
        ("CAIRN_STREAM_SUBJECT_PREFIX", format!("bench.{tag}")),
        ("CAIRN_EVENTSTORE_TOKEN", format!("bench-{tag}")),
        ("CAIRN_KEYS", keys),
        ("CAIRN_EVENTSTORE_GRPC_ADDR", es_grpc.to_string()),
        ("CAIRN_EVENTSTORE_HTTP_ADDR", es_http.to_string()),
        ("CAIRN_PROJECTOR_HTTP_ADDR", proj_http.to_string()),
        ("CAIRN_API_GRPC_ADDR", api_grpc.to_string()),
        ("CAIRN_API_HTTP_ADDR", api_http.to_string()),
        ("CAIRN_NOTIFIER_GRPC_ADDR", not_grpc.to_string()),
        ("CAIRN_NOTIFIER_HTTP_ADDR", not_http.to_string()),
        ("CAIRN_SCIM_HTTP_ADDR", scim.to_string()),
        ("CAIRN_API_URL", format!("http://{api_grpc}")),
        ("CAIRN_SCIM_BASE_URL", format!("http://{scim}/scim/v2")),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut running = Vec::new();
    let outcome = async {
        for (name, ready) in [
            ("eventstore", es_http),
            ("projector", proj_http),
            ("command-api", api_http),
            ("notifier", not_http),
            ("scim-gateway", scim),
        ] {
            let log = logs.join(format!("{name}.log"));
            let file = std::fs::File::create(&log)?;
            let child = tokio::process::Command::new(bin_dir.join(name))
                .env_clear()
                .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(file.try_clone()?)
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            running.push(Running { name, child, ready });
            let service = running.last_mut().context("just pushed")?;
            wait_ready(service, &log).await?;
        }
        for service in &running {
            let pid = service.child.id().context("a service exited")?;
            let (rss, _) = memory_mib(pid)?;
            bench(&format!("{}.idle_rss_mib", service.name), rss);
        }

        let token = format!("Bearer {scim_token}");
        let creates = closed_loop(CONCURRENCY, settings.phase, {
            let token = token.clone();
            move |worker, i| {
                let token = token.clone();
                async move {
                    let body = json!({
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": format!("svc{worker}-{i}"),
                        "name": {"givenName": "Grace", "familyName": "Hopper"},
                        "emails": [{"value": format!("svc{worker}-{i}@example.com"), "primary": true}],
                    })
                    .to_string();
                    let headers = [
                        ("authorization", token.as_str()),
                        ("content-type", "application/scim+json"),
                    ];
                    let response = request(scim, "POST", "/scim/v2/Users", &headers, Some(&body)).await?;
                    anyhow::ensure!(
                        response.status == 201,
                        "create: {} {}",
                        response.status,
                        response.body
                    );
                    Ok(())
                }
            }
        })
        .await?;
        bench("services.scim_create_per_s", creates.ops_per_s());
        let lookups = closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
            let token = token.clone();
            async move {
                let path = format!(
                    "/scim/v2/Users?filter=userName%20eq%20%22svc{worker}-{}%22",
                    i % 50
                );
                let response =
                    request(scim, "GET", &path, &[("authorization", token.as_str())], None).await?;
                anyhow::ensure!(
                    response.status == 200,
                    "lookup: {} {}",
                    response.status,
                    response.body
                );
                Ok(())
            }
        })
        .await?;
        bench("services.scim_filter_per_s", lookups.ops_per_s());
        for service in &running {
            let pid = service.child.id().context("a service exited under load")?;
            let (_, peak) = memory_mib(pid)?;
            bench(&format!("{}.rss_mib", service.name), peak);
        }
        anyhow::Ok(())
    }
    .await;

    // SIGTERM, then at most 15 s each before the kill on drop.
    for service in &running {
        if let Some(pid) = service.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for service in &mut running {
        let _ = tokio::time::timeout(Duration::from_secs(15), service.child.wait()).await;
    }
    drop(running);
    if let Ok(client) = async_nats::connect(&settings.nats_url).await {
        let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
    }
    db.drop_db().await?;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!("service logs kept in {}", logs.display());
    }
    outcome
}
