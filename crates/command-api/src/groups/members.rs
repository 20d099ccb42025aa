//! Group membership: the member lists of a request (at most [`MAX_MEMBERS_PER_CALL`]), the check
//! that the users added exist (read from the event store, no read-model lag), and the add, remove
//! and set commands.

use super::write::group_command;
use super::{MAX_MEMBERS_PER_CALL, group_id};
use crate::api::Api;
use crate::convert::Parser;
use crate::error::ApiError;
use cairn_auth::Caller;
use cairn_domain::AggregateId;
use cairn_proto::group::v1 as pb;
use std::collections::HashSet;
use tonic::{Request, Response, Status};

/// The ids among `users` that are users of the caller's instance and not removed, read from the
/// event store itself (no read-model lag).
pub async fn existing_users(
    api: &Api,
    caller: &Caller,
    users: &[AggregateId],
) -> Result<HashSet<AggregateId>, ApiError> {
    existing_users_on(&api.exec.pool, caller, users).await
}

/// [`existing_users`] through `executor` (a command's transaction, which must not wait for a
/// second pooled connection while it holds its members' locks).
async fn existing_users_on<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    caller: &Caller,
    users: &[AggregateId],
) -> Result<HashSet<AggregateId>, ApiError> {
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let found: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT e.aggregate_id FROM eventstore.events e \
         WHERE e.instance_id = $1 AND e.aggregate_type = 'user' AND e.aggregate_id = ANY($2) AND e.sequence = 1 \
           AND NOT EXISTS (SELECT 1 FROM eventstore.events r WHERE r.instance_id = e.instance_id \
                             AND r.aggregate_type = 'user' AND r.aggregate_id = e.aggregate_id AND r.event_type = 'user.removed')",
    )
    .bind(caller.instance_id.as_uuid())
    .bind(&ids)
    .fetch_all(executor)
    .await?;
    Ok(found.into_iter().map(AggregateId::from_uuid).collect())
}

pub(super) fn parse_members(p: &mut Parser, field: &str, ids: &[String]) -> Vec<AggregateId> {
    if ids.len() > MAX_MEMBERS_PER_CALL {
        p.fail(field, format!("at most {MAX_MEMBERS_PER_CALL} per call"));
        return Vec::new();
    }
    ids.iter()
        .enumerate()
        .filter_map(|(i, id)| p.id(&format!("{field}[{i}]"), id))
        .collect()
}

pub(super) async fn check_members(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    members: &[AggregateId],
) -> Result<(), ApiError> {
    if members.is_empty() {
        return Ok(());
    }
    let existing = existing_users_on(conn, caller, members).await?;
    let missing: Vec<String> = members
        .iter()
        .filter(|m| !existing.contains(m))
        .map(|m| m.to_string())
        .take(10)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "user_ids",
            format!("no such users: {}", missing.join(", ")),
        ))
    }
}

pub(super) async fn add_members(
    api: &Api,
    request: Request<pb::MembersRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let (id, members, expected) = members_request(&request)?;
    group_command(
        api,
        request,
        "AddMembers",
        id,
        expected,
        members.clone(),
        move |g| Ok(g.add_members(&members)?),
    )
    .await
}

pub(super) async fn remove_members(
    api: &Api,
    request: Request<pb::MembersRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let req = request.get_ref().clone();
    let id = group_id(&req.group_id)?;
    let mut p = Parser::default();
    let members = parse_members(&mut p, "user_ids", &req.user_ids);
    p.finish()?;
    group_command(
        api,
        request,
        "RemoveMembers",
        id,
        req.expected_sequence,
        Vec::new(),
        move |g| Ok(g.remove_members(&members)?),
    )
    .await
}

pub(super) async fn set_members(
    api: &Api,
    request: Request<pb::MembersRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let (id, members, expected) = members_request(&request)?;
    group_command(
        api,
        request,
        "SetMembers",
        id,
        expected,
        members.clone(),
        move |g| Ok(g.set_members(&members)?),
    )
    .await
}

/// The group, the members and the expected version of a members request.
fn members_request(
    request: &Request<pb::MembersRequest>,
) -> Result<(AggregateId, Vec<AggregateId>, i64), ApiError> {
    let req = request.get_ref();
    let id = group_id(&req.group_id)?;
    let mut p = Parser::default();
    let members = parse_members(&mut p, "user_ids", &req.user_ids);
    p.finish()?;
    Ok((id, members, req.expected_sequence))
}
