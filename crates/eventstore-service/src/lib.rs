//! The `eventstore` service: the relay that publishes committed events to NATS JetStream
//! ([`relay`]), and the gRPC event API ([`grpc`]), plus `/healthz`, `/readyz` and `/metrics`.
//! [`start`] wires them from a [`Config`]; `main.rs` only parses the configuration and waits for
//! SIGTERM.

pub mod config;
pub mod grpc;
pub mod lease;
pub mod metrics;
pub mod relay;

pub use config::Config;

use anyhow::Context;
use cairn_eventstore::{CommitListener, PgEventStore};
use cairn_proto::eventstore::v1::event_store_service_server::EventStoreServiceServer;
use cairn_telemetry::Readiness;
use cairn_telemetry::prometheus_client::registry::Registry;
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A started service: its bound addresses and its tasks.
pub struct Service {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    pub http_addr: SocketAddr,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Service {
    /// Waits until every task has ended (after shutdown), returning the first error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.context("a service task panicked").and_then(|r| r);
            if let Err(error) = result {
                tracing::error!(error = %format!("{error:#}"), "service task failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Connects to PostgreSQL (migrating it) and NATS, binds both ports, and starts the relay and the
/// servers. Everything stops when `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    config.validate()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(
            cairn_eventstore::connect_options(
                &config.database_url,
                cairn_eventstore::IDLE_IN_TRANSACTION_TIMEOUT,
            )
            .context("CAIRN_DATABASE_URL is not a PostgreSQL URL")?,
        )
        .await
        .context("connecting to PostgreSQL (CAIRN_DATABASE_URL)")?;
    cairn_migrations::run(&pool)
        .await
        .context("applying migrations")?;
    let store = PgEventStore::new(pool.clone());
    let commits = CommitListener::start(pool.clone(), shutdown.clone());

    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(config.nats_url.as_str())
        .await
        .context("connecting to NATS (CAIRN_NATS_URL)")?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(nats.clone());

    let mut registry = Registry::default();
    let relay_metrics = metrics::RelayMetrics::default();
    relay_metrics.register(&mut registry);

    let readiness = Readiness::default()
        .with("postgres", {
            let pool = pool.clone();
            move || {
                let pool = pool.clone();
                async move {
                    sqlx::query("SELECT 1")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                .boxed()
            }
        })
        .with("nats", {
            let nats = nats.clone();
            move || {
                let state = nats.connection_state();
                async move {
                    match state {
                        async_nats::connection::State::Connected => Ok(()),
                        other => Err(format!("nats connection is {other:?}")),
                    }
                }
                .boxed()
            }
        });
    // A transaction left prepared holds every event reader back: not ready, naming its gid and age.
    let prepared = cairn_eventstore::PreparedTransactions::new(
        pool.clone(),
        cairn_eventstore::PREPARED_TRANSACTION_MAX_AGE,
    );
    let readiness = readiness.with("prepared_transactions", prepared.readiness());

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "binding gRPC to {} (CAIRN_EVENTSTORE_GRPC_ADDR)",
                config.grpc_addr
            )
        })?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| {
            format!(
                "binding HTTP to {} (CAIRN_EVENTSTORE_HTTP_ADDR)",
                config.http_addr
            )
        })?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let mut tasks = JoinSet::new();

    let relay = relay::Relay::new(
        store.clone(),
        js,
        config.relay(),
        commits.subscribe(),
        relay_metrics,
    );
    tasks.spawn({
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
    let grpc_metrics = cairn_telemetry::RequestMetrics::register(&mut registry, "cairn_eventstore_grpc");
    let grpc = tonic::transport::Server::builder()
        .layer(grpc_metrics.layer("eventstore"))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(EventStoreServiceServer::with_interceptor(
            api,
            grpc::authenticate(token),
        ));
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move {
            grpc.serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                shutdown.cancelled_owned(),
            )
            .await
            .context("gRPC server failed")
        }
    });

    prepared.register(&mut registry);
    let http =
        cairn_telemetry::ops_router_refreshing(readiness, Arc::new(registry), vec![prepared.refresher()]);
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move {
            axum::serve(http_listener, http)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .context("HTTP server failed")
        }
    });

    tracing::info!(%grpc_addr, %http_addr, "eventstore service started");
    Ok(Service {
        grpc_addr,
        http_addr,
        tasks,
    })
}
