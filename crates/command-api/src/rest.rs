//! The REST endpoints (axum, same process): email verification and projection health, with the
//! same bearer tokens; every error is `application/problem+json`.

use crate::api::Api;
use crate::authn::CallerExt;
use crate::error::ApiError;
use crate::users::{may_vouch, resend, verify};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_auth::{Caller, Permission};
use cairn_domain::{Aggregate, AggregateId};
use serde::Deserialize;

/// The largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The REST routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v1/users/{id}/email/verify", post(verify_email))
        .route("/api/v1/users/{id}/email/resend-code", post(resend_code))
        .route("/api/v1/admin/projections/health", get(projection_health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(api.auth.authenticate(header, api.exec.clock.now()).await?)
}

fn parse_id(id: &str) -> Result<AggregateId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("user"))
}

fn json<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &Bytes,
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    if body.is_empty() && allow_empty {
        return Ok(None);
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::invalid("content-type", "must be application/json"));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    code: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResendBody {
    #[serde(default)]
    return_code: bool,
    #[serde(default)]
    url_template: Option<String>,
}

async fn verify_email(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = caller(&api, &headers).await?;
        caller.require(Permission::ManageUsers)?;
        let body: VerifyBody =
            json(&headers, &body, false)?.ok_or_else(|| ApiError::invalid("code", "is required"))?;
        let (written, _) = verify(&api, &caller, parse_id(&id)?, &body.code).await?;
        Ok::<_, ApiError>(Json(serde_json::json!({
            "userId": id,
            "verified": true,
            "position": written.position().map(|p| p.to_string()),
            "sequence": written.state.sequence(),
        })))
    }
    .await;
    match result {
        Ok(ok) => ok.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn resend_code(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = caller(&api, &headers).await?;
        caller.require(Permission::ManageUsers)?;
        let body: ResendBody = json(&headers, &body, true)?.unwrap_or_default();
        if body.return_code && !may_vouch(&api, &caller) {
            return Err(ApiError::PermissionDenied(
                "only privileged callers may receive codes",
            ));
        }
        let (written, _, code) =
            resend(&api, &caller, parse_id(&id)?, body.url_template, body.return_code).await?;
        let mut response = serde_json::json!({
            "userId": id,
            "position": written.position().map(|p| p.to_string()),
            "sequence": written.state.sequence(),
        });
        if body.return_code {
            response["code"] = serde_json::Value::String(code.to_string());
        }
        Ok(Json(response))
    }
    .await;
    match result {
        Ok(ok) => ok.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn projection_health(State(api): State<Api>, headers: HeaderMap) -> Response {
    let result = async {
        let caller = caller(&api, &headers).await?;
        caller.require(Permission::AdministerInstance)?;
        let rows =
            cairn_projection::health::report(&api.exec.pool, Some(caller.instance_id.as_uuid())).await?;
        Ok::<_, ApiError>(Json(serde_json::json!({ "projections": rows })))
    }
    .await;
    match result {
        Ok(ok) => ok.into_response(),
        Err(error) => error.into_response(),
    }
}
