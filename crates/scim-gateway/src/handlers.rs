//! The SCIM endpoints for Users and Groups (RFC 7644 §3): create, read, list, search, replace,
//! patch, delete, with ETags, and the discovery endpoints.

use crate::gateway::{Gateway, error_response, etag, from_status, header_version, scim_response};
use crate::query::{self, ListParams};
use crate::resources::{get, member_ids, text_of, user_input};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_command_api::auth::{Caller, Permission};
use cairn_domain::Position;
use cairn_proto::group::v1 as gpb;
use cairn_proto::user::v1 as upb;
use cairn_scim::{PatchOp, PatchOperation, PatchPath, ResourceType, ScimError};
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
                &["users", "groups"],
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

async fn replace_user_with(
    gw: &Gateway,
    caller: &Caller,
    auth: &str,
    headers: &HeaderMap,
    id: Uuid,
    resource: &Value,
    expected: i64,
) -> Result<Value, ScimError> {
    let input = user_input(resource, true)?;
    let request = upb::ReplaceHumanUserRequest {
        user_id: id.to_string(),
        user_name: input.user_name,
        profile: Some(input.profile),
        password: input.password,
        inactive: !input.active,
        expected_sequence: expected,
    };
    let replaced = gw
        .users
        .clone()
        .replace_human_user(gw.forward(auth, headers, request))
        .await
        .map_err(|s| from_status(s, true))?
        .into_inner();
    wait_for(
        gw,
        caller,
        &replaced.details.map(|d| d.position).unwrap_or_default(),
    )
    .await?;
    query::user(gw, caller, id).await
}

/// `PUT /Users/{id}`.
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
            let version = current["meta"]["version"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<i64>()
                .unwrap_or(0);
            if pinned.is_some_and(|p| p != version) {
                return Err(ScimError::precondition_failed(
                    "the resource has changed (ETag mismatch)",
                ));
            }
            // userName may not be changed to an empty value; `id` in the body must match.
            if let Some(body_id) = body.get("id").and_then(Value::as_str)
                && body_id != id.to_string()
            {
                return Err(ScimError::mutability("id is immutable"));
            }
            let resource =
                replace_user_with(&gw, &caller, &auth, &headers, id, &body, pinned.unwrap_or(0)).await?;
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

/// `PATCH /Users/{id}`: the operations are applied to the current resource and the result is
/// written as one replacement, pinned to the version it was computed from (retried once on a
/// concurrent change when the client did not pin a version itself).
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
            gw.consistent(&caller).await?;
            for attempt in 0..2 {
                let current = query::user(&gw, &caller, id).await?;
                let version = current["meta"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .parse::<i64>()
                    .unwrap_or(0);
                if pinned.is_some_and(|p| p != version) {
                    return Err(ScimError::precondition_failed(
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
                match replace_user_with(&gw, &caller, &auth, &headers, id, &patched, version).await {
                    Err(e) if e.status == 412 && pinned.is_none() && attempt == 0 => continue,
                    Err(e) if e.status == 412 && pinned.is_none() => {
                        return Err(ScimError::new(409, None, e.detail));
                    }
                    other => {
                        return other
                            .map(|r| resource_response(StatusCode::OK, ResourceType::User, &r, &params));
                    }
                }
            }
            Err(ScimError::new(409, None, "the resource keeps changing; retry"))
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

/// The changes a group PATCH or PUT asks for, as one `ModifyGroup`.
#[derive(Default)]
struct GroupChange {
    display_name: Option<String>,
    external_id: Option<String>,
    add: Vec<String>,
    remove: Vec<String>,
    set: Option<Vec<String>>,
}

/// Reads `op` as a change of displayName, externalId or members, without loading the members;
/// `None` when it needs the whole resource.
fn fast_group_op(op: &PatchOperation, change: &mut GroupChange) -> Result<bool, ScimError> {
    let values = |value: &Option<Value>| -> Result<Vec<String>, ScimError> {
        match value {
            Some(Value::Array(items)) => items
                .iter()
                .map(|m| match m {
                    Value::Object(o) => {
                        let v = text_of(o, "value");
                        if v.is_empty() {
                            Err(ScimError::invalid_value("members[].value is required"))
                        } else {
                            Ok(v)
                        }
                    }
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ScimError::invalid_value("members must be objects with a value")),
                })
                .collect(),
            Some(Value::Object(o)) => member_ids(&serde_json::Map::from_iter([(
                "members".to_owned(),
                Value::Array(vec![Value::Object(o.clone())]),
            )])),
            None => Ok(Vec::new()),
            Some(_) => Err(ScimError::invalid_value("members must be an array")),
        }
    };
    match (&op.op, &op.path) {
        (PatchOp::Add | PatchOp::Replace, None) => {
            let Some(Value::Object(object)) = &op.value else {
                return Ok(false);
            };
            for (key, value) in object {
                match key.to_ascii_lowercase().as_str() {
                    "displayname" => change.display_name = value.as_str().map(str::to_owned),
                    "externalid" => change.external_id = Some(value.as_str().unwrap_or_default().to_owned()),
                    "members" if op.op == PatchOp::Add => change.add.extend(values(&Some(value.clone()))?),
                    "members" => change.set = Some(values(&Some(value.clone()))?),
                    "id" | "schemas" | "meta" => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
        (
            _,
            Some(PatchPath::Attr {
                attr,
                value_filter,
                sub_attr,
            }),
        ) => {
            let name = attr.name.to_ascii_lowercase();
            match (name.as_str(), &op.op, value_filter, sub_attr) {
                ("displayname", PatchOp::Add | PatchOp::Replace, None, None) => {
                    change.display_name = op.value.as_ref().and_then(Value::as_str).map(str::to_owned);
                    Ok(change.display_name.is_some())
                }
                ("externalid", PatchOp::Add | PatchOp::Replace, None, None) => {
                    change.external_id = Some(
                        op.value
                            .as_ref()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    Ok(true)
                }
                ("externalid", PatchOp::Remove, None, None) => {
                    change.external_id = Some(String::new());
                    Ok(true)
                }
                ("members", PatchOp::Add, None, None) => {
                    change.add.extend(values(&op.value)?);
                    Ok(true)
                }
                ("members", PatchOp::Replace, None, None) => {
                    change.set = Some(values(&op.value)?);
                    Ok(true)
                }
                ("members", PatchOp::Remove, None, None) if op.value.is_some() => {
                    change.remove.extend(values(&op.value)?);
                    Ok(true)
                }
                ("members", PatchOp::Remove, None, None) => {
                    change.set = Some(Vec::new());
                    Ok(true)
                }
                ("members", PatchOp::Remove, Some(filter), None) => match member_filter_value(filter) {
                    Some(id) => {
                        change.remove.push(id);
                        Ok(true)
                    }
                    None => Ok(false),
                },
                _ => Ok(false),
            }
        }
        _ => Ok(false),
    }
}

/// `value eq "<id>"` → the id.
fn member_filter_value(filter: &cairn_scim::Filter) -> Option<String> {
    match filter {
        cairn_scim::Filter::Compare {
            attr,
            op: cairn_scim::CompareOp::Eq,
            value: cairn_scim::CompValue::String(v),
        } if attr.name.eq_ignore_ascii_case("value") && attr.sub.is_none() => Some(v.clone()),
        _ => None,
    }
}

async fn modify_group(
    gw: &Gateway,
    caller: &Caller,
    auth: &str,
    headers: &HeaderMap,
    id: Uuid,
    change: GroupChange,
    expected: i64,
) -> Result<String, ScimError> {
    let mut fields = Vec::new();
    if change.external_id.is_some() {
        fields.push("external_id".to_owned());
    }
    let request = gpb::ModifyGroupRequest {
        group_id: id.to_string(),
        display_name: change.display_name.unwrap_or_default(),
        fields,
        external_id: change.external_id.unwrap_or_default(),
        description: String::new(),
        add_user_ids: change.add,
        remove_user_ids: change.remove,
        replace_members: change.set.is_some(),
        set_user_ids: change.set.unwrap_or_default(),
        expected_sequence: expected,
    };
    let _ = caller;
    let response = gw
        .groups
        .clone()
        .modify_group(gw.forward(auth, headers, request))
        .await
        .map_err(|s| from_status(s, expected > 0))?
        .into_inner();
    Ok(response.details.map(|d| d.position).unwrap_or_default())
}

/// `PUT /Groups/{id}`.
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
            gw.consistent(&caller).await?;
            query::group(&gw, &caller, id, false).await?;
            let change = GroupChange {
                display_name: Some(display_name),
                external_id: Some(text_of(object, "externalId")),
                set: Some(member_ids(object)?),
                ..GroupChange::default()
            };
            let position = modify_group(
                &gw,
                &caller,
                &auth,
                &headers,
                id,
                change,
                if_match(&headers)?.unwrap_or(0),
            )
            .await?;
            wait_for(&gw, &caller, &position).await?;
            let resource =
                query::group(&gw, &caller, id, params.wants(ResourceType::Group, "members")).await?;
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

/// `PATCH /Groups/{id}`: member additions and removals, renames and externalId changes go to
/// command-api as one atomic `ModifyGroup` without loading the member list, so a PATCH costs the
/// same for a group of ten or of a hundred thousand; any other operation is applied to the whole
/// resource.
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
            gw.consistent(&caller).await?;
            let mut change = GroupChange::default();
            let mut fast = true;
            for op in &operations {
                if !fast_group_op(op, &mut change)? {
                    fast = false;
                    break;
                }
            }
            if !fast {
                let current = query::group(&gw, &caller, id, true).await?;
                let patched = cairn_scim::apply_patch(ResourceType::Group, &current, &operations)?;
                let object = patched
                    .as_object()
                    .ok_or_else(|| ScimError::invalid_syntax("bad group"))?;
                change = GroupChange {
                    display_name: Some(text_of(object, "displayName")),
                    external_id: Some(text_of(object, "externalId")),
                    set: Some(member_ids(object)?),
                    ..GroupChange::default()
                };
            } else {
                query::group(&gw, &caller, id, false).await?;
            }
            let position =
                modify_group(&gw, &caller, &auth, &headers, id, change, pinned.unwrap_or(0)).await?;
            wait_for(&gw, &caller, &position).await?;
            let resource =
                query::group(&gw, &caller, id, params.wants(ResourceType::Group, "members")).await?;
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
