//! The operator console: a projection health page for operators, served by command-api itself
//! (no build toolchain at build or run time) and the JSON endpoints it calls.
//!
//! - `GET /console/projections`: a static HTML page with a small vanilla script and a stylesheet,
//!   kept as files in `crates/command-api/console/` and embedded with `include_str!`. The page
//!   asks for an admin token (kept in the tab's `sessionStorage`, sent as `Authorization: Bearer`;
//!   for automation it also accepts `#token=<token>` in the URL fragment, which never reaches the
//!   server and is removed from the address bar at once), then shows every projection of the
//!   token's instance (position, lag, status, failed events, lease owner and expiry) and the failed
//!   events with Retry and Skip buttons, refreshing itself every five seconds. Every value is
//!   rendered as text (`textContent`), never as markup, and the page runs under a strict
//!   `Content-Security-Policy`.
//! - `GET /api/v1/admin/projections/health` ([`crate::rest`]): the table's rows.
//! - `GET /api/v1/admin/projections/failed-events[?projection=&status=&limit=]`: failed events of
//!   the caller's instance, the most recently failed first.
//! - `POST /api/v1/admin/projections/failed-events/{projection}/{instance}/{position}/{offset}/retry`
//!   and `.../skip`: see [`cairn_projection::failed`] for what each does.
//!
//! - `GET /console/actions`: the actions page (same token handling, `common.js` shared with the
//!   projections page): every target of the instance with its state, health (failing since, last
//!   success and failure, last error) and deliveries waiting or given up, and the most recent
//!   failed calls (no answer or not a 2xx) with their error or the start of the answer.
//! - `GET /api/v1/admin/actions/targets` and `GET /api/v1/admin/actions/failures[?limit=]`: its
//!   rows, read from the `actions` projection's tables.
//!
//! The JSON endpoints need a token with [`Permission::AdministerInstance`] and only ever see the
//! token's instance: another instance's failed event is `404`, exactly like a missing one. Errors
//! are `application/problem+json` (missing or bad token `401`, wrong role `403`, malformed ids or
//! parameters `400`, an event the projection already passed or that was resolved `422`).

use crate::api::Api;
use crate::authn::CallerExt;
use crate::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_auth::{Caller, Permission};
use cairn_domain::Position;
use cairn_projection::failed::{self, ActionError, FailedEventKey, FailedStatus, ListFilter};
use serde::Deserialize;
use uuid::Uuid;

/// The page's path.
pub const PAGE_PATH: &str = "/console/projections";

/// The actions page's path.
pub const ACTIONS_PAGE_PATH: &str = "/console/actions";

const PAGE_HTML: &str = include_str!("../console/projections.html");
const ACTIONS_HTML: &str = include_str!("../console/actions.html");
const COMMON_JS: &str = include_str!("../console/common.js");
const SCRIPT_JS: &str = include_str!("../console/console.js");
const ACTIONS_JS: &str = include_str!("../console/actions.js");
const STYLE_CSS: &str = include_str!("../console/console.css");

/// Nothing but the page's own script, stylesheet and same-origin API calls.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Failed events listed when the caller names no limit, and the most it may ask for.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// The console's routes: the page, its assets and the failed-event endpoints.
pub fn router(api: Api) -> Router {
    Router::new()
        .route(PAGE_PATH, get(page))
        .route(ACTIONS_PAGE_PATH, get(actions_page))
        .route("/console/assets/common.js", get(common_script))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/actions.js", get(actions_script))
        .route("/api/v1/admin/actions/targets", get(list_targets))
        .route("/api/v1/admin/actions/failures", get(list_failures))
        .route("/console/assets/console.css", get(style))
        .route("/api/v1/admin/projections/failed-events", get(list_failed))
        .route(
            "/api/v1/admin/projections/failed-events/{projection}/{instance}/{position}/{offset}/retry",
            post(retry_failed),
        )
        .route(
            "/api/v1/admin/projections/failed-events/{projection}/{instance}/{position}/{offset}/skip",
            post(skip_failed),
        )
        .with_state(api)
}

fn asset(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", "no-store", PAGE_HTML)
}

async fn actions_page() -> Response {
    asset("text/html; charset=utf-8", "no-store", ACTIONS_HTML)
}

async fn common_script() -> Response {
    asset("text/javascript; charset=utf-8", "no-cache", COMMON_JS)
}

async fn actions_script() -> Response {
    asset("text/javascript; charset=utf-8", "no-cache", ACTIONS_JS)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", "no-cache", SCRIPT_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", "no-cache", STYLE_CSS)
}

async fn admin(api: &Api, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = api.auth.authenticate(header, api.exec.clock.now()).await?;
    caller.require(Permission::AdministerInstance)?;
    Ok(caller)
}

/// A projection name as stored: lower-case letters, digits and underscores.
fn parse_projection(name: &str) -> Result<String, ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ApiError::invalid(
            "projection",
            "must be a projection name (lower-case letters, digits, underscores)",
        ))
    }
}

fn respond<T: IntoResponse>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(ok) => ok.into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    projection: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

async fn list_failed(
    State(api): State<Api>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    respond(
        async {
            let caller = admin(&api, &headers).await?;
            let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
            let projection = params.projection.as_deref().map(parse_projection).transpose()?;
            let status = params
                .status
                .as_deref()
                .map(|s| {
                    s.parse::<FailedStatus>()
                        .map_err(|()| ApiError::invalid("status", "must be retrying, skipped or resolved"))
                })
                .transpose()?;
            let limit = parse_limit(params.limit.as_deref())?;
            let rows = failed::list(
                &api.exec.pool,
                &ListFilter {
                    instance: Some(caller.instance_id.as_uuid()),
                    projection,
                    status,
                    limit,
                },
            )
            .await?;
            Ok(Json(serde_json::json!({ "failed_events": rows })))
        }
        .await,
    )
}

fn parse_limit(limit: Option<&str>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// One target as the actions page shows it.
#[derive(serde::Serialize, sqlx::FromRow)]
struct TargetRow {
    id: Uuid,
    name: String,
    endpoint: String,
    kind: String,
    interrupt_on_error: bool,
    state: String,
    disabled_reason: Option<String>,
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
    last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
    /// Deliveries pending or in flight.
    waiting: i64,
    /// Deliveries given up on.
    failed: i64,
}

async fn list_targets(State(api): State<Api>, headers: HeaderMap) -> Response {
    respond(
        async {
            let caller = admin(&api, &headers).await?;
            let rows: Vec<TargetRow> = sqlx::query_as(
                "SELECT t.id, t.name, t.endpoint, t.kind, t.interrupt_on_error, t.state, t.disabled_reason, \
                        h.failing_since, h.last_success_at, h.last_failure_at, h.last_error, \
                        (SELECT count(*) FROM actions.deliveries d WHERE d.target_id = t.id AND d.state IN ('pending', 'delivering')) AS waiting, \
                        (SELECT count(*) FROM actions.deliveries d WHERE d.target_id = t.id AND d.state = 'failed') AS failed \
                 FROM actions.targets t \
                 LEFT JOIN actions.target_health h ON h.instance_id = t.instance_id AND h.target_id = t.id \
                 WHERE t.instance_id = $1 ORDER BY lower(t.name)",
            )
            .bind(caller.instance_id.as_uuid())
            .fetch_all(&api.exec.pool)
            .await
            .map_err(|e| ApiError::Unavailable(format!("listing targets: {e}")))?;
            Ok(Json(serde_json::json!({ "targets": rows })))
        }
        .await,
    )
}

/// One failed call as the actions page shows it.
#[derive(serde::Serialize, sqlx::FromRow)]
struct FailureRow {
    target_id: Uuid,
    target_name: Option<String>,
    event_id: Uuid,
    event_type: Option<String>,
    attempt: i32,
    started_at: chrono::DateTime<chrono::Utc>,
    status: Option<i32>,
    latency_ms: f64,
    error: Option<String>,
    response: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    limit: Option<String>,
}

async fn list_failures(
    State(api): State<Api>,
    headers: HeaderMap,
    params: Result<Query<LimitParams>, QueryRejection>,
) -> Response {
    respond(
        async {
            let caller = admin(&api, &headers).await?;
            let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
            let limit = parse_limit(params.limit.as_deref())?;
            let rows: Vec<FailureRow> = sqlx::query_as(
                "SELECT a.target_id, t.name AS target_name, a.event_id, d.event_type, a.attempt, a.started_at, \
                        a.status, a.latency_ms, a.error, a.response \
                 FROM actions.attempts a \
                 LEFT JOIN actions.targets t ON t.instance_id = a.instance_id AND t.id = a.target_id \
                 LEFT JOIN actions.deliveries d ON d.target_id = a.target_id AND d.event_id = a.event_id \
                 WHERE a.instance_id = $1 AND (a.status IS NULL OR a.status < 200 OR a.status > 299) \
                 ORDER BY a.started_at DESC LIMIT $2",
            )
            .bind(caller.instance_id.as_uuid())
            .bind(limit)
            .fetch_all(&api.exec.pool)
            .await
            .map_err(|e| ApiError::Unavailable(format!("listing failed calls: {e}")))?;
            Ok(Json(serde_json::json!({ "failures": rows })))
        }
        .await,
    )
}

/// The path of one failed event, parsed; an instance other than the caller's is "not found".
fn parse_key(caller: &Caller, path: (String, String, String, String)) -> Result<FailedEventKey, ApiError> {
    let (projection, instance, position, offset) = path;
    let projection = parse_projection(&projection)?;
    let instance: Uuid = instance
        .parse()
        .map_err(|_| ApiError::invalid("instance", "must be a UUID"))?;
    let position: i64 = position
        .parse()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| ApiError::invalid("position", "must be a non-negative integer"))?;
    let offset: i32 = offset
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| ApiError::invalid("offset", "must be a non-negative integer"))?;
    if instance != caller.instance_id.as_uuid() {
        return Err(ApiError::NotFound("failed event"));
    }
    Ok(FailedEventKey {
        projection,
        instance_id: instance,
        position: Position::new(position, offset),
    })
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        match error {
            ActionError::NotFound => Self::NotFound("failed event"),
            ActionError::Resolved | ActionError::Passed => Self::FailedPrecondition(error.to_string()),
            ActionError::Database(e) => e.into(),
        }
    }
}

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Skip,
}

async fn act(
    api: Api,
    headers: HeaderMap,
    path: (String, String, String, String),
    action: Action,
) -> Response {
    respond(
        async {
            let caller = admin(&api, &headers).await?;
            let key = parse_key(&caller, path)?;
            let row = match action {
                Action::Retry => failed::retry(&api.exec.pool, &key).await?,
                Action::Skip => failed::skip(&api.exec.pool, &key).await?,
            };
            tracing::info!(
                action = match action {
                    Action::Retry => "retry",
                    Action::Skip => "skip",
                },
                projection = %key.projection,
                instance = %key.instance_id,
                position = %key.position,
                principal = %caller.principal_id,
                token = %caller.token_id,
                status = %row.status,
                "operator acted on a failed event"
            );
            Ok(Json(serde_json::json!({ "failed_event": row })))
        }
        .await,
    )
}

async fn retry_failed(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String)>,
) -> Response {
    act(api, headers, path, Action::Retry).await
}

async fn skip_failed(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String)>,
) -> Response {
    act(api, headers, path, Action::Skip).await
}
