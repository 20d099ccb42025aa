//! `POST /Bulk` (RFC 7644 §3.7): operations run in order through the same handlers as single
//! requests; `bulkId:<id>` references (also inside group members) are replaced by the ids that
//! earlier operations created; `failOnErrors` stops after that many errors; more operations or a
//! larger body than the ServiceProviderConfig announces is `413`. An `Idempotency-Key` on the
//! request covers each operation under a key of its own (`<key>/<n>`, `n` its 1-based place), so a
//! retried Bulk request replays every operation instead of refusing the key as reused.

use crate::extract::{Answer, GroupId, IfMatch, ScimJson, Selection, UserId, Writer};
use crate::gateway::{Gateway, parse_version, scim_response};
use crate::{groups, users};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_scim::ScimError;
use serde_json::{Value, json};
use std::collections::HashMap;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

fn substitute(value: &mut Value, ids: &HashMap<String, String>) -> Result<(), ScimError> {
    match value {
        Value::String(s) if s.contains("bulkId:") => {
            // Longest ids first, so `bulkId:u10` is not taken for `bulkId:u1`.
            let mut known: Vec<(&String, &String)> = ids.iter().collect();
            known.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
            for (reference, id) in known {
                *s = s.replace(&format!("bulkId:{reference}"), id);
            }
            if let Some(rest) = s.split("bulkId:").nth(1) {
                let reference: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                return Err(ScimError::invalid_value(format!(
                    "bulkId {reference:?} does not refer to an earlier operation"
                )));
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| substitute(v, ids))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| substitute(v, ids))?,
        _ => {}
    }
    Ok(())
}

/// `POST /Bulk`.
pub async fn bulk(State(gw): State<Gateway>, writer: Writer, ScimJson(request): ScimJson) -> Answer {
    let schemas = request
        .get("schemas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !schemas.iter().any(|s| s.as_str() == Some(BULK_REQUEST)) {
        return Err(ScimError::invalid_syntax(format!("schemas must contain {BULK_REQUEST}")).into());
    }
    let operations = request
        .get("Operations")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be an array"))?;
    if operations.len() > gw.limits.bulk_max_operations {
        return Err(ScimError::payload_too_large(format!(
            "at most {} operations per request",
            gw.limits.bulk_max_operations
        ))
        .into());
    }
    let fail_on_errors = request.get("failOnErrors").and_then(Value::as_u64).unwrap_or(0);
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut results = Vec::new();
    let mut errors = 0_u64;
    for (index, operation) in operations.into_iter().enumerate() {
        if fail_on_errors > 0 && errors >= fail_on_errors {
            break;
        }
        // Each operation is its own command: under the request's idempotency key, its own key.
        let writer = writer.for_operation(index + 1);
        let outcome = run_one(&gw, &writer, &operation, &mut ids).await;
        let (status, response_body, location, version) = match outcome {
            Ok(done) => done,
            Err(e) => (e.status, Some(e.to_json()), None, None),
        };
        if status >= 400 {
            errors += 1;
        }
        let mut entry = json!({
            "method": operation.get("method").cloned().unwrap_or(Value::Null),
            "status": status.to_string(),
        });
        if let Some(bulk_id) = operation.get("bulkId") {
            entry["bulkId"] = bulk_id.clone();
        }
        if let Some(location) = location {
            entry["location"] = json!(location);
        }
        if let Some(version) = version {
            entry["version"] = json!(version);
        }
        if status >= 400
            && let Some(body) = response_body
        {
            entry["response"] = body;
        }
        results.push(entry);
    }
    Ok(scim_response(
        StatusCode::OK,
        &json!({"schemas": [BULK_RESPONSE], "Operations": results}),
        None,
        None,
    ))
}

type Outcome = (u16, Option<Value>, Option<String>, Option<String>);

async fn run_one(
    gw: &Gateway,
    writer: &Writer,
    operation: &Value,
    ids: &mut HashMap<String, String>,
) -> Result<Outcome, ScimError> {
    let method = operation
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let mut path = operation
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(reference) = path
        .split('/')
        .nth(2)
        .and_then(|segment| segment.strip_prefix("bulkId:"))
    {
        let id = ids
            .get(reference)
            .ok_or_else(|| ScimError::invalid_value(format!("bulkId {reference:?} is unknown")))?;
        path = format!("/{}/{id}", path.split('/').nth(1).unwrap_or_default());
    }
    let mut data = operation.get("data").cloned().unwrap_or(Value::Null);
    substitute(&mut data, ids)?;
    let pinned = match operation.get("version").and_then(Value::as_str) {
        Some(version) => parse_version(version)?,
        None => None,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let writes_body = matches!(method.as_str(), "POST" | "PUT" | "PATCH");
    if writes_body && !data.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    let state = || State(gw.clone());
    let writer = || writer.clone();
    let all = Selection::all;
    let body = || ScimJson(data.clone());
    let id = |resource: &str, id: &str| {
        id.parse::<uuid::Uuid>()
            .map_err(|_| ScimError::not_found(format!("{resource} {id} not found")))
    };
    let answer: Answer = match (method.as_str(), segments.as_slice()) {
        ("POST", ["Users"]) => users::create(state(), writer(), all(), body()).await,
        ("POST", ["Groups"]) => groups::create(state(), writer(), all(), body()).await,
        ("PUT", ["Users", raw]) => {
            let id = UserId(id("User", raw)?);
            users::replace(state(), writer(), all(), id, IfMatch(pinned), body()).await
        }
        ("PUT", ["Groups", raw]) => {
            let id = GroupId(id("Group", raw)?);
            groups::replace(state(), writer(), all(), id, IfMatch(pinned), body()).await
        }
        ("PATCH", ["Users", raw]) => {
            let id = UserId(id("User", raw)?);
            users::patch(state(), writer(), all(), id, IfMatch(pinned), body()).await
        }
        ("PATCH", ["Groups", raw]) => {
            let id = GroupId(id("Group", raw)?);
            groups::patch(state(), writer(), all(), id, IfMatch(pinned), body()).await
        }
        ("DELETE", ["Users", raw]) => {
            users::delete(state(), writer(), UserId(id("User", raw)?), IfMatch(pinned)).await
        }
        ("DELETE", ["Groups", raw]) => {
            groups::delete(state(), writer(), GroupId(id("Group", raw)?), IfMatch(pinned)).await
        }
        _ => {
            return Err(ScimError::invalid_value(format!(
                "{method} {path} is not a bulk operation Cairn supports"
            )));
        }
    };
    let response = answer.into_response();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let location = body
        .as_ref()
        .and_then(|b| b["meta"]["location"].as_str())
        .map(str::to_owned);
    let version = body
        .as_ref()
        .and_then(|b| b["meta"]["version"].as_str())
        .map(str::to_owned);
    if method == "POST"
        && status == 201
        && let (Some(bulk_id), Some(id)) = (
            operation.get("bulkId").and_then(Value::as_str),
            body.as_ref().and_then(|b| b["id"].as_str()),
        )
    {
        ids.insert(bulk_id.to_owned(), id.to_owned());
    }
    Ok((status, body, location, version))
}
