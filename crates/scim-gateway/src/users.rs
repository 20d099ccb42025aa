//! `/Users` (RFC 7644 §3): create, read, list, replace, patch and delete. Writes go to command-api's
//! `UserService`; every answer is read back from the read models after they reached the write.

use crate::conflict::{self, Sent};
use crate::extract::{Answer, IfMatch, IfNoneMatch, Reader, ScimJson, Selection, UserId, Writer};
use crate::gateway::{
    Gateway, from_status, no_content, not_modified, resource_response, scim_response, written_at,
};
use crate::query::{self, ListParams};
use crate::resources::user_input;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_auth::Caller;
use cairn_domain::Position;
use cairn_proto::user::v1 as pb;
use cairn_scim::{ResourceType, ScimError};
use serde_json::Value;
use uuid::Uuid;

/// `POST /Users`.
pub async fn create(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    ScimJson(body): ScimJson,
) -> Answer {
    let input = user_input(&body, true)?;
    let request = pb::AddHumanUserRequest {
        user_name: input.user_name,
        profile: Some(input.profile),
        password: input.password,
        inactive: !input.active,
        ..Default::default()
    };
    let created = gw
        .users
        .clone()
        .add_human_user(gw.forward(&writer.forward, request))
        .await
        .map_err(|s| from_status(s, false))?
        .into_inner();
    let position = written_at(created.details)?;
    let id = created.user.map(|u| u.id).unwrap_or_default();
    let id: Uuid = id.parse().map_err(|_| {
        cairn_error::Error::internal(format!("command-api created user {id:?}")).to_scim(false)
    })?;
    gw.wait_for(&writer.caller, position).await?;
    let resource = query::user(&gw, &writer.caller, id).await?;
    Ok(resource_response(
        StatusCode::CREATED,
        ResourceType::User,
        &resource,
        &params,
    ))
}

/// `GET /Users/{id}`.
pub async fn get(
    State(gw): State<Gateway>,
    Reader(caller): Reader,
    Selection(params): Selection,
    UserId(id): UserId,
    IfNoneMatch(wanted): IfNoneMatch,
) -> Answer {
    gw.consistent(&caller).await?;
    let resource = query::user(&gw, &caller, id).await?;
    if let Some(response) = not_modified(wanted, &resource) {
        return Ok(response);
    }
    Ok(resource_response(
        StatusCode::OK,
        ResourceType::User,
        &resource,
        &params,
    ))
}

/// `GET /Users`.
pub async fn list(State(gw): State<Gateway>, Reader(caller): Reader, Selection(params): Selection) -> Answer {
    gw.consistent(&caller).await?;
    let body = query::list(&gw, &caller, ResourceType::User, &params).await?;
    Ok(scim_response(StatusCode::OK, &body, None, None))
}

/// Sends `resource` as the replacement of user `id`, expecting version `expected` (0: any).
async fn send(
    gw: &Gateway,
    writer: &Writer,
    id: Uuid,
    resource: &Value,
    expected: i64,
) -> Result<Sent<Position>, ScimError> {
    let input = user_input(resource, true)?;
    let request = pb::ReplaceHumanUserRequest {
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
        .replace_human_user(gw.forward(&writer.forward, request))
        .await;
    Ok(match conflict::sent(result)? {
        Sent::Written(replaced) => Sent::Written(written_at(replaced.details)?),
        Sent::Conflict(detail) => Sent::Conflict(detail),
    })
}

/// The user after the write at `position`, as a 200 response.
async fn written(gw: &Gateway, caller: &Caller, id: Uuid, position: Position, params: &ListParams) -> Answer {
    gw.wait_for(caller, position).await?;
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
pub async fn replace(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    UserId(id): UserId,
    IfMatch(pinned): IfMatch,
    ScimJson(body): ScimJson,
) -> Answer {
    gw.consistent(&writer.caller).await?;
    let current = query::user(&gw, &writer.caller, id).await?;
    if let Some(pinned) = pinned
        && pinned != conflict::version_of(&current)?
    {
        return Err(conflict::pinned_conflict("the resource has changed (ETag mismatch)").into());
    }
    // `id` in the body must match.
    if let Some(body_id) = body.get("id").and_then(Value::as_str)
        && body_id != id.to_string()
    {
        return Err(ScimError::mutability("id is immutable").into());
    }
    let position = conflict::resend(pinned, || send(&gw, &writer, id, &body, pinned.unwrap_or(0))).await?;
    written(&gw, &writer.caller, id, position, &params).await
}

/// `PATCH /Users/{id}`: the operations are applied to the current resource and the result is
/// written as one replacement, pinned to the version it was computed from. With `If-Match` that
/// version must be the client's (412 otherwise); without it, a concurrent change makes the gateway
/// wait for it, read again and apply the operations again (`crate::conflict`).
pub async fn patch(
    State(gw): State<Gateway>,
    writer: Writer,
    Selection(params): Selection,
    UserId(id): UserId,
    IfMatch(pinned): IfMatch,
    ScimJson(body): ScimJson,
) -> Answer {
    let operations = cairn_scim::parse_patch_request(&body)?;
    let caller = &writer.caller;
    let mut last = String::new();
    for _ in 0..conflict::ATTEMPTS {
        // The first time: read-after-write; after a conflict: the change that caused it.
        gw.consistent(caller).await?;
        let current = query::user(&gw, caller, id).await?;
        let version = conflict::version_of(&current)?;
        if pinned.is_some_and(|p| p != version) {
            return Err(conflict::pinned_conflict("the resource has changed (ETag mismatch)").into());
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
        match send(&gw, &writer, id, &patched, version).await? {
            Sent::Written(position) => return written(&gw, caller, id, position, &params).await,
            Sent::Conflict(detail) => last = conflict::again(pinned, detail)?,
        }
    }
    Err(conflict::kept_changing(&last).into())
}

/// `DELETE /Users/{id}`: the user is removed, and with it its group memberships; when the
/// instance's `scim_erase_on_delete` setting is on, its personal data is erased as well.
pub async fn delete(
    State(gw): State<Gateway>,
    writer: Writer,
    UserId(id): UserId,
    IfMatch(pinned): IfMatch,
) -> Answer {
    let request = pb::RemoveUserRequest {
        user_id: id.to_string(),
        expected_sequence: pinned.unwrap_or(0),
        erase: writer.caller.settings.scim_erase_on_delete.unwrap_or(false),
    };
    gw.users
        .clone()
        .remove_user(gw.forward(&writer.forward, request))
        .await
        .map_err(|s| from_status(s, pinned.is_some()))?;
    Ok(no_content())
}
