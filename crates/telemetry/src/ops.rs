//! The operations endpoints every service serves on its HTTP port:
//! - `GET /healthz`: the process is alive (always 200 while it serves);
//! - `GET /readyz`: every readiness check passes (200), or `503` as `application/problem+json`
//!   naming the failing checks;
//! - `GET /metrics`: the service's Prometheus registry in the text exposition format, after the
//!   service's refresh hooks ran (gauges whose value lives elsewhere, such as PostgreSQL's
//!   prepared transactions, are read at scrape time).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Work run before `/metrics` is encoded, such as reading a gauge's value from a database. It
/// bounds its own time; a failure leaves its gauges as they were.
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Named readiness checks (PostgreSQL reachable, NATS connected, ...).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// Adds a check; it returns `Err(reason)` when the dependency is not usable.
    pub fn with<F>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Runs every check; the failing ones with their reasons.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move { (*name, fut.await) }
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|reason| (name, reason)))
            .collect()
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    registry: Arc<Registry>,
    refresh: Arc<[Refresh]>,
}

/// The router for `/healthz`, `/readyz` and `/metrics`; merge it into the service's HTTP router.
pub fn ops_router(readiness: Readiness, registry: Arc<Registry>) -> Router {
    ops_router_refreshing(readiness, registry, Vec::new())
}

/// [`ops_router`] whose `/metrics` first runs every hook of `refresh` (concurrently).
pub fn ops_router_refreshing(readiness: Readiness, registry: Arc<Registry>, refresh: Vec<Refresh>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            readiness,
            registry,
            refresh: refresh.into(),
        })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let failures = state.readiness.failures().await;
    if failures.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let checks: serde_json::Map<String, serde_json::Value> = failures
        .iter()
        .map(|(name, reason)| ((*name).to_owned(), serde_json::Value::String(reason.clone())))
        .collect();
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "not ready",
        "status": 503,
        "detail": format!("failing checks: {}", failures.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
        "checks": checks,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    futures::future::join_all(state.refresh.iter().map(|refresh| refresh())).await;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
