//! The `projector` service: one replica of the projection workers ([`cairn_projection::projector`])
//! running every read model of [`cairn_readmodel::all`], with `/healthz`, `/readyz` and
//! `/metrics`. Run as many replicas as wanted; leases spread the (projection, instance) pairs across
//! them.

use cairn_eventstore::PgEventStore;
use cairn_projection::projector::{Projector, ProjectorConfig, ProjectorMetrics};
use cairn_runtime::{Runtime, bind};
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of a projector replica.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "projector",
    version,
    about = "Builds Cairn's read models from the event log"
)]
pub struct Config {
    /// PostgreSQL holding the event store and the read models.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// NATS server (wake-ups only; the projector works without it, only slower to react).
    #[arg(long, env = "CAIRN_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Encryption keys (the same as command-api's), to open the personal data that the read
    /// models hold: `k1:<base64 32 bytes>[,k2:...][,active=k2]`.
    #[arg(long, env = "CAIRN_KEYS", hide_env_values = true)]
    pub keys: cairn_secrets::SecretString,
    /// HTTP listen address for /healthz, /readyz, /metrics. Port 0 picks a free port (for replicas).
    #[arg(long, env = "CAIRN_PROJECTOR_HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,
    /// The JetStream stream the relay publishes to.
    #[arg(long, env = "CAIRN_STREAM_NAME", default_value = "CAIRN_EVENTS")]
    pub stream_name: String,
    /// Its subject prefix.
    #[arg(long, env = "CAIRN_STREAM_SUBJECT_PREFIX", default_value = "cairn.events")]
    pub subject_prefix: String,
    /// Lease time-to-live in seconds.
    #[arg(long, env = "CAIRN_PROJECTOR_LEASE_TTL_SECS", default_value_t = 5)]
    pub lease_ttl_secs: u64,
    /// Events per batch.
    #[arg(long, env = "CAIRN_PROJECTOR_BATCH", default_value_t = 1000)]
    pub batch: u32,
    /// Attempts before a failing event is skipped.
    #[arg(long, env = "CAIRN_PROJECTOR_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i32,
    /// How often an idle worker checks the head anyway, in milliseconds.
    #[arg(long, env = "CAIRN_PROJECTOR_HEAD_CHECK_MS", default_value_t = 2000)]
    pub head_check_ms: u64,
}

impl Config {
    /// Checks the settings; errors name the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lease_ttl_secs >= 1,
            "CAIRN_PROJECTOR_LEASE_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.batch),
            "CAIRN_PROJECTOR_BATCH must be between 1 and 10000"
        );
        anyhow::ensure!(
            self.max_attempts >= 1,
            "CAIRN_PROJECTOR_MAX_ATTEMPTS must be at least 1"
        );
        Ok(())
    }
}

/// A started replica.
pub struct Service {
    /// Where /healthz, /readyz and /metrics listen.
    pub http_addr: SocketAddr,
    /// This replica's lease owner id.
    pub owner: uuid_shim::Uuid,
    service: cairn_runtime::Service,
}

/// Re-export so callers need not depend on `uuid` to read [`Service::owner`].
pub mod uuid_shim {
    pub use sqlx::types::Uuid;
}

impl Service {
    /// Waits for every task to end after shutdown (the workers, then the HTTP server). Dropping
    /// the service instead aborts its tasks, as a crash would.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// Connects, migrates, and starts the replica and its HTTP endpoints.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    config.validate()?;
    let keys = cairn_secrets::Keyring::parse(config.keys.expose_str())
        .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
    let mut rt = Runtime::new("projector", shutdown.clone());
    // A replica stopped inside a transaction must not hold row locks and the visibility horizon
    // longer than its lease.
    let pool = rt
        .postgres(
            &config.database_url,
            8,
            Duration::from_secs(config.lease_ttl_secs),
        )
        .await?;
    let store = PgEventStore::new(pool.clone());
    let nats = rt.nats(&config.nats_url).await?;
    let js = async_nats::jetstream::new(nats);

    let metrics = ProjectorMetrics::default();
    let registry = rt.registry();
    registry.register(
        "cairn_projector_events",
        "Events read by this replica's workers",
        metrics.events.clone(),
    );
    registry.register(
        "cairn_projector_batches",
        "Committed projection batches",
        metrics.batches.clone(),
    );
    registry.register(
        "cairn_projector_batch_errors",
        "Failed projection batches",
        metrics.batch_errors.clone(),
    );
    registry.register(
        "cairn_projector_leases",
        "Leases held by this replica",
        metrics.leases.clone(),
    );
    registry.register_collector(Box::new(LagCollector { pool: pool.clone() }));

    let projector = Projector::new(
        pool.clone(),
        store,
        cairn_readmodel::all(),
        ProjectorConfig {
            lease_ttl: Duration::from_secs(config.lease_ttl_secs),
            batch: config.batch,
            max_attempts: config.max_attempts,
            head_check: Duration::from_millis(config.head_check_ms),
            stream: Some((config.stream_name.clone(), config.subject_prefix.clone())),
            crash_every: None,
            vault: Some(cairn_personal::Vault::new(keys)),
        },
        Some(js),
        metrics,
    );
    let owner = projector.owner();
    let listener = bind(config.http_addr, "CAIRN_PROJECTOR_HTTP_ADDR").await?;
    let http_addr = listener.local_addr()?;
    rt.spawn_worker("projector", async move {
        projector.run(shutdown).await;
        Ok(())
    });
    rt.serve_http(listener, axum::Router::new(), &Default::default());
    tracing::info!(%http_addr, %owner, "projector replica started");
    Ok(Service {
        http_addr,
        owner,
        service: rt.into_service(),
    })
}

/// Exports per-(projection, instance) lag as gauges when `/metrics` is scraped.
#[derive(Debug)]
struct LagCollector {
    pool: sqlx::PgPool,
}

impl cairn_telemetry::prometheus_client::collector::Collector for LagCollector {
    fn encode(
        &self,
        mut encoder: cairn_telemetry::prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use cairn_telemetry::prometheus_client::encoding::EncodeMetric;
        use cairn_telemetry::prometheus_client::metrics::gauge::ConstGauge;
        // The collector API is synchronous; read the health rows on a blocking-capable handle.
        let pool = self.pool.clone();
        let rows = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(cairn_projection::health::report(&pool, None))
        })
        .unwrap_or_default();
        for (name, help, value) in [
            ("cairn_projection_lag_events", "Events not yet projected", 0_u8),
            (
                "cairn_projection_lag_seconds",
                "Age of the oldest event not yet projected",
                1,
            ),
            ("cairn_projection_failed_events", "Failed events recorded", 2),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                cairn_telemetry::prometheus_client::metrics::MetricType::Gauge,
            )?;
            for row in &rows {
                let labels = [
                    ("projection", row.projection.clone()),
                    ("instance", row.instance_id.to_string()),
                ];
                let metric_encoder = family.encode_family(&labels)?;
                let v = match value {
                    0 => row.lag_events as f64,
                    1 => row.lag_seconds,
                    _ => row.error_count as f64,
                };
                ConstGauge::new(v).encode(metric_encoder)?;
            }
        }
        Ok(())
    }
}
