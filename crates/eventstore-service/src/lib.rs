//! The `eventstore` service: the relay that publishes committed events to NATS JetStream
//! ([`relay`]), and the gRPC event API ([`grpc`]), plus `/healthz`, `/readyz` and `/metrics`.
//! [`start`] wires them from a [`Config`]; `main.rs` only parses the configuration and waits for
//! SIGTERM.

pub mod config;
pub mod envelope;
pub mod grpc;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod relay;

pub use config::Config;

use anyhow::Context;
use cairn_eventstore::{CommitListener, PgEventStore};
use cairn_proto::eventstore::v1::event_store_service_server::EventStoreServiceServer;
use cairn_runtime::{Runtime, bind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A started service: its bound addresses and its tasks.
pub struct Service {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub http_addr: SocketAddr,
    service: cairn_runtime::Service,
}

impl Service {
    /// Waits until every task has ended (after shutdown: the relay first, then the servers),
    /// returning the first error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// Connects to PostgreSQL (migrating it) and NATS, binds both ports, and starts the relay and the
/// servers. Everything stops when `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    config.validate()?;
    let mut rt = Runtime::new("eventstore", shutdown.clone());
    let pool = rt
        .postgres(
            &config.database_url,
            8,
            cairn_eventstore::IDLE_IN_TRANSACTION_TIMEOUT,
        )
        .await?;
    let store = PgEventStore::new(pool.clone());
    let commits = CommitListener::start(pool.clone(), shutdown.clone());
    let nats = rt.nats(&config.nats_url).await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(nats);
    let relay_metrics = metrics::RelayMetrics::default();
    relay_metrics.register(rt.registry());

    let grpc_listener = bind(config.grpc_addr, "CAIRN_EVENTSTORE_GRPC_ADDR").await?;
    let http_listener = bind(config.http_addr, "CAIRN_EVENTSTORE_HTTP_ADDR").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let relay = relay::Relay::new(
        store.clone(),
        js,
        config.relay(),
        commits.subscribe(),
        relay_metrics,
    );
    rt.spawn_worker("relay", {
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await.map_err(anyhow::Error::from) }
    });

    let api = grpc::EventApi::new(
        store,
        commits.subscribe(),
        shutdown.clone(),
        Duration::from_millis(config.relay_poll_ms),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<EventStoreServiceServer<grpc::EventApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let token: Arc<str> = Arc::from(config.service_token.as_str());
    let grpc_metrics = cairn_telemetry::RequestMetrics::register(rt.registry(), "cairn_eventstore_grpc");
    let grpc = tonic::transport::Server::builder()
        .layer(cairn_runtime::http::grpc_request_id())
        .layer(grpc_metrics.layer("eventstore"))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(EventStoreServiceServer::with_interceptor(
            api,
            grpc::authenticate(token),
        ));
    rt.spawn_server("grpc", move |stop| async move {
        grpc.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.cancelled_owned(),
        )
        .await
        .context("gRPC server failed")
    });
    rt.serve_http(http_listener, axum::Router::new(), &Default::default());

    tracing::info!(%grpc_addr, %http_addr, "eventstore service started");
    Ok(Service {
        grpc_addr,
        http_addr,
        service: rt.into_service(),
    })
}
