//! The `scim-gateway` service: a SCIM 2.0 service provider (RFC 7643/7644) for Users and Groups
//! under `/scim/v2/`. Writes go to command-api over gRPC (forwarding the caller's token, the
//! client's idempotency key and the trace context); reads come from the read models, after
//! waiting until they reflect everything the tenant committed (read-after-write without sleeps).
//! The protocol logic (filters, PATCH, projection, schemas) is the `cairn-scim` crate.

pub mod bulk;
pub mod conflict;
pub mod gateway;
pub mod group_change;
pub mod handlers;
pub mod query;
pub mod resources;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use cairn_scim::ResourceType;
use cairn_telemetry::Readiness;
use cairn_telemetry::prometheus_client::registry::Registry;
use clap::Parser;
use futures::FutureExt;
use gateway::{Gateway, Limits};
use handlers::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
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
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Service {
    /// Waits for the tasks after shutdown.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(joined) = self.tasks.join_next().await {
            joined.context("a gateway task panicked")??;
        }
        Ok(())
    }
}

/// The SCIM routes under `/scim/v2`.
pub fn router(gw: Gateway) -> Router {
    let scim = Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/.search",
            post(
                |State(gw): State<Gateway>, headers: HeaderMap, body: Body| async move {
                    search(gw, headers, body, &[ResourceType::User]).await
                },
            ),
        )
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route(
            "/Groups/.search",
            post(
                |State(gw): State<Gateway>, headers: HeaderMap, body: Body| async move {
                    search(gw, headers, body, &[ResourceType::Group]).await
                },
            ),
        )
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route(
            "/.search",
            post(
                |State(gw): State<Gateway>, headers: HeaderMap, body: Body| async move {
                    search(gw, headers, body, &[ResourceType::User, ResourceType::Group]).await
                },
            ),
        )
        .route("/Bulk", post(bulk::bulk))
        .route(
            "/Me",
            axum::routing::any(|State(gw): State<Gateway>, headers: HeaderMap| async move {
                me(&gw, &headers).await
            }),
        )
        .route(
            "/ServiceProviderConfig",
            get(|State(gw): State<Gateway>, headers: HeaderMap| async move {
                let document = service_provider_config(&gw);
                discovery(&gw, &headers, Some(document)).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            "/ResourceTypes",
            get(|State(gw): State<Gateway>, headers: HeaderMap| async move {
                let document = list_of(cairn_scim::schema::resource_types_json(&gw.limits.base_url));
                discovery(&gw, &headers, Some(document)).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            "/ResourceTypes/{name}",
            get(
                |State(gw): State<Gateway>, headers: HeaderMap, Path(name): Path<String>| async move {
                    let document = [ResourceType::User, ResourceType::Group]
                        .into_iter()
                        .find(|rt| rt.name().eq_ignore_ascii_case(&name))
                        .map(|rt| cairn_scim::schema::resource_type_json(rt, &gw.limits.base_url));
                    discovery(&gw, &headers, document).await
                },
            )
            .fallback(method_not_allowed),
        )
        .route(
            "/Schemas",
            get(|State(gw): State<Gateway>, headers: HeaderMap| async move {
                let document = list_of(cairn_scim::schema::schemas_json(&gw.limits.base_url));
                discovery(&gw, &headers, Some(document)).await
            })
            .fallback(method_not_allowed),
        )
        .route(
            "/Schemas/{id}",
            get(
                |State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>| async move {
                    let document = cairn_scim::schema::schema_json(&id, &gw.limits.base_url);
                    discovery(&gw, &headers, document).await
                },
            )
            .fallback(method_not_allowed),
        )
        .fallback(|| async {
            gateway::error_response(&cairn_scim::ScimError::not_found("no such SCIM endpoint"))
        })
        .with_state(gw);
    Router::new().nest("/scim/v2", scim)
}

/// Wraps an array of resources in a ListResponse (what `/Schemas` and `/ResourceTypes` return).
fn list_of(document: serde_json::Value) -> serde_json::Value {
    match document {
        serde_json::Value::Array(items) => serde_json::json!({
            "schemas": [query::LIST_RESPONSE],
            "totalResults": items.len(),
            "startIndex": 1,
            "itemsPerPage": items.len(),
            "Resources": items,
        }),
        other => other,
    }
}

/// Connects and serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
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
    let channel = tonic::transport::Channel::from_shared(config.api_url.clone())
        .context("CAIRN_API_URL is not a URL")?
        .connect_lazy();
    let waiter = cairn_readmodel::PositionWaiter::start(pool.clone(), shutdown.clone());
    let gw = Gateway::new(
        pool.clone(),
        channel,
        Limits {
            base_url: config.base_url.clone(),
            max_results: config.max_results,
            bulk_max_operations: config.bulk_max_operations,
            max_payload_bytes: config.max_payload_bytes,
            wait_timeout: Duration::from_millis(config.wait_timeout_ms),
        },
        waiter,
        shutdown.clone(),
    );
    let readiness = Readiness::default().with("postgres", {
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
    // A transaction left prepared holds every event reader back: not ready, naming its gid and age.
    let prepared = cairn_eventstore::PreparedTransactions::new(
        pool.clone(),
        cairn_eventstore::PREPARED_TRANSACTION_MAX_AGE,
    );
    let readiness = readiness.with("prepared_transactions", prepared.readiness());
    let mut registry = Registry::default();
    let http_metrics = cairn_telemetry::RequestMetrics::register(&mut registry, "cairn_scim_http");
    prepared.register(&mut registry);
    let app = router(gw).route_layer(http_metrics.layer("scim-gateway")).merge(
        cairn_telemetry::ops_router_refreshing(readiness, Arc::new(registry), vec![prepared.refresher()]),
    );
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {} (CAIRN_SCIM_HTTP_ADDR)", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server failed")
    });
    tracing::info!(%http_addr, "scim-gateway started");
    Ok(Service { http_addr, tasks })
}
