//! What every handler shares: the gateway's state (the token resolver, the position waiter, the
//! gRPC clients to command-api), read-after-write (every read waits until the read models reached
//! the tenant's latest committed position, every write's answer until they reached the write's
//! own), the metadata forwarded with a write, and SCIM responses. Errors are `cairn-error`'s,
//! rendered in SCIM's form.

use crate::extract::Forward;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_auth::{Authenticator, Caller};
use cairn_domain::{Clock, Position};
use cairn_eventstore::PgEventStore;
use cairn_proto::group::v1::group_service_client::GroupServiceClient;
use cairn_proto::user::v1::user_service_client::UserServiceClient;
use cairn_readmodel::{PositionWaiter, SCIM_PROJECTIONS, Scope};
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
    pub fn new(parts: Parts, limits: Limits) -> Self {
        Self {
            store: PgEventStore::new(parts.pool.clone()),
            users: UserServiceClient::new(parts.channel.clone()),
            groups: GroupServiceClient::new(parts.channel),
            limits: Arc::new(limits),
            auth: parts.auth,
            waiter: parts.waiter,
            clock: parts.clock,
            pool: parts.pool,
        }
    }

    /// Waits until the users and groups read models reflect everything the tenant committed so
    /// far: a client that reads after its write's response sees that write.
    pub async fn consistent(&self, caller: &Caller) -> Result<(), ScimError> {
        let latest = self
            .store
            .latest_committed(caller.instance_id)
            .await
            .map_err(|e| cairn_error::Error::unavailable(e).to_scim(false))?;
        self.wait_for(caller, latest).await
    }

    /// Waits until the SCIM read models reflect `position` for the caller's tenant (a write's
    /// consistency token), or fails with `503` after the wait timeout: never answers from a read
    /// model that is behind the client's own write.
    pub async fn wait_for(&self, caller: &Caller, position: Position) -> Result<(), ScimError> {
        self.waiter
            .wait_for_position(
                SCIM_PROJECTIONS,
                caller.instance_id,
                position,
                self.limits.wait_timeout,
            )
            .await
            .map_err(|e| {
                cairn_error::Error::new(
                    cairn_error::Code::DeadlineExceeded,
                    format!("the read models are behind: {e}"),
                )
                .to_scim(false)
            })
    }

    /// A gRPC request carrying the caller's token, the client's idempotency key and the trace
    /// context: this request's own span when traces are exported (so command-api's span is its
    /// child), else the client's `traceparent` passed on unchanged.
    pub fn forward<T>(&self, forward: &Forward, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = cairn_telemetry::propagation::traceparent().and_then(|v| v.parse().ok()) {
            request
                .metadata_mut()
                .insert(cairn_telemetry::propagation::TRACEPARENT, value);
        }
        for (name, value) in &forward.metadata {
            if request.metadata().contains_key(*name) {
                continue;
            }
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert(*name, value);
            }
        }
        request
    }

    /// The location of a resource.
    pub fn location(&self, endpoint: &str, id: &str) -> String {
        format!("{}/{endpoint}/{id}", self.limits.base_url.trim_end_matches('/'))
    }
}

/// What a [`Gateway`] is built from besides its limits.
pub struct Parts {
    /// PostgreSQL (read models, tokens, the latest committed position).
    pub pool: PgPool,
    /// command-api.
    pub channel: Channel,
    /// Read-your-writes (its listener runs as a task of the service).
    pub waiter: PositionWaiter,
    /// Token resolution (its revocation listener runs as a task of the service).
    pub auth: Authenticator,
    /// The clock (token expiry).
    pub clock: Arc<dyn Clock>,
}

/// The consistency token of a write command-api answered: parsed once, here. A missing or
/// malformed one is command-api breaking its contract, so the write is answered as an internal
/// error rather than read back from a read model that may not hold it yet.
pub fn written_at(details: Option<cairn_proto::common::v1::Details>) -> Result<Position, ScimError> {
    let text = details.map(|d| d.position).unwrap_or_default();
    text.parse::<Position>().map_err(|_| {
        cairn_error::Error::internal(format!("command-api answered a write with position {text:?}"))
            .to_scim(false)
    })
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

/// A command-api status as a SCIM error (through `cairn-error`, which reads its reason and field
/// violations back). `pinned` says whether the client sent `If-Match` (a stale version is then
/// 412, otherwise 409).
pub fn from_status(status: tonic::Status, pinned: bool) -> ScimError {
    cairn_error::Error::from_status(&status).to_scim(pinned)
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
    parse_version(value).map(Some)
}

/// A version as an ETag names it (`W/"3"`, `"3"`), also in a Bulk operation's `version`; `*`
/// is any version (`None`).
pub fn parse_version(value: &str) -> Result<Option<i64>, ScimError> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ScimError::invalid_value(format!("{value:?} is not a version this server issued")))
}

/// A resource with the request's attribute selection and its ETag (and `Location` when created).
pub fn resource_response(
    status: StatusCode,
    rt: cairn_scim::ResourceType,
    resource: &serde_json::Value,
    params: &crate::query::ListParams,
) -> Response {
    let version = resource["meta"]["version"].as_str();
    let location = resource["meta"]["location"]
        .as_str()
        .filter(|_| status == StatusCode::CREATED);
    let body = cairn_scim::project(rt, resource, &params.attributes, &params.excluded);
    scim_response(status, &body, version, location)
}

/// `304 Not Modified` with the resource's ETag, when `If-None-Match` names its current version
/// (or `*`); `None` when the resource is to be sent.
pub fn not_modified(wanted: Option<Option<i64>>, resource: &serde_json::Value) -> Option<Response> {
    let current = resource["meta"]["version"].as_str();
    let matches = match wanted? {
        None => true,
        Some(version) => current == Some(etag(version).as_str()),
    };
    if !matches {
        return None;
    }
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(v) = current.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Some(response)
}

/// `204 No Content`.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::common::v1::Details;

    fn details(position: &str) -> Option<Details> {
        Some(Details {
            position: position.to_owned(),
            ..Default::default()
        })
    }

    #[test]
    fn a_writes_position_is_parsed_once_and_a_malformed_one_is_an_error_not_a_skipped_wait() {
        assert_eq!(written_at(details("812.3")).ok(), Some(Position::new(812, 3)));
        for broken in [details(""), details("12.x"), details("-4.0"), None] {
            let error = written_at(broken.clone()).expect_err("no position to wait for");
            assert_eq!(error.status, 500, "{broken:?}");
        }
    }

    #[test]
    fn versions_are_read_from_etags_and_anything_else_is_invalid() {
        assert_eq!(parse_version("W/\"7\"").ok(), Some(Some(7)));
        assert_eq!(parse_version("\"7\"").ok(), Some(Some(7)));
        assert_eq!(parse_version("*").ok(), Some(None));
        let error = parse_version("W/\"seven\"").expect_err("not a version");
        assert_eq!(error.status, 400);
        assert_eq!(error.scim_type, Some(cairn_scim::ScimType::InvalidValue));
    }
}
