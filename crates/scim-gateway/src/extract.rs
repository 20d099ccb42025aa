//! What a SCIM handler takes from its request, as axum extractors: each one is checked once, here,
//! and refused in SCIM's own error form ([`Reject`]). A handler's arguments say what it needs —
//! `Reader` or `Writer` (the authenticated caller with the permission to read or to write),
//! [`Selection`] (`attributes`, `excludedAttributes`, filter and paging), [`UserId`] / [`GroupId`],
//! [`IfMatch`] / [`IfNoneMatch`], and [`ScimJson`] (the body) — and axum runs them in that order,
//! so a request without a valid token is `401` before anything else is looked at.
//!
//! The extractors are plain values, so `POST /Bulk` calls the same handlers with values it built
//! for each of its operations.

use crate::gateway::{Gateway, error_response, header_version};
use crate::query::ListParams;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{HeaderMap, header, request::Parts};
use axum::response::{IntoResponse, Response};
use cairn_auth::{Caller, Permission};
use cairn_scim::ScimError;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// A refused request: rendered as SCIM error JSON with its status (and `WWW-Authenticate` on
/// `401`).
#[derive(Debug)]
pub struct Reject(pub ScimError);

impl From<ScimError> for Reject {
    fn from(error: ScimError) -> Self {
        Self(error)
    }
}

impl From<cairn_error::Error> for Reject {
    fn from(error: cairn_error::Error) -> Self {
        Self(error.to_scim(false))
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// What every SCIM handler returns.
pub type Answer = Result<Response, Reject>;

/// The metadata a write forwards to command-api: the caller's `authorization`, and the client's
/// `idempotency-key`, `traceparent` and `tracestate` when it sent them.
#[derive(Clone, Debug, Default)]
pub struct Forward {
    /// `(metadata name, value)` pairs.
    pub(crate) metadata: Vec<(&'static str, String)>,
}

impl Forward {
    const PASSED_ON: [&'static str; 3] = ["idempotency-key", "traceparent", "tracestate"];

    fn of(headers: &HeaderMap) -> Self {
        let mut metadata = Vec::new();
        for name in std::iter::once("authorization").chain(Self::PASSED_ON) {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                metadata.push((name, value.to_owned()));
            }
        }
        Self { metadata }
    }
}

async fn authenticate(parts: &Parts, gw: &Gateway, permission: Permission) -> Result<Caller, Reject> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = gw
        .auth
        .authenticate(header, gw.clock.now())
        .await
        .map_err(cairn_error::Error::from)?;
    caller.authorize(permission).map_err(cairn_error::Error::from)?;
    Ok(caller)
}

/// A caller allowed to read.
#[derive(Clone, Debug)]
pub struct Reader(pub Caller);

impl FromRequestParts<Gateway> for Reader {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Reject> {
        Ok(Self(authenticate(parts, gw, Permission::Read).await?))
    }
}

/// A caller allowed to provision users and groups, with what its writes forward to command-api.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The caller.
    pub caller: Caller,
    /// The request metadata passed on.
    pub forward: Forward,
}

impl Writer {
    /// The writer for the `number`th operation of a Bulk request: the client's idempotency key,
    /// if any, becomes `<key>/<number>`, so each operation is deduplicated on its own.
    pub fn for_operation(&self, number: usize) -> Self {
        let mut writer = self.clone();
        for (name, value) in &mut writer.forward.metadata {
            if *name == "idempotency-key" {
                *value = format!("{value}/{number}");
            }
        }
        writer
    }
}

impl FromRequestParts<Gateway> for Writer {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Reject> {
        let caller = authenticate(parts, gw, Permission::ManageUsers).await?;
        Ok(Self {
            caller,
            forward: Forward::of(&parts.headers),
        })
    }
}

/// The list, filter and attribute parameters of the query string.
#[derive(Clone, Debug)]
pub struct Selection(pub ListParams);

impl Selection {
    /// No parameters: every attribute, the first page.
    pub fn all() -> Self {
        Self(ListParams::none())
    }
}

impl FromRequestParts<Gateway> for Selection {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Reject> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, gw)
            .await
            .map_err(|e| ScimError::invalid_value(format!("the query string is malformed: {e}")))?;
        Ok(Self(ListParams::parse(|name| params.get(name).cloned())?))
    }
}

async fn path_id(parts: &mut Parts, gw: &Gateway, resource: &str) -> Result<Uuid, Reject> {
    let Path(id) = Path::<String>::from_request_parts(parts, gw)
        .await
        .map_err(|_| ScimError::not_found(format!("no such {resource}")))?;
    // An id this server never issued names no resource: 404, like an unknown one.
    id.parse()
        .map_err(|_| Reject(ScimError::not_found(format!("{resource} {id} not found"))))
}

/// The `{id}` of `/Users/{id}`.
#[derive(Clone, Copy, Debug)]
pub struct UserId(pub Uuid);

impl FromRequestParts<Gateway> for UserId {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Reject> {
        Ok(Self(path_id(parts, gw, "User").await?))
    }
}

/// The `{id}` of `/Groups/{id}`.
#[derive(Clone, Copy, Debug)]
pub struct GroupId(pub Uuid);

impl FromRequestParts<Gateway> for GroupId {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Reject> {
        Ok(Self(path_id(parts, gw, "Group").await?))
    }
}

/// The version `If-Match` names: the write must be based on it. `*` and no header: any version.
#[derive(Clone, Copy, Debug, Default)]
pub struct IfMatch(pub Option<i64>);

impl FromRequestParts<Gateway> for IfMatch {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, _: &Gateway) -> Result<Self, Reject> {
        Ok(Self(header_version(&parts.headers, header::IF_MATCH)?.flatten()))
    }
}

/// `If-None-Match`: none, `*` (`Some(None)`) or a version.
#[derive(Clone, Copy, Debug)]
pub struct IfNoneMatch(pub Option<Option<i64>>);

impl FromRequestParts<Gateway> for IfNoneMatch {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, _: &Gateway) -> Result<Self, Reject> {
        Ok(Self(header_version(&parts.headers, header::IF_NONE_MATCH)?))
    }
}

/// A request body: a JSON object within the gateway's size limit, as `application/scim+json` or
/// `application/json`.
#[derive(Clone, Debug)]
pub struct ScimJson(pub Value);

impl FromRequest<Gateway> for ScimJson {
    type Rejection = Reject;

    async fn from_request(request: Request, gw: &Gateway) -> Result<Self, Reject> {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/scim+json" && media != "application/json" {
            return Err(cairn_error::Error::new(
                cairn_error::Code::UnsupportedMediaType,
                "the body must be application/scim+json or application/json",
            )
            .into());
        }
        let limit = gw.limits.max_payload_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ScimError::payload_too_large(format!("the body exceeds {limit} bytes")))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ScimError::invalid_syntax(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(ScimError::invalid_syntax("the body must be a JSON object").into());
        }
        Ok(Self(value))
    }
}
