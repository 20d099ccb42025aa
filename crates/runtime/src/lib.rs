//! The service runtime: what every Cairn service binary needs besides its own logic, in one place
//! instead of five copies.
//!
//! A service builds a [`Runtime`] from its name and the shutdown token (`cairn_telemetry::shutdown`),
//! asks it for its dependencies — [`Runtime::postgres`] (pool, migrations, readiness, the
//! prepared-transaction check and gauges) and [`Runtime::nats`] (connection and readiness) —, binds
//! its listeners with [`bind`] (errors name the variable), registers its metrics in
//! [`Runtime::registry`], spawns its work with [`Runtime::spawn_worker`] and its servers with
//! [`Runtime::serve_http`] (the service's routes merged with `/healthz`, `/readyz` and `/metrics`,
//! behind the [`http`] middleware) or [`Runtime::spawn_server`], and ends with
//! [`Runtime::into_service`]. [`Service::wait`] then drains in order on shutdown: workers first (they
//! stop taking work and finish what they hold), servers after them, so a request in flight while
//! the workers wind down is still answered; a task that fails before shutdown stops the whole
//! service (exit non-zero, the orchestrator restarts it) instead of leaving it half alive.

pub mod http;
mod tasks;

pub use tasks::Service;

use anyhow::Context;
use cairn_telemetry::prometheus_client::registry::Registry;
use cairn_telemetry::{Readiness, Refresh};
use futures::FutureExt;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a caller waits for a pooled PostgreSQL connection before its request fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A service being assembled. See the [crate documentation](crate).
pub struct Runtime {
    name: &'static str,
    shutdown: CancellationToken,
    registry: Registry,
    readiness: Readiness,
    refresh: Vec<Refresh>,
    tasks: tasks::Tasks,
}

impl Runtime {
    /// A runtime for the service `name`, stopping when `shutdown` is cancelled.
    pub fn new(name: &'static str, shutdown: CancellationToken) -> Self {
        Self {
            name,
            tasks: tasks::Tasks::new(shutdown.clone()),
            shutdown,
            registry: Registry::default(),
            readiness: Readiness::default(),
            refresh: Vec::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The shutdown token: workers watch it, stop taking work when it is cancelled and return.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The service's Prometheus registry, served on `/metrics`.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Adds a readiness check to `/readyz`; it returns `Err(reason)` while the dependency is not
    /// usable.
    pub fn check<F>(&mut self, name: &'static str, check: F)
    where
        F: Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.readiness = std::mem::take(&mut self.readiness).with(name, check);
    }

    /// Adds work run before `/metrics` is encoded (gauges whose value lives elsewhere).
    pub fn refresh(&mut self, refresh: Refresh) {
        self.refresh.push(refresh);
    }

    /// Connects to PostgreSQL with at most `max_connections`, sessions idle in a transaction
    /// ended after `idle_in_transaction` (see `cairn_eventstore::connect_options`), applies the
    /// migrations, and adds the `postgres` and `prepared_transactions` readiness checks and the
    /// prepared-transaction gauges. Errors name `CAIRN_DATABASE_URL`.
    pub async fn postgres(
        &mut self,
        url: &str,
        max_connections: u32,
        idle_in_transaction: Duration,
    ) -> anyhow::Result<PgPool> {
        let options = cairn_eventstore::connect_options(url, idle_in_transaction)
            .context("CAIRN_DATABASE_URL is not a PostgreSQL URL")?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL (CAIRN_DATABASE_URL)")?;
        cairn_migrations::run(&pool)
            .await
            .context("applying migrations")?;
        self.check("postgres", {
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
        });
        // A transaction left prepared holds every event reader back: not ready, naming its gid.
        let prepared = cairn_eventstore::PreparedTransactions::new(
            pool.clone(),
            cairn_eventstore::PREPARED_TRANSACTION_MAX_AGE,
        );
        self.check("prepared_transactions", prepared.readiness());
        prepared.register(&mut self.registry);
        self.refresh(prepared.refresher());
        Ok(pool)
    }

    /// Connects to NATS (retrying until it is reachable, connect timeout 2 s) and adds the `nats`
    /// readiness check. Errors name `CAIRN_NATS_URL`.
    pub async fn nats(&mut self, url: &str) -> anyhow::Result<async_nats::Client> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .context("connecting to NATS (CAIRN_NATS_URL)")?;
        self.check("nats", {
            let client = client.clone();
            move || {
                let state = client.connection_state();
                async move {
                    match state {
                        async_nats::connection::State::Connected => Ok(()),
                        other => Err(format!("nats connection is {other:?}")),
                    }
                }
                .boxed()
            }
        });
        Ok(client)
    }

    /// Spawns a worker named `name`: it watches [`Runtime::shutdown`] and returns when it has
    /// finished what it holds. Workers are drained before the servers stop.
    pub fn spawn_worker<F>(&mut self, name: &'static str, work: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn_worker(name, work);
    }

    /// Spawns a server named `name`, built by `serve` from the token that stops it: servers stop
    /// after every worker has ended.
    pub fn spawn_server<F, Fut>(&mut self, name: &'static str, serve: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = self.tasks.servers_stop();
        self.tasks.spawn_server(name, serve(stop));
    }

    /// Spawns a background loop named `name` that runs until the servers stop (a `LISTEN` that
    /// keeps a cache or a waiter current): it stops with the servers, after the workers, so a
    /// request in flight still has it. Built by `listen` from the token that stops it.
    pub fn spawn_listener<F, Fut>(&mut self, name: &'static str, listen: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_server(name, move |stop| {
            let listening = listen(stop);
            async move {
                listening.await;
                Ok(())
            }
        });
    }

    /// Serves `routes` merged with `/healthz`, `/readyz` and `/metrics` on `listener`, behind the
    /// [`http`] middleware configured by `settings`. Call it after every metric is registered: the
    /// registry is handed to the `/metrics` route here.
    pub fn serve_http(&mut self, listener: TcpListener, routes: axum::Router, settings: &http::HttpSettings) {
        let registry = Arc::new(std::mem::take(&mut self.registry));
        let ops = cairn_telemetry::ops_router_refreshing(
            self.readiness.clone(),
            registry,
            std::mem::take(&mut self.refresh),
        );
        let app = http::layered(routes.merge(ops), settings);
        self.spawn_server("http", move |stop| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("HTTP server failed")
        });
    }

    /// The assembled service, to wait on.
    pub fn into_service(self) -> Service {
        tracing::info!(service = self.name, "service started");
        self.tasks.into_service(self.name)
    }
}

/// Binds `addr`; an error names the `variable` that sets it (`CAIRN_API_GRPC_ADDR`).
pub async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({variable})"))
}
