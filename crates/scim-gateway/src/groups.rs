//! `/Groups` (RFC 7644 §3): create, read, list, replace, patch and delete. Writes go to command-api's
//! `GroupService`; member changes travel as deltas (`crate::group_change`), so a PATCH costs the
//! same for a group of ten or of a hundred thousand.

use crate::conflict::{self, Sent};
use crate::extract::{Answer, GroupId, IfMatch, IfNoneMatch, Reader, ScimJson, Selection, Writer};
use crate::gateway::{
    Gateway, from_status, no_content, not_modified, resource_response, scim_response, written_at,
};
use crate::group_change::GroupChange;
use crate::query::{self, ListParams};
use crate::resources::{member_ids, text_of};
use axum::extract::State;
use axum::http::StatusCode;
use cairn_auth::Caller;
use cairn_domain::Position;
use cairn_proto::group::v1 as pb;
use cairn_scim::{ResourceType, ScimError};
use serde_json::{Map, Value};
use uuid::Uuid;

fn display_name(object: &Map<String, Value>) -> Result<String, ScimError> {
    let display_name = text_of(object, "displayName");
    if display_name.trim().is_empty() {
        return Err(ScimError::invalid_value("displayName is required"));
    }
    Ok(display_name)
}

fn object(body: &Value) -> Result<&Map<String, Value>, ScimError> {
    body.as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body must be an object"))
}

/// `POST /Groups`.
pub async fn create(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    ScimJson(body): ScimJson,
) -> Answer {
    let object = object(&body)?;
    let request = pb::AddGroupRequest {
        display_name: display_name(object)?,
        external_id: text_of(object, "externalId"),
        member_ids: member_ids(object)?,
        ..Default::default()
    };
    let created = gw
        .groups
        .clone()
        .add_group(gw.forward(&writer.forward, request))
        .await
        .map_err(|s| from_status(s, false))?
        .into_inner();
    let position = written_at(created.details)?;
    let id = created.group.map(|g| g.id).unwrap_or_default();
    let id: Uuid = id.parse().map_err(|_| {
        cairn_error::Error::internal(format!("command-api created group {id:?}")).to_scim(false)
    })?;
    gw.wait_for(&writer.caller, position).await?;
    let members = params.wants(ResourceType::Group, "members");
    let resource = query::group(&gw, &writer.caller, id, members).await?;
    Ok(resource_response(
        StatusCode::CREATED,
        ResourceType::Group,
        &resource,
        &params,
    ))
}

/// `GET /Groups/{id}`.
pub async fn get(
    State(gw): State<Gateway>,
    Reader(caller): Reader,
    Selection(params): Selection,
    GroupId(id): GroupId,
    IfNoneMatch(wanted): IfNoneMatch,
) -> Answer {
    gw.consistent(&caller).await?;
    let members = params.wants(ResourceType::Group, "members");
    let resource = query::group(&gw, &caller, id, members).await?;
    if let Some(response) = not_modified(wanted, &resource) {
        return Ok(response);
    }
    Ok(resource_response(
        StatusCode::OK,
        ResourceType::Group,
        &resource,
        &params,
    ))
}

/// `GET /Groups`.
pub async fn list(State(gw): State<Gateway>, Reader(caller): Reader, Selection(params): Selection) -> Answer {
    gw.consistent(&caller).await?;
    let body = query::list(&gw, &caller, ResourceType::Group, &params).await?;
    Ok(scim_response(StatusCode::OK, &body, None, None))
}

/// Sends `change` of group `id` as one `ModifyGroup`, expecting version `expected` (0: any).
async fn send(
    gw: &Gateway,
    writer: &Writer,
    id: Uuid,
    change: &GroupChange,
    expected: i64,
) -> Result<Sent<Position>, ScimError> {
    let result = gw
        .groups
        .clone()
        .modify_group(gw.forward(&writer.forward, change.request(id, expected)))
        .await;
    Ok(match conflict::sent(result)? {
        Sent::Written(modified) => Sent::Written(written_at(modified.details)?),
        Sent::Conflict(detail) => Sent::Conflict(detail),
    })
}

/// The group after the write at `position` (`ZERO`: nothing was written), as a 200 response.
async fn written(gw: &Gateway, caller: &Caller, id: Uuid, position: Position, params: &ListParams) -> Answer {
    gw.wait_for(caller, position).await?;
    let members = params.wants(ResourceType::Group, "members");
    let resource = query::group(gw, caller, id, members).await?;
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
pub async fn replace(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    GroupId(id): GroupId,
    IfMatch(pinned): IfMatch,
    ScimJson(body): ScimJson,
) -> Answer {
    let object = object(&body)?;
    let display_name = display_name(object)?;
    gw.consistent(&writer.caller).await?;
    query::group(&gw, &writer.caller, id, false).await?;
    let change = GroupChange {
        display_name: Some(display_name),
        external_id: Some(text_of(object, "externalId")),
        set: Some(member_ids(object)?),
        ..GroupChange::default()
    };
    let position = conflict::resend(pinned, || send(&gw, &writer, id, &change, pinned.unwrap_or(0))).await?;
    written(&gw, &writer.caller, id, position, &params).await
}

/// `PATCH /Groups/{id}`. Member additions and removals by id, renames and externalId changes go
/// to command-api as one atomic `ModifyGroup` delta without loading the member list, so such a
/// PATCH costs the same for a group of ten or of a hundred thousand. Any other PATCH is applied to
/// the whole group as read (members with their `display`), and what it changed is sent pinned to
/// the version that was read. With `If-Match` that version must be the client's (412 otherwise);
/// without it a concurrent change makes the gateway send the delta again, or wait for the change,
/// read again and apply the PATCH again (`crate::conflict`).
pub async fn patch(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    GroupId(id): GroupId,
    IfMatch(pinned): IfMatch,
    ScimJson(body): ScimJson,
) -> Answer {
    let operations = cairn_scim::parse_patch_request(&body)?;
    let caller = &writer.caller;
    let fast = GroupChange::fast(&operations)?;
    let mut last = String::new();
    for attempt in 0..conflict::ATTEMPTS {
        let (change, expected) = match &fast {
            Some(change) => {
                if attempt == 0 {
                    gw.consistent(caller).await?;
                    query::group(&gw, caller, id, false).await?;
                }
                (change.clone(), pinned.unwrap_or(0))
            }
            None => {
                // The first time: read-after-write; after a conflict: the change that caused it.
                gw.consistent(caller).await?;
                let current = query::group_to_patch(&gw, caller, id).await?;
                let version = conflict::version_of(&current)?;
                if pinned.is_some_and(|p| p != version) {
                    return Err(conflict::pinned_conflict("the resource has changed (ETag mismatch)").into());
                }
                let patched = cairn_scim::apply_patch(ResourceType::Group, &current, &operations)?;
                let change = GroupChange::between(&current, &patched)?;
                if change.is_empty() {
                    return written(&gw, caller, id, Position::ZERO, &params).await;
                }
                (change, version)
            }
        };
        match send(&gw, &writer, id, &change, expected).await? {
            Sent::Written(position) => return written(&gw, caller, id, position, &params).await,
            Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
        }
    }
    Err(conflict::kept_changing(&last).into())
}

/// `DELETE /Groups/{id}`.
pub async fn delete(
    State(gw): State<Gateway>,
    writer: Writer,
    GroupId(id): GroupId,
    IfMatch(pinned): IfMatch,
) -> Answer {
    let request = pb::GroupIdRequest {
        group_id: id.to_string(),
        expected_sequence: pinned.unwrap_or(0),
    };
    gw.groups
        .clone()
        .remove_group(gw.forward(&writer.forward, request))
        .await
        .map_err(|s| from_status(s, pinned.is_some()))?;
    Ok(no_content())
}
