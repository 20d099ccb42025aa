//! What every handler shares: authentication (the bearer token, resolved by `cairn-auth` like
//! command-api does, and forwarded to it on writes), read-after-write (every read waits until the
//! read models reached the tenant's latest committed position), the gRPC clients, SCIM errors and
//! responses.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_auth::{AuthError, Authenticator, Caller, Permission};
use cairn_domain::{Clock, SystemClock};
use cairn_eventstore::PgEventStore;
use cairn_proto::group::v1::group_service_client::GroupServiceClient;
use cairn_proto::user::v1::user_service_client::UserServiceClient;
use cairn_readmodel::{PositionWaiter, Scope};
use cairn_scim::ScimError;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// The media type of every SCIM response.
pub const SCIM_JSON: &str = "application/scim+json";

/// Limits and settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The gateway's public base URL, e.g. `https://id.example.com/scim/v2`.
    pub base_url: String,
    /// Largest page of a list.
    pub max_results: u32,
    /// Most operations in one Bulk request.
    pub bulk_max_operations: usize,
    /// Largest request body in bytes.
    pub max_payload_bytes: usize,
    /// How long a read waits for the read models.
    pub wait_timeout: Duration,
}

/// The gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    /// PostgreSQL (read models, tokens).
    pub pool: PgPool,
    /// The event store (latest committed position per tenant).
    pub store: PgEventStore,
    /// Read-your-writes.
    pub waiter: PositionWaiter,
    /// Token resolution.
    pub auth: Authenticator,
    /// command-api's user service.
    pub users: UserServiceClient<Channel>,
    /// command-api's group service.
    pub groups: GroupServiceClient<Channel>,
    /// Limits.
    pub limits: Arc<Limits>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Gateway {
    /// A gateway over its parts.
    pub fn new(
        pool: PgPool,
        channel: Channel,
        limits: Limits,
        waiter: PositionWaiter,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            store: PgEventStore::new(pool.clone()),
            auth: Authenticator::cached(pool.clone(), shutdown),
            users: UserServiceClient::new(channel.clone()),
            groups: GroupServiceClient::new(channel),
            limits: Arc::new(limits),
            clock: Arc::new(SystemClock),
            waiter,
            pool,
        }
    }

    /// The authenticated caller with `permission`, and the raw `authorization` value to forward.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        permission: Permission,
    ) -> Result<(Caller, String), ScimError> {
        let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let caller = self
            .auth
            .authenticate(header, self.clock.now())
            .await
            .map_err(|e| match e {
                AuthError::Unauthenticated(reason) => ScimError::unauthorized(reason),
                other => {
                    tracing::warn!(error = ?other, "resolving a SCIM token failed");
                    ScimError::new(503, None, other.to_string())
                }
            })?;
        if !caller.allows(permission) {
            return Err(ScimError::forbidden(
                "the token's roles do not allow this request",
            ));
        }
        Ok((caller, header.unwrap_or_default().to_owned()))
    }

    /// Waits until the users and groups read models reflect everything the tenant committed so
    /// far: a client that reads after its write's response sees that write.
    pub async fn consistent(&self, caller: &Caller) -> Result<(), ScimError> {
        let latest = self
            .store
            .latest_committed(caller.instance_id)
            .await
            .map_err(|e| ScimError::new(503, None, e.to_string()))?;
        self.waiter
            .wait_for_position(
                &["users", "groups"],
                caller.instance_id,
                latest,
                self.limits.wait_timeout,
            )
            .await
            .map_err(|e| ScimError::new(503, None, format!("the read models are behind: {e}")))
    }

    /// A gRPC request carrying the caller's token, the client's idempotency key and the trace
    /// context: this request's own span when traces are exported (so command-api's span is its
    /// child), else the client's `traceparent` passed on unchanged.
    pub fn forward<T>(&self, authorization: &str, headers: &HeaderMap, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = authorization.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(value) = cairn_telemetry::propagation::traceparent().and_then(|v| v.parse().ok()) {
            request
                .metadata_mut()
                .insert(cairn_telemetry::propagation::TRACEPARENT, value);
        }
        for name in ["idempotency-key", "traceparent", "tracestate"] {
            if request.metadata().contains_key(name) {
                continue;
            }
            if let Some(value) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }

    /// The location of a resource.
    pub fn location(&self, endpoint: &str, id: &str) -> String {
        format!("{}/{endpoint}/{id}", self.limits.base_url.trim_end_matches('/'))
    }
}

/// The read scope of a caller, in the query crate's terms.
pub trait ReadScope {
    /// Where the caller's reads may look: its instance, and its organisation if it is bound to one.
    fn scope(&self) -> Scope;
}

impl ReadScope for Caller {
    fn scope(&self) -> Scope {
        Scope {
            instance_id: self.instance_id.as_uuid(),
            org_id: self.org_id.map(|o| o.as_uuid()),
        }
    }
}

/// Maps a command-api status to a SCIM error. `pinned` says whether the client sent `If-Match`
/// (a stale version is then 412, otherwise 409).
pub fn from_status(status: tonic::Status, pinned: bool) -> ScimError {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => ScimError::invalid_value(message),
        Code::AlreadyExists => ScimError::uniqueness(message),
        Code::NotFound => ScimError::not_found(message),
        Code::Aborted if pinned => ScimError::precondition_failed(message),
        Code::Aborted => ScimError::new(409, None, message),
        Code::FailedPrecondition => ScimError::new(409, None, message),
        Code::PermissionDenied => ScimError::forbidden(message),
        Code::Unauthenticated => ScimError::unauthorized(message),
        _ => {
            tracing::warn!(code = ?status.code(), %message, "command-api call failed");
            ScimError::new(503, None, "the service is unavailable; retry later")
        }
    }
}

/// A SCIM JSON response.
pub fn scim_response(
    status: StatusCode,
    body: &serde_json::Value,
    etag: Option<&str>,
    location: Option<&str>,
) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// A SCIM error response.
pub fn error_response(error: &ScimError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = scim_response(status, &error.to_json(), None, None);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// `W/"<version>"`.
pub fn etag(sequence: i64) -> String {
    format!("W/\"{sequence}\"")
}

/// The version an `If-Match` / `If-None-Match` header names, if any; `*` is `Some(None)`.
pub fn header_version(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> Result<Option<Option<i64>>, ScimError> {
    let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let value = value.trim();
    if value == "*" {
        return Ok(Some(None));
    }
    let digits = value.trim_start_matches("W/").trim_matches('"');
    digits
        .parse::<i64>()
        .map(|v| Some(Some(v)))
        .map_err(|_| ScimError::invalid_value(format!("{value:?} is not a version this server issued")))
}
