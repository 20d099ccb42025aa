//! The `notifier` service: every `user.human.email.code.added` event becomes one delivery record
//! and, unless the code was returned to the caller or is no longer valid, one email sent over SMTP
//! (DESIGN.md guarantee 10).
//!
//! - [`intake`]: the `notifications` projection, run by the projection framework under leases:
//!   one `notification.deliveries` row per event, exactly once, caught up from PostgreSQL.
//! - [`sender`]: workers that claim due rows (`FOR UPDATE SKIP LOCKED`, with a claim expiry),
//!   compose ([`compose`]), send ([`transport`], with the settings of [`smtp`]) and record the
//!   outcome; transient failures are retried with exponential backoff and jitter, permanent ones
//!   recorded. A sender keeps its claim while it talks to the server and confirms it right before
//!   `DATA`, so a slow server never gets a second copy from another sender.
//! - [`deliveries`]: every statement on the delivery table.
//! - [`grpc`]: the administration API (deliveries, retries, template overrides); its errors are
//!   `cairn-error`'s, like every service's.
//! - [`config`]: the settings.
//!
//! What happens when a replica dies between the SMTP server's acceptance and the record is stated
//! and measured in `docs/ARCHITECTURE.md` ("Guarantee 10 — notifications").

pub mod compose;
pub mod config;
pub mod deliveries;
pub mod grpc;
pub mod intake;
pub mod metrics;
pub mod sender;
pub mod smtp;
pub mod transport;

pub use config::{Config, TlsMode};
pub use sender::{Hooks, NotifierMetrics};

use anyhow::Context;
use cairn_domain::{Clock, SystemClock};
use cairn_eventstore::PgEventStore;
use cairn_projection::Projection;
use cairn_projection::projector::{Projector, ProjectorConfig, ProjectorMetrics};
use cairn_proto::notification::v1::notification_service_server::NotificationServiceServer;
use cairn_runtime::{Runtime, bind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A started replica.
pub struct Service {
    /// Where /healthz, /readyz and /metrics listen.
    pub http_addr: SocketAddr,
    /// Where the administration API listens.
    pub grpc_addr: SocketAddr,
    /// This replica's id (lease owner of the intake, claim owner of deliveries).
    pub owner: uuid::Uuid,
    /// Its metrics.
    pub metrics: NotifierMetrics,
    service: cairn_runtime::Service,
}

impl Service {
    /// Waits for every task to end after shutdown: the intake and the senders finish what they
    /// hold (sends in flight are recorded), then the gRPC and HTTP servers stop.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// Connects, migrates, and starts the intake, the senders and the HTTP endpoints.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    start_with(config, shutdown, Arc::new(SystemClock), Hooks::default()).await
}

/// [`start`] with an injected clock (code expiry) and test hooks.
pub async fn start_with(
    config: Config,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
    hooks: Hooks,
) -> anyhow::Result<Service> {
    config.validate()?;
    let keys = cairn_secrets::Keyring::parse(config.keys.expose_str())
        .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
    let vault = cairn_personal::Vault::new(keys);
    let templates = cairn_mail::Templates::new().context("compiling the email templates")?;
    let mut rt = Runtime::new("notifier", shutdown.clone());
    let pool = rt
        .postgres(
            &config.database_url,
            8 + config.concurrency as u32,
            Duration::from_secs(config.lease_ttl_secs),
        )
        .await?;
    let store = PgEventStore::new(pool.clone());
    let nats = rt.nats(&config.nats_url).await?;
    let js = async_nats::jetstream::new(nats);

    let registry = rt.registry();
    let grpc_metrics = cairn_telemetry::RequestMetrics::register(registry, "cairn_notifier_grpc");
    let projector_metrics = ProjectorMetrics::default();
    registry.register(
        "cairn_notifier_intake_events",
        "Code events read by this replica's intake",
        projector_metrics.events.clone(),
    );
    registry.register(
        "cairn_notifier_intake_leases",
        "Intake leases held by this replica",
        projector_metrics.leases.clone(),
    );
    let metrics = NotifierMetrics::default();
    metrics.register(registry);

    let projector = Projector::new(
        pool.clone(),
        store.clone(),
        vec![Arc::new(intake::NotificationsProjection) as Arc<dyn Projection>],
        ProjectorConfig {
            lease_ttl: Duration::from_secs(config.lease_ttl_secs),
            batch: 1000,
            max_attempts: 3,
            head_check: Duration::from_millis(config.head_check_ms),
            stream: Some((config.stream_name.clone(), config.subject_prefix.clone())),
            crash_every: None,
            vault: Some(vault.clone()),
        },
        Some(js),
        projector_metrics,
    );
    let owner = projector.owner();
    let config = Arc::new(config);
    let templates = Arc::new(templates);
    let notifications = grpc::Notifications::new(pool.clone(), templates.clone(), clock.clone());
    let sender = sender::Sender {
        pool: pool.clone(),
        store,
        vault,
        templates,
        transports: transport::Transports::new(config.smtp_timeout(), config.concurrency),
        config: config.clone(),
        metrics: metrics.clone(),
        clock,
        owner,
        jitter: Arc::new(rand::random::<f64>),
        hooks,
    };

    let listener = bind(config.http_addr, "CAIRN_NOTIFIER_HTTP_ADDR").await?;
    let http_addr = listener.local_addr()?;
    let grpc_listener = bind(config.grpc_addr, "CAIRN_NOTIFIER_GRPC_ADDR").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<NotificationServiceServer<grpc::Notifications>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let grpc = tonic::transport::Server::builder()
        .layer(cairn_runtime::http::grpc_request_id())
        .layer(grpc_metrics.layer("notifier"))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(NotificationServiceServer::new(notifications));

    // Shutdown order: the intake and the senders stop taking work and finish what they hold
    // (sends in flight are recorded), then the gRPC and HTTP servers stop.
    rt.spawn_worker("intake", {
        let shutdown = shutdown.clone();
        async move {
            projector.run(shutdown).await;
            Ok(())
        }
    });
    rt.spawn_worker("senders", async move {
        sender.run(shutdown).await;
        Ok(())
    });
    rt.spawn_server("grpc", move |stop| async move {
        grpc.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.cancelled_owned(),
        )
        .await
        .context("gRPC server failed")
    });
    rt.serve_http(listener, axum::Router::new(), &Default::default());
    tracing::info!(%http_addr, %grpc_addr, %owner, smtp_default = config.smtp_host.is_some(), "notifier replica started");
    Ok(Service {
        http_addr,
        grpc_addr,
        owner,
        metrics,
        service: rt.into_service(),
    })
}
