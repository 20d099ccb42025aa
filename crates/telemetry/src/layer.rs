//! One tower layer for every server of a service (tonic and axum alike): each request gets a span
//! (`request`, named for OpenTelemetry after its RPC or route, a child of the caller's
//! `traceparent` when one came in) and is counted in two Prometheus families,
//! `<prefix>_requests_total{route, status}` and `<prefix>_request_duration_seconds{route}`.
//!
//! The span carries the request id (`x-request-id`, set by the service runtime's middleware in
//! front of this layer), so every log line of the request names it.
//!
//! The route is the gRPC method path (`/cairn.v1.UserService/AddUser`) or axum's matched route
//! (`/scim/v2/Users/{id}`), never the raw path, so the label set stays small; requests that match
//! no route count as `unmatched`. The status is the gRPC status code for gRPC and the HTTP status
//! otherwise.

use crate::propagation::{TRACEPARENT, set_parent};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Request metrics of one server, registered under one prefix.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl RequestMetrics {
    /// Registers `<prefix>_requests_total` and `<prefix>_request_duration_seconds`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            format!("{prefix}_requests"),
            "Requests handled, by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            format!("{prefix}_request_duration_seconds"),
            "Time to the response head, by route",
            metrics.duration.clone(),
        );
        metrics
    }

    /// The tower layer that traces and counts requests.
    pub fn layer(&self, service: &'static str) -> RequestLayer {
        RequestLayer {
            metrics: self.clone(),
            service,
        }
    }
}

/// See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct RequestLayer {
    metrics: RequestMetrics,
    service: &'static str,
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
            service: self.service,
        }
    }
}

/// The service [`RequestLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct RequestService<S> {
    inner: S,
    metrics: RequestMetrics,
    service: &'static str,
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn route_of<B>(request: &http::Request<B>, grpc: bool) -> String {
    if grpc {
        return request.uri().path().to_owned();
    }
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

impl<S, B, R> tower::Service<http::Request<B>> for RequestService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let grpc = is_grpc(request.headers());
        let route = route_of(&request, grpc);
        let name = if grpc {
            route.trim_start_matches('/').to_owned()
        } else {
            format!("{} {route}", request.method())
        };
        // Set by the runtime's request-id layer in front of this one (or by the caller).
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let span = tracing::info_span!(
            "request",
            otel.name = %name,
            otel.kind = "server",
            cairn.service = self.service,
            route = %route,
            request_id = %request_id,
        );
        set_parent(
            &span,
            request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()),
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let result = future.await;
                let status = match &result {
                    Ok(response) if grpc => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_owned(),
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                metrics
                    .requests
                    .get_or_create(&vec![("route", route.clone()), ("status", status)])
                    .inc();
                metrics
                    .duration
                    .get_or_create(&vec![("route", route)])
                    .observe(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
