//! The SCIM endpoints for Users and Groups (RFC 7644 §3): create, read, list, search, replace,
//! patch, delete, with ETags, and the discovery endpoints.

use crate::conflict::{self, Sent};
use crate::gateway::{Gateway, error_response, etag, from_status, header_version, scim_response};
use crate::group_change::GroupChange;
use crate::query::{self, ListParams};
use crate::resources::{get, member_ids, text_of, user_input};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_auth::{Caller, Permission};
use cairn_domain::Position;
use cairn_proto::group::v1 as gpb;
use cairn_proto::user::v1 as upb;
use cairn_scim::{ResourceType, ScimError};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

type Params = Query<HashMap<String, String>>;

/// Reads a request body: a JSON object within the size limit, as `application/scim+json` or
/// `application/json`.
pub async fn body_json(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Value, ScimError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/scim+json" && media != "application/json" {
        return Err(ScimError::new(
            415,
            None,
            "the body must be application/scim+json or application/json",
        ));
    }
    let bytes: Bytes = axum::body::to_bytes(body, gw.limits.max_payload_bytes)
        .await
        .map_err(|_| {
            ScimError::payload_too_large(format!("the body exceeds {} bytes", gw.limits.max_payload_bytes))
        })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    Ok(value)
}

fn parse_id(id: &str, rt: &str) -> Result<Uuid, ScimError> {
    id.parse()
        .map_err(|_| ScimError::not_found(format!("{rt} {id} not found")))
}

fn projection(params: &HashMap<String, String>) -> Result<ListParams, ScimError> {
    ListParams::parse(|name| params.get(name).cloned())
}

fn respond(result: Result<Response, ScimError>) -> Response {
    result.unwrap_or_else(|e| error_response(&e))
}

/// Renders a resource with the request's attribute selection and its ETag.
fn resource_response(
    status: StatusCode,
    rt: ResourceType,
    resource: &Value,
    params: &ListParams,
) -> Response {
    let version = resource["meta"]["version"].as_str().map(str::to_owned);
    let location = resource["meta"]["location"].as_str().map(str::to_owned);
    let body = cairn_scim::project(rt, resource, &params.attributes, &params.excluded);
    scim_response(
        status,
        &body,
        version.as_deref(),
        if status == StatusCode::CREATED {
            location.as_deref()
        } else {
            None
        },
    )
}

async fn wait_for(gw: &Gateway, caller: &Caller, position: &str) -> Result<(), ScimError> {
    if let Ok(position) = position.parse::<Position>() {
        gw.waiter
            .wait_for_position(
                cairn_readmodel::SCIM_PROJECTIONS,
                caller.instance_id,
                position,
                gw.limits.wait_timeout,
            )
            .await
            .map_err(|e| ScimError::new(503, None, format!("the read models are behind: {e}")))?;
    }
    Ok(())
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ScimError> {
    Ok(header_version(headers, header::IF_MATCH)?.flatten())
}

// ----- Users -----------------------------------------------------------------------------------

/// `POST /Users`.
pub async fn create_user(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let input = user_input(&body_json(&gw, &headers, body).await?, true)?;
            let request = upb::AddHumanUserRequest {
                user_name: input.user_name,
                profile: Some(input.profile),
                password: input.password,
                inactive: !input.active,
                ..Default::default()
            };
            let created = gw
                .users
                .clone()
                .add_human_user(gw.forward(&auth, &headers, request))
                .await
                .map_err(|s| from_status(s, false))?
                .into_inner();
            let id = created.user.map(|u| u.id).unwrap_or_default();
            wait_for(
                &gw,
                &caller,
                &created.details.map(|d| d.position).unwrap_or_default(),
            )
            .await?;
            let resource = query::user(&gw, &caller, parse_id(&id, "User")?).await?;
            Ok(resource_response(
                StatusCode::CREATED,
                ResourceType::User,
                &resource,
                &params,
            ))
        }
        .await,
    )
}

/// `GET /Users/{id}`.
pub async fn get_user(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    respond(
        async {
            let (caller, _) = gw.caller(&headers, Permission::Read).await?;
            let params = projection(&params)?;
            gw.consistent(&caller).await?;
            let resource = query::user(&gw, &caller, parse_id(&id, "User")?).await?;
            if let Some(wanted) = header_version(&headers, header::IF_NONE_MATCH)?
                && (wanted.is_none()
                    || resource["meta"]["version"].as_str() == Some(&etag(wanted.unwrap_or_default())))
            {
                return Ok(not_modified(&resource));
            }
            Ok(resource_response(
                StatusCode::OK,
                ResourceType::User,
                &resource,
                &params,
            ))
        }
        .await,
    )
}

fn not_modified(resource: &Value) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(v) = resource["meta"]["version"].as_str().and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// `GET /Users`.
pub async fn list_users(State(gw): State<Gateway>, headers: HeaderMap, Query(params): Params) -> Response {
    respond(
        async {
            let (caller, _) = gw.caller(&headers, Permission::Read).await?;
            let params = projection(&params)?;
            gw.consistent(&caller).await?;
            let body = query::list(&gw, &caller, ResourceType::User, &params).await?;
            Ok(scim_response(StatusCode::OK, &body, None, None))
        }
        .await,
    )
}

/// Sends `resource` as the replacement of user `id`, expecting version `expected` (0: any).
async fn send_user(
    gw: &Gateway,
    auth: &str,
    headers: &HeaderMap,
    id: Uuid,
    resource: &Value,
    expected: i64,
) -> Result<Sent<String>, ScimError> {
    let input = user_input(resource, true)?;
    let request = upb::ReplaceHumanUserRequest {
        user_id: id.to_string(),
        user_name: input.user_name,
        profile: Some(input.profile),
        password: input.password,
        inactive: !input.active,
        expected_sequence: expected,
    };
    let result = gw
        .users
        .clone()
        .replace_human_user(gw.forward(auth, headers, request))
        .await;
    Ok(match conflict::sent(result)? {
        Sent::Written(replaced) => Sent::Written(replaced.details.map(|d| d.position).unwrap_or_default()),
        Sent::Conflict(detail) => Sent::Conflict(detail),
    })
}

/// The user after the write at `position`, as a 200 response.
async fn written_user(
    gw: &Gateway,
    caller: &Caller,
    id: Uuid,
    position: &str,
    params: &ListParams,
) -> Result<Response, ScimError> {
    wait_for(gw, caller, position).await?;
    let resource = query::user(gw, caller, id).await?;
    Ok(resource_response(
        StatusCode::OK,
        ResourceType::User,
        &resource,
        params,
    ))
}

/// `PUT /Users/{id}`: the body replaces the user. With `If-Match` it must be the current version
/// (412 otherwise, also when a change comes first). Without it the client's representation wins:
/// the body does not depend on what the gateway read, so a concurrent change is met by sending it
/// again (`crate::conflict`), and 409 only when the user kept changing through every attempt.
pub async fn replace_user(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let id = parse_id(&id, "User")?;
            let body = body_json(&gw, &headers, body).await?;
            gw.consistent(&caller).await?;
            let current = query::user(&gw, &caller, id).await?;
            let pinned = if_match(&headers)?;
            if let Some(pinned) = pinned
                && pinned != conflict::version_of(&current)?
            {
                return Err(conflict::pinned_conflict(
                    "the resource has changed (ETag mismatch)",
                ));
            }
            // `id` in the body must match.
            if let Some(body_id) = body.get("id").and_then(Value::as_str)
                && body_id != id.to_string()
            {
                return Err(ScimError::mutability("id is immutable"));
            }
            let mut last = String::new();
            for _ in 0..conflict::ATTEMPTS {
                match send_user(&gw, &auth, &headers, id, &body, pinned.unwrap_or(0)).await? {
                    Sent::Written(position) => {
                        return written_user(&gw, &caller, id, &position, &params).await;
                    }
                    Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
                }
            }
            Err(conflict::kept_changing(&last))
        }
        .await,
    )
}

/// `PATCH /Users/{id}`: the operations are applied to the current resource and the result is
/// written as one replacement, pinned to the version it was computed from. With `If-Match` that
/// version must be the client's (412 otherwise); without it, a concurrent change makes the gateway
/// wait for it, read again and apply the operations again (`crate::conflict`).
pub async fn patch_user(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let id = parse_id(&id, "User")?;
            let operations = cairn_scim::parse_patch_request(&body_json(&gw, &headers, body).await?)?;
            let pinned = if_match(&headers)?;
            let mut last = String::new();
            for _ in 0..conflict::ATTEMPTS {
                // The first time: read-after-write; after a conflict: the change that caused it.
                gw.consistent(&caller).await?;
                let current = query::user(&gw, &caller, id).await?;
                let version = conflict::version_of(&current)?;
                if pinned.is_some_and(|p| p != version) {
                    return Err(conflict::pinned_conflict(
                        "the resource has changed (ETag mismatch)",
                    ));
                }
                let patched = cairn_scim::apply_patch(ResourceType::User, &current, &operations)?;
                if patched == current {
                    return Ok(resource_response(
                        StatusCode::OK,
                        ResourceType::User,
                        &current,
                        &params,
                    ));
                }
                match send_user(&gw, &auth, &headers, id, &patched, version).await? {
                    Sent::Written(position) => {
                        return written_user(&gw, &caller, id, &position, &params).await;
                    }
                    Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
                }
            }
            Err(conflict::kept_changing(&last))
        }
        .await,
    )
}

/// `DELETE /Users/{id}`: the user is removed, and with it its group memberships.
pub async fn delete_user(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    respond(
        async {
            let (_, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let id = parse_id(&id, "User")?;
            let pinned = if_match(&headers)?;
            let request = upb::UserIdRequest {
                user_id: id.to_string(),
                expected_sequence: pinned.unwrap_or(0),
            };
            gw.users
                .clone()
                .remove_user(gw.forward(&auth, &headers, request))
                .await
                .map_err(|s| from_status(s, pinned.is_some()))?;
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        .await,
    )
}

// ----- Groups ----------------------------------------------------------------------------------

/// `POST /Groups`.
pub async fn create_group(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let body = body_json(&gw, &headers, body).await?;
            let object = body
                .as_object()
                .ok_or_else(|| ScimError::invalid_syntax("the body must be an object"))?;
            let display_name = text_of(object, "displayName");
            if display_name.trim().is_empty() {
                return Err(ScimError::invalid_value("displayName is required"));
            }
            let request = gpb::AddGroupRequest {
                display_name,
                external_id: text_of(object, "externalId"),
                member_ids: member_ids(object)?,
                ..Default::default()
            };
            let created = gw
                .groups
                .clone()
                .add_group(gw.forward(&auth, &headers, request))
                .await
                .map_err(|s| from_status(s, false))?
                .into_inner();
            wait_for(
                &gw,
                &caller,
                &created.details.map(|d| d.position).unwrap_or_default(),
            )
            .await?;
            let id = parse_id(&created.group.map(|g| g.id).unwrap_or_default(), "Group")?;
            let resource =
                query::group(&gw, &caller, id, params.wants(ResourceType::Group, "members")).await?;
            Ok(resource_response(
                StatusCode::CREATED,
                ResourceType::Group,
                &resource,
                &params,
            ))
        }
        .await,
    )
}

/// `GET /Groups/{id}`.
pub async fn get_group(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    respond(
        async {
            let (caller, _) = gw.caller(&headers, Permission::Read).await?;
            let params = projection(&params)?;
            gw.consistent(&caller).await?;
            let resource = query::group(
                &gw,
                &caller,
                parse_id(&id, "Group")?,
                params.wants(ResourceType::Group, "members"),
            )
            .await?;
            if let Some(wanted) = header_version(&headers, header::IF_NONE_MATCH)?
                && (wanted.is_none()
                    || resource["meta"]["version"].as_str() == Some(&etag(wanted.unwrap_or_default())))
            {
                return Ok(not_modified(&resource));
            }
            Ok(resource_response(
                StatusCode::OK,
                ResourceType::Group,
                &resource,
                &params,
            ))
        }
        .await,
    )
}

/// `GET /Groups`.
pub async fn list_groups(State(gw): State<Gateway>, headers: HeaderMap, Query(params): Params) -> Response {
    respond(
        async {
            let (caller, _) = gw.caller(&headers, Permission::Read).await?;
            let params = projection(&params)?;
            gw.consistent(&caller).await?;
            let body = query::list(&gw, &caller, ResourceType::Group, &params).await?;
            Ok(scim_response(StatusCode::OK, &body, None, None))
        }
        .await,
    )
}

/// Sends `change` of group `id` as one `ModifyGroup`, expecting version `expected` (0: any).
async fn send_group(
    gw: &Gateway,
    auth: &str,
    headers: &HeaderMap,
    id: Uuid,
    change: &GroupChange,
    expected: i64,
) -> Result<Sent<String>, ScimError> {
    let result = gw
        .groups
        .clone()
        .modify_group(gw.forward(auth, headers, change.request(id, expected)))
        .await;
    Ok(match conflict::sent(result)? {
        Sent::Written(modified) => Sent::Written(modified.details.map(|d| d.position).unwrap_or_default()),
        Sent::Conflict(detail) => Sent::Conflict(detail),
    })
}

/// The group after the write at `position` (none: nothing was written), as a 200 response.
async fn written_group(
    gw: &Gateway,
    caller: &Caller,
    id: Uuid,
    position: &str,
    params: &ListParams,
) -> Result<Response, ScimError> {
    wait_for(gw, caller, position).await?;
    let resource = query::group(gw, caller, id, params.wants(ResourceType::Group, "members")).await?;
    Ok(resource_response(
        StatusCode::OK,
        ResourceType::Group,
        &resource,
        params,
    ))
}

/// `PUT /Groups/{id}`: the body replaces the group, members included. With `If-Match` it must be
/// the current version (412 otherwise); without it the client's representation wins, and a
/// concurrent change is met by sending it again (`crate::conflict`).
pub async fn replace_group(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let id = parse_id(&id, "Group")?;
            let body = body_json(&gw, &headers, body).await?;
            let object = body
                .as_object()
                .ok_or_else(|| ScimError::invalid_syntax("the body must be an object"))?;
            let display_name = text_of(object, "displayName");
            if display_name.trim().is_empty() {
                return Err(ScimError::invalid_value("displayName is required"));
            }
            let pinned = if_match(&headers)?;
            gw.consistent(&caller).await?;
            query::group(&gw, &caller, id, false).await?;
            let change = GroupChange {
                display_name: Some(display_name),
                external_id: Some(text_of(object, "externalId")),
                set: Some(member_ids(object)?),
                ..GroupChange::default()
            };
            let mut last = String::new();
            for _ in 0..conflict::ATTEMPTS {
                match send_group(&gw, &auth, &headers, id, &change, pinned.unwrap_or(0)).await? {
                    Sent::Written(position) => {
                        return written_group(&gw, &caller, id, &position, &params).await;
                    }
                    Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
                }
            }
            Err(conflict::kept_changing(&last))
        }
        .await,
    )
}

/// `PATCH /Groups/{id}`. Member additions and removals by id, renames and externalId changes go
/// to command-api as one atomic `ModifyGroup` delta without loading the member list, so such a
/// PATCH costs the same for a group of ten or of a hundred thousand. Any other PATCH is applied to
/// the whole group as read (members with their `display`), and what it changed is sent pinned to
/// the version that was read. With `If-Match` that version must be the client's (412 otherwise);
/// without it a concurrent change makes the gateway send the delta again, or wait for the change,
/// read again and apply the PATCH again (`crate::conflict`).
pub async fn patch_group(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Body,
) -> Response {
    respond(
        async {
            let (caller, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let params = projection(&params)?;
            let id = parse_id(&id, "Group")?;
            let operations = cairn_scim::parse_patch_request(&body_json(&gw, &headers, body).await?)?;
            let pinned = if_match(&headers)?;
            let fast = GroupChange::fast(&operations)?;
            let mut last = String::new();
            for attempt in 0..conflict::ATTEMPTS {
                let (change, expected) = match &fast {
                    Some(change) => {
                        if attempt == 0 {
                            gw.consistent(&caller).await?;
                            query::group(&gw, &caller, id, false).await?;
                        }
                        (change.clone(), pinned.unwrap_or(0))
                    }
                    None => {
                        // The first time: read-after-write; after a conflict: the change that
                        // caused it.
                        gw.consistent(&caller).await?;
                        let current = query::group_to_patch(&gw, &caller, id).await?;
                        let version = conflict::version_of(&current)?;
                        if pinned.is_some_and(|p| p != version) {
                            return Err(conflict::pinned_conflict(
                                "the resource has changed (ETag mismatch)",
                            ));
                        }
                        let patched = cairn_scim::apply_patch(ResourceType::Group, &current, &operations)?;
                        let change = GroupChange::between(&current, &patched)?;
                        if change.is_empty() {
                            return written_group(&gw, &caller, id, "", &params).await;
                        }
                        (change, version)
                    }
                };
                match send_group(&gw, &auth, &headers, id, &change, expected).await? {
                    Sent::Written(position) => {
                        return written_group(&gw, &caller, id, &position, &params).await;
                    }
                    Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
                }
            }
            Err(conflict::kept_changing(&last))
        }
        .await,
    )
}

/// `DELETE /Groups/{id}`.
pub async fn delete_group(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    respond(
        async {
            let (_, auth) = gw.caller(&headers, Permission::ManageUsers).await?;
            let id = parse_id(&id, "Group")?;
            let pinned = if_match(&headers)?;
            let request = gpb::GroupIdRequest {
                group_id: id.to_string(),
                expected_sequence: pinned.unwrap_or(0),
            };
            gw.groups
                .clone()
                .remove_group(gw.forward(&auth, &headers, request))
                .await
                .map_err(|s| from_status(s, pinned.is_some()))?;
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        .await,
    )
}

// ----- search and discovery --------------------------------------------------------------------

/// `POST /.search`, `/Users/.search`, `/Groups/.search`.
pub async fn search(gw: Gateway, headers: HeaderMap, body: Body, types: &[ResourceType]) -> Response {
    respond(async {
        let (caller, _) = gw.caller(&headers, Permission::Read).await?;
        let body = body_json(&gw, &headers, body).await?;
        let object = body.as_object().cloned().unwrap_or_default();
        let params = ListParams::parse(|name| match get(&object, name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
            _ => None,
        })?;
        gw.consistent(&caller).await?;
        if types.len() == 1 {
            return Ok(scim_response(StatusCode::OK, &query::list(&gw, &caller, types[0], &params).await?, None, None));
        }
        // Root search over both types: users first, then groups, paged across both.
        let mut all = Vec::new();
        let mut total = 0;
        for rt in types {
            let mut wide = params.clone();
            wide.start_index = 1;
            wide.count = Some(u64::from(gw.limits.max_results));
            let page = query::list(&gw, &caller, *rt, &wide).await?;
            total += page["totalResults"].as_u64().unwrap_or(0);
            all.extend(page["Resources"].as_array().cloned().unwrap_or_default());
        }
        let start = (params.start_index - 1) as usize;
        let count = params.count.unwrap_or(u64::from(gw.limits.max_results)).min(u64::from(gw.limits.max_results)) as usize;
        let page: Vec<Value> = all.into_iter().skip(start).take(count).collect();
        Ok(scim_response(
            StatusCode::OK,
            &json!({"schemas": [query::LIST_RESPONSE], "totalResults": total, "startIndex": params.start_index, "itemsPerPage": page.len(), "Resources": page}),
            None,
            None,
        ))
    }
    .await)
}

/// Writes to discovery endpoints and other unsupported methods.
pub async fn method_not_allowed() -> Response {
    error_response(&ScimError::method_not_allowed("this endpoint is read-only"))
}

/// `/Me`: Cairn's SCIM tokens belong to provisioning clients, not to end users. A caller without
/// a valid token learns nothing about that: it gets 401 like everywhere else.
pub async fn me(gw: &Gateway, headers: &HeaderMap) -> Response {
    respond(
        async {
            gw.caller(headers, Permission::Read).await?;
            Err::<Response, _>(ScimError::new(
                501,
                None,
                "/Me is not supported: SCIM tokens act for provisioning clients, not for a user",
            ))
        }
        .await,
    )
}

/// Discovery documents need a valid token too (RFC 7644 lets them be public; Cairn's are not).
pub async fn discovery(gw: &Gateway, headers: &HeaderMap, document: Option<Value>) -> Response {
    respond(
        async {
            gw.caller(headers, Permission::Read).await?;
            let document = document.ok_or_else(|| ScimError::not_found("no such schema or resource type"))?;
            Ok(scim_response(StatusCode::OK, &document, None, None))
        }
        .await,
    )
}

/// The ServiceProviderConfig, honest about what this gateway does.
pub fn service_provider_config(gw: &Gateway) -> Value {
    cairn_scim::schema::ServiceProviderConfig {
        documentation_uri: None,
        patch: true,
        bulk: cairn_scim::schema::BulkConfig {
            supported: true,
            max_operations: gw.limits.bulk_max_operations as u32,
            max_payload_size: gw.limits.max_payload_bytes as u64,
        },
        filter: cairn_scim::schema::FilterConfig {
            supported: true,
            max_results: gw.limits.max_results,
        },
        change_password: true,
        sort: true,
        etag: true,
        authentication_schemes: vec![cairn_scim::schema::AuthenticationScheme::oauth_bearer_token()],
    }
    .to_json(&gw.limits.base_url)
}
