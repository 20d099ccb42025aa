//! The `scim-gateway` service: a SCIM 2.0 service provider (RFC 7643/7644) for Users and Groups
//! under `/scim/v2/`. Writes go to command-api over gRPC (forwarding the caller's token, the
//! client's idempotency key and the trace context); reads come from the read models, after
//! waiting until they reflect everything the tenant committed (read-after-write without sleeps).
//! The protocol logic (filters, PATCH, projection, schemas) is the `cairn-scim` crate.

pub mod bulk;
pub mod conflict;
pub mod discovery;
pub mod extract;
pub mod gateway;
pub mod group_change;
pub mod groups;
pub mod query;
pub mod resources;
pub mod users;

use axum::Router;
use axum::routing::{any, get, post};
use cairn_domain::{Clock, SystemClock};
use cairn_runtime::{Runtime, bind};
use clap::Parser;
use gateway::{Gateway, Limits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the SCIM gateway.
#[derive(Parser, Clone, Debug)]
#[command(name = "scim-gateway", version, about = "Cairn's SCIM 2.0 service provider")]
pub struct Config {
    /// PostgreSQL with the read models.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// command-api's gRPC endpoint.
    #[arg(long, env = "CAIRN_API_URL", default_value = "http://127.0.0.1:50051")]
    pub api_url: String,
    /// HTTP listen address.
    #[arg(long, env = "CAIRN_SCIM_HTTP_ADDR", default_value = "0.0.0.0:8083")]
    pub http_addr: SocketAddr,
    /// The public base URL of the SCIM API (for `meta.location` and `$ref`).
    #[arg(
        long,
        env = "CAIRN_SCIM_BASE_URL",
        default_value = "http://127.0.0.1:8083/scim/v2"
    )]
    pub base_url: String,
    /// Largest page a list returns.
    #[arg(long, env = "CAIRN_SCIM_MAX_RESULTS", default_value_t = 1000)]
    pub max_results: u32,
    /// Most operations per Bulk request.
    #[arg(long, env = "CAIRN_SCIM_BULK_MAX_OPERATIONS", default_value_t = 1000)]
    pub bulk_max_operations: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "CAIRN_SCIM_MAX_PAYLOAD_BYTES", default_value_t = 1_048_576)]
    pub max_payload_bytes: usize,
    /// How long a read waits for the read models, in milliseconds.
    #[arg(long, env = "CAIRN_SCIM_WAIT_TIMEOUT_MS", default_value_t = 5000)]
    pub wait_timeout_ms: u64,
}

/// A started gateway.
pub struct Service {
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    service: cairn_runtime::Service,
}

impl Service {
    /// Waits until the gateway has stopped after shutdown; the first task error, if any.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// The SCIM routes under `/scim/v2`. Each handler's arguments are the extractors of
/// [`extract`]; the handlers of one resource type live in one module ([`users`], [`groups`]).
pub fn router(gw: Gateway) -> Router {
    use discovery::*;
    let scim = Router::new()
        .route("/Users", get(users::list).post(users::create))
        .route("/Users/.search", post(search_users))
        .route(
            "/Users/{id}",
            get(users::get)
                .put(users::replace)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route("/Groups", get(groups::list).post(groups::create))
        .route("/Groups/.search", post(search_groups))
        .route(
            "/Groups/{id}",
            get(groups::get)
                .put(groups::replace)
                .patch(groups::patch)
                .delete(groups::delete),
        )
        .route("/.search", post(search_all))
        .route("/Bulk", post(bulk::bulk))
        .route("/Me", any(me))
        .route(
            "/ServiceProviderConfig",
            get(service_provider_config).fallback(method_not_allowed),
        )
        .route("/ResourceTypes", get(resource_types).fallback(method_not_allowed))
        .route(
            "/ResourceTypes/{name}",
            get(resource_type).fallback(method_not_allowed),
        )
        .route("/Schemas", get(schemas).fallback(method_not_allowed))
        .route("/Schemas/{id}", get(schema).fallback(method_not_allowed))
        .fallback(no_such_endpoint)
        .with_state(gw);
    Router::new().nest("/scim/v2", scim)
}

/// Connects and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    start_with_clock(config, shutdown, Arc::new(SystemClock)).await
}

/// [`start`] with an injected clock (token expiry in tests).
pub async fn start_with_clock(
    config: Config,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Service> {
    let mut rt = Runtime::new("scim-gateway", shutdown);
    let pool = rt
        .postgres(
            &config.database_url,
            16,
            cairn_eventstore::IDLE_IN_TRANSACTION_TIMEOUT,
        )
        .await?;
    let channel = tonic::transport::Channel::from_shared(config.api_url.clone())
        .map_err(|e| anyhow::anyhow!("CAIRN_API_URL is not a URL: {e}"))?
        .connect_lazy();
    // The listeners that keep the waiter awake and the token cache current stop with the
    // servers, after the last request in flight was answered.
    let (waiter, commits) = cairn_readmodel::PositionWaiter::listening(pool.clone());
    let (auth, revocations) = cairn_auth::Authenticator::cached_listening(pool.clone());
    rt.spawn_listener("position-listener", |stop| commits.run(stop));
    rt.spawn_listener("revocation-listener", |stop| revocations.run(stop));
    let gw = Gateway::new(
        gateway::Parts {
            pool,
            channel,
            waiter,
            auth,
            clock,
        },
        Limits {
            base_url: config.base_url.clone(),
            max_results: config.max_results,
            bulk_max_operations: config.bulk_max_operations,
            max_payload_bytes: config.max_payload_bytes,
            wait_timeout: Duration::from_millis(config.wait_timeout_ms),
        },
    );
    let http_metrics = cairn_telemetry::RequestMetrics::register(rt.registry(), "cairn_scim_http");
    let listener = bind(config.http_addr, "CAIRN_SCIM_HTTP_ADDR").await?;
    let http_addr = listener.local_addr()?;
    // SCIM refuses a body over its own limit in its own form (413 with SCIM error JSON); the
    // runtime's limit sits above it, for bodies no SCIM handler would read.
    let settings = cairn_runtime::http::HttpSettings {
        body_limit: config
            .max_payload_bytes
            .saturating_mul(2)
            .max(cairn_runtime::http::HttpSettings::default().body_limit),
        ..Default::default()
    };
    rt.serve_http(
        listener,
        router(gw).route_layer(http_metrics.layer("scim-gateway")),
        &settings,
    );
    tracing::info!(%http_addr, "scim-gateway started");
    Ok(Service {
        http_addr,
        service: rt.into_service(),
    })
}
