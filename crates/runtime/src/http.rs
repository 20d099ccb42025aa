//! The HTTP middleware every service's HTTP listener runs behind, outermost first:
//! - a request id: the caller's `x-request-id`, or a new UUID, set on the request (so the request
//!   span records it, see `cairn_telemetry::layer`) and echoed on the response;
//! - a time limit per request ([`HttpSettings::request_timeout`], `408` when exceeded);
//! - a body size limit ([`HttpSettings::body_limit`], `413`); services with a stricter limit of
//!   their own (SCIM) keep answering in their protocol's form below it;
//! - gzip compression of responses for clients that accept it.
//!
//! gRPC servers get the request id only ([`grpc_request_id`]): tonic has its own timeouts and
//! compression.

use axum::Router;
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

/// Settings of the HTTP middleware.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Longest time from request to response head.
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            body_limit: 16 * 1024 * 1024,
        }
    }
}

/// `router` behind the middleware of the [module documentation](self).
pub fn layered(router: Router, settings: &HttpSettings) -> Router {
    router
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The request-id layers for a tonic server: `Server::builder().layer(grpc_request_id())`.
pub fn grpc_request_id()
-> tower::layer::util::Stack<PropagateRequestIdLayer, SetRequestIdLayer<MakeRequestUuid>> {
    tower::layer::util::Stack::new(
        PropagateRequestIdLayer::x_request_id(),
        SetRequestIdLayer::x_request_id(MakeRequestUuid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        let router = Router::new().route("/echo", post(|body: String| async move { body }));
        layered(
            router,
            &HttpSettings {
                request_timeout: Duration::from_secs(5),
                body_limit: 16,
            },
        )
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_a_callers_id_is_kept() {
        let request = http::Request::post("/echo").body(Body::from("hi")).unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a UUID: {id}");

        let request = http::Request::post("/echo")
            .header("x-request-id", "caller-42")
            .body(Body::from("hi"))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "caller-42");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413() {
        let request = http::Request::post("/echo")
            .body(Body::from("x".repeat(17)))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 413);
    }
}
