//! The HTTP middleware every service's HTTP listener runs behind, outermost first:
//! - a request id: the caller's `x-request-id`, or a new UUID, set on the request (so the request
//!   span records it, see `cairn_telemetry::layer`) and echoed on the response;
//! - a time limit per request ([`HttpSettings::request_timeout`], `408` when exceeded);
//! - a body size limit ([`HttpSettings::body_limit`], `413`); services with a stricter limit of
//!   their own (SCIM) keep answering in their protocol's form below it;
//! - gzip compression of responses for clients that accept it;
//! - CORS for the origins in [`HttpSettings::cors_origins`] only (none by default: a browser page
//!   of another origin gets no access, and same-origin pages such as the operator console need
//!   none). Allowed: `GET` and `POST` with `authorization`, `content-type` and `idempotency-key`.
//!
//! gRPC servers get the request id only ([`grpc_request_id`]): tonic has its own timeouts and
//! compression.

use axum::Router;
use http::{HeaderName, HeaderValue, Method, header};
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
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
    /// Browser origins (`https://app.example.com`) allowed to call across origins; empty: none.
    pub cors_origins: Vec<HeaderValue>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            body_limit: 16 * 1024 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// `router` behind the middleware of the [module documentation](self).
pub fn layered(router: Router, settings: &HttpSettings) -> Router {
    let router = router
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ));
    // Outside the limits, so a preflight is answered without touching the routes.
    let router = if settings.cors_origins.is_empty() {
        router
    } else {
        router.layer(cors(&settings.cors_origins))
    };
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

/// Parses a list of browser origins (`scheme://host[:port]`, no path), as an operator writes them
/// in a setting; the error names the offending entry.
pub fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, String> {
    origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let (scheme, rest) = origin
                .split_once("://")
                .ok_or_else(|| format!("{origin:?} is not an origin (scheme://host[:port])"))?;
            if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
                return Err(format!("{origin:?} is not an origin (scheme://host[:port])"));
            }
            HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not a valid header value"))
        })
        .collect()
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
        app_with(Vec::new())
    }

    fn app_with(cors_origins: Vec<HeaderValue>) -> Router {
        let router = Router::new().route("/echo", post(|body: String| async move { body }));
        layered(
            router,
            &HttpSettings {
                request_timeout: Duration::from_secs(5),
                body_limit: 16,
                cors_origins,
            },
        )
    }

    fn preflight(origin: &str) -> http::Request<Body> {
        http::Request::builder()
            .method("OPTIONS")
            .uri("/echo")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, idempotency-key")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_configured_origin_may_call_across_origins() {
        let origins = parse_origins(&["https://app.example.com".to_owned()]).unwrap();
        let response = app_with(origins.clone())
            .oneshot(preflight("https://app.example.com"))
            .await
            .unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        let allowed = response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(allowed.contains("idempotency-key"), "{allowed}");

        let response = app_with(origins)
            .oneshot(preflight("https://evil.example"))
            .await
            .unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none());

        // No origins configured: no cross-origin access at all.
        let response = app().oneshot(preflight("https://app.example.com")).await.unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none());
    }

    #[test]
    fn an_origin_setting_is_checked_entry_by_entry() {
        let parsed = parse_origins(&[
            "https://a.example".into(),
            " http://b.example:8080 ".into(),
            "".into(),
        ])
        .unwrap();
        assert_eq!(parsed, ["https://a.example", "http://b.example:8080"]);
        for bad in [
            "a.example",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
        ] {
            let error = parse_origins(&[bad.to_owned()]).expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
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
