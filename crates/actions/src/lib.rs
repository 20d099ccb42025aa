//! The `actions` service: every event that an execution matches becomes one delivery per target,
//! sent as a signed webhook (Standard Webhooks), in order per aggregate, retried for days, never
//! lost (DESIGN.md guarantee 13; docs/ARCHITECTURE.md, "Guarantee 13 — outbound delivery").
//!
//! - [`intake`]: the `actions` projection, run by the projection framework under leases: keeps the
//!   targets and executions, and makes one `actions.deliveries` row per (event, target), exactly
//!   once, caught up from PostgreSQL and woken by JetStream.
//! - [`dispatcher`]: claims due deliveries (`FOR UPDATE SKIP LOCKED`, claims that expire), signs,
//!   calls through [`cairn_webhooks`]'s guarded client and records every attempt.
//! - [`deliveries`]: every statement on the delivery tables, and the order rule.
//! - [`grpc`]: `cairn.action.v1.ActionService` for instance administrators.
//! - [`commands`]: the target and execution commands against the event store.
//! - [`config`], [`metrics`].

pub mod commands;
pub mod config;
pub mod deliveries;
pub mod dispatcher;
pub mod grpc;
pub mod intake;
pub mod metrics;

pub use config::Config;
pub use metrics::ActionsMetrics;

use anyhow::Context;
use cairn_domain::{Clock, SystemClock};
use cairn_eventstore::PgEventStore;
use cairn_projection::Projection;
use cairn_projection::projector::{Projector, ProjectorConfig, ProjectorMetrics};
use cairn_projection::wait::PositionWaiter;
use cairn_proto::action::v1::action_service_server::ActionServiceServer;
use cairn_runtime::{Runtime, bind};
use cairn_webhooks::client::Client;
use cairn_webhooks::guard::Guard;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A started replica.
pub struct Service {
    /// Where /healthz, /readyz and /metrics listen.
    pub http_addr: SocketAddr,
    /// Where `ActionService` listens.
    pub grpc_addr: SocketAddr,
    /// This replica's id (lease owner of the intake, claim owner of deliveries).
    pub owner: uuid::Uuid,
    /// Its metrics.
    pub metrics: ActionsMetrics,
    service: cairn_runtime::Service,
}

impl Service {
    /// Waits for every task to end after shutdown: the intake and the dispatcher finish what they
    /// hold (calls in flight are recorded), then the gRPC and HTTP servers stop.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// Connects, migrates, and starts the intake, the dispatcher and the servers.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    start_with(config, shutdown, Arc::new(SystemClock)).await
}

/// [`start`] with an injected clock (the failure period, rotation grace periods).
pub async fn start_with(
    config: Config,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Service> {
    config.validate()?;
    let keys = cairn_secrets::Keyring::parse(config.keys.expose_str())
        .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
    let vault = cairn_personal::Vault::new(keys.clone());
    let guard = Guard::allowing(config.allowed_hosts.iter().filter(|h| !h.is_empty()));
    let client = Client::new(guard.clone()).context("setting up TLS for outbound calls")?;
    let mut rt = Runtime::new("actions", shutdown.clone());
    let pool = rt
        .postgres(
            &config.database_url,
            8 + u32::try_from(config.concurrency.min(64)).unwrap_or(64),
            Duration::from_secs(config.lease_ttl_secs),
        )
        .await?;
    let store = PgEventStore::new(pool.clone());
    let nats = rt.nats(&config.nats_url).await?;
    let js = async_nats::jetstream::new(nats);

    let registry = rt.registry();
    let grpc_metrics = cairn_telemetry::RequestMetrics::register(registry, "cairn_actions_grpc");
    let projector_metrics = ProjectorMetrics::default();
    registry.register(
        "cairn_actions_intake_events",
        "Events read by this replica's intake",
        projector_metrics.events.clone(),
    );
    registry.register(
        "cairn_actions_intake_leases",
        "Intake leases held by this replica",
        projector_metrics.leases.clone(),
    );
    let metrics = ActionsMetrics::default();
    metrics.register(registry);

    let projector = Projector::new(
        pool.clone(),
        store.clone(),
        vec![Arc::new(intake::ActionsProjection) as Arc<dyn Projection>],
        ProjectorConfig {
            lease_ttl: Duration::from_secs(config.lease_ttl_secs),
            batch: 1000,
            max_attempts: 3,
            head_check: Duration::from_millis(config.head_check_ms),
            stream: Some((config.stream_name.clone(), config.subject_prefix.clone())),
            crash_every: None,
            // The intake reads only types and ids, but the framework opens an erasable user's
            // events before any projection sees them.
            vault: Some(vault.clone()),
        },
        Some(js),
        projector_metrics,
    );
    let owner = projector.owner();
    let config = Arc::new(config);
    let dispatcher = dispatcher::Dispatcher::new(
        pool.clone(),
        store,
        vault,
        client,
        config.clone(),
        metrics.clone(),
        clock.clone(),
        owner,
    );
    let (waiter, commits) = PositionWaiter::listening(pool.clone());
    let actions = grpc::Actions::new(pool.clone(), keys, guard, waiter, clock);

    let listener = bind(config.http_addr, "CAIRN_ACTIONS_HTTP_ADDR").await?;
    let http_addr = listener.local_addr()?;
    let grpc_listener = bind(config.grpc_addr, "CAIRN_ACTIONS_GRPC_ADDR").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ActionServiceServer<grpc::Actions>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let grpc = tonic::transport::Server::builder()
        .layer(cairn_runtime::http::grpc_request_id())
        .layer(grpc_metrics.layer("actions"))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ActionServiceServer::new(actions));

    rt.spawn_worker("intake", {
        let shutdown = shutdown.clone();
        async move {
            projector.run(shutdown).await;
            Ok(())
        }
    });
    rt.spawn_worker("dispatcher", async move {
        dispatcher.run(shutdown).await;
        Ok(())
    });
    rt.spawn_listener("position-listener", |stop| commits.run(stop));
    rt.spawn_server("grpc", move |stop| async move {
        grpc.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.cancelled_owned(),
        )
        .await
        .context("gRPC server failed")
    });
    rt.serve_http(listener, axum::Router::new(), &Default::default());
    tracing::info!(%http_addr, %grpc_addr, %owner, "actions replica started");
    Ok(Service {
        http_addr,
        grpc_addr,
        owner,
        metrics,
        service: rt.into_service(),
    })
}
