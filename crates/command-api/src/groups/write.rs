//! Commands on one group: [`group_command`] runs one inside the keyed transaction on a group the
//! caller may see (adding users only once they are locked and known to exist); adding, updating,
//! modifying (several changes in one atomic command) and removing a group.

use super::group_id;
use super::members::{check_members, parse_members};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, details, opt};
use crate::error::ApiError;
use crate::exec::{Plan, Written, already_exists, lock_users};
use crate::users::target_org;
use cairn_auth::{Caller, Permission};
use cairn_domain::group::{AddGroup, GroupChange};
use cairn_domain::{Aggregate, AggregateId, DisplayName, Group};
use cairn_proto::group::v1 as pb;
use tonic::{Request, Response, Status};

fn group_to_pb(group: &Group, sequence: i64) -> pb::Group {
    pb::Group {
        id: group.id().map(|i| i.to_string()).unwrap_or_default(),
        org_id: group.org_id().map(|i| i.to_string()).unwrap_or_default(),
        display_name: group.display_name().map(|d| d.to_string()).unwrap_or_default(),
        external_id: group.external_id().unwrap_or_default().to_owned(),
        description: group.description().unwrap_or_default().to_owned(),
        member_count: group.members().len() as u64,
        created_at: None,
        changed_at: None,
        sequence,
    }
}

async fn visible_group(api: &Api, caller: &Caller, id: AggregateId) -> Result<Group, ApiError> {
    let group: Group = api.exec.load(caller.instance_id, id).await?;
    match group.org_id() {
        Some(org) if group.exists() && caller.sees_org(org) => Ok(group),
        _ => Err(ApiError::NotFound("group")),
    }
}

/// Runs a command on one group the caller may see. `members` are users the command adds: they
/// must exist. Both checks run inside the keyed transaction, after the key lookup, so a retry
/// of a call that succeeded gets its first response even when the group or a member is gone.
pub(super) async fn group_command<T: prost::Message>(
    api: &Api,
    request: Request<T>,
    method: &'static str,
    id: AggregateId,
    expected_sequence: i64,
    members: Vec<AggregateId>,
    decide: impl Fn(&Group) -> Result<cairn_domain::Decision, ApiError> + Send + Sync,
) -> Result<Response<pb::GroupResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let caller_ref = &caller;
    let (decide, members) = (&decide, &members);
    let response = api
        .exec
        .run(
            &caller,
            method,
            Api::idempotency_key(&request),
            request.get_ref(),
            |mut tx| async move {
                let org = visible_group(api, caller_ref, id).await?.org_id().unwrap_or(id);
                if !members.is_empty() {
                    // No member may be removed between this check and the commit.
                    let conn = tx.conn().await?;
                    lock_users(&mut *conn, caller_ref.instance_id, members, false).await?;
                    check_members(conn, caller_ref, members).await?;
                }
                let written: Written<Group> = api
                    .exec
                    .change(
                        &mut tx,
                        caller_ref,
                        id,
                        (expected_sequence > 0).then_some(expected_sequence),
                        |group: &Group| {
                            if !group.exists() {
                                return Err(ApiError::NotFound("group"));
                            }
                            Ok(Plan::new(decide(group)?, org))
                        },
                    )
                    .await?;
                let response = pb::GroupResponse {
                    group: Some(group_to_pb(&written.state, written.state.sequence())),
                    details: Some(details(&written.events, written.state.sequence(), Some(org))),
                };
                Ok((tx, response, written.position()))
            },
        )
        .await?;
    Ok(Response::new(response))
}

pub(super) async fn add_group(
    api: &Api,
    request: Request<pb::AddGroupRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.get_ref().clone();
    let mut p = Parser::default();
    let display_name = p.parse("display_name", DisplayName::parse(req.display_name.clone()));
    let members = parse_members(&mut p, "member_ids", &req.member_ids);
    let fresh = req.group_id.is_empty();
    let id = if req.group_id.is_empty() {
        Some(AggregateId::new())
    } else {
        p.id("group_id", &req.group_id)
    };
    p.finish()?;
    let (Some(display_name), Some(id)) = (display_name, id) else {
        return Err(ApiError::invalid("display_name", "is required").into());
    };
    let caller_ref = &caller;
    let (req_ref, members, display_name) = (&req, &members, &display_name);
    let response = api
        .exec
        .run(
            &caller,
            "AddGroup",
            Api::idempotency_key(&request),
            request.get_ref(),
            |mut tx| async move {
                let org = target_org(api, caller_ref, &req_ref.org_id).await?;
                if !members.is_empty() {
                    // No member may be removed between this check and the commit.
                    let conn = tx.conn().await?;
                    lock_users(&mut *conn, caller_ref.instance_id, members, false).await?;
                    check_members(conn, caller_ref, members).await?;
                }
                let command = AddGroup {
                    org_id: org,
                    display_name: display_name.clone(),
                    external_id: opt(&req_ref.external_id),
                    description: opt(&req_ref.description),
                };
                let written: Written<Group> = api
                    .exec
                    .change_new(&mut tx, caller_ref, id, Some(0), fresh, |group: &Group| {
                        let mut decision = group.add(command.clone())?;
                        if !members.is_empty() {
                            let after = crate::api::preview(group, &decision, &template(caller_ref, id))?;
                            decision.merge(after.add_members(members)?);
                        }
                        Ok(Plan::new(decision, org))
                    })
                    .await
                    .map_err(already_exists("a group"))?;
                let response = pb::GroupResponse {
                    group: Some(group_to_pb(&written.state, written.state.sequence())),
                    details: Some(details(&written.events, written.state.sequence(), Some(org))),
                };
                Ok((tx, response, written.position()))
            },
        )
        .await?;
    Ok(Response::new(response))
}

pub(super) async fn update_group(
    api: &Api,
    request: Request<pb::UpdateGroupRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let req = request.get_ref().clone();
    let id = group_id(&req.group_id)?;
    let mut p = Parser::default();
    let display_name = opt(&req.display_name).and_then(|d| p.parse("display_name", DisplayName::parse(d)));
    let mut change = GroupChange {
        display_name,
        ..GroupChange::default()
    };
    for field in &req.fields {
        match field.as_str() {
            "external_id" => change.external_id = Some(opt(&req.external_id)),
            "description" => change.description = Some(opt(&req.description)),
            "display_name" => {}
            other => p.fail("fields", format!("unknown field {other:?}")),
        }
    }
    p.finish()?;
    group_command(
        api,
        request,
        "UpdateGroup",
        id,
        req.expected_sequence,
        Vec::new(),
        move |g| Ok(g.change(change.clone())?),
    )
    .await
}

pub(super) async fn remove_group(
    api: &Api,
    request: Request<pb::GroupIdRequest>,
) -> Result<Response<pb::RemoveGroupResponse>, Status> {
    let req = request.get_ref().clone();
    let id = group_id(&req.group_id)?;
    let response = group_command(
        api,
        request,
        "RemoveGroup",
        id,
        req.expected_sequence,
        Vec::new(),
        |g| Ok(g.remove()?),
    )
    .await?;
    Ok(Response::new(pb::RemoveGroupResponse {
        details: response.into_inner().details,
    }))
}

/// `ModifyGroup`: one atomic command from several changes.
pub(super) async fn modify_group(
    api: &Api,
    request: Request<pb::ModifyGroupRequest>,
) -> Result<Response<pb::GroupResponse>, Status> {
    let caller = api.caller(&request).await?;
    let req = request.get_ref().clone();
    let id = group_id(&req.group_id)?;
    let mut p = Parser::default();
    let display_name = opt(&req.display_name).and_then(|d| p.parse("display_name", DisplayName::parse(d)));
    let mut change = GroupChange {
        display_name,
        ..GroupChange::default()
    };
    for field in &req.fields {
        match field.as_str() {
            "external_id" => change.external_id = Some(opt(&req.external_id)),
            "description" => change.description = Some(opt(&req.description)),
            "display_name" => {}
            other => p.fail("fields", format!("unknown field {other:?}")),
        }
    }
    let add = parse_members(&mut p, "add_user_ids", &req.add_user_ids);
    let remove = parse_members(&mut p, "remove_user_ids", &req.remove_user_ids);
    let set = parse_members(&mut p, "set_user_ids", &req.set_user_ids);
    p.finish()?;
    let mut new_members: Vec<AggregateId> = add.clone();
    if req.replace_members {
        new_members.extend(set.iter().copied());
    }
    let replace = req.replace_members;
    let tpl = template(&caller, id);
    group_command(
        api,
        request,
        "ModifyGroup",
        id,
        req.expected_sequence,
        new_members,
        move |group| {
            let mut decision = group.change(change.clone())?;
            let mut state = crate::api::preview(group, &decision, &tpl)?;
            for step in 0..3 {
                let next = match step {
                    0 if replace => state.set_members(&set)?,
                    1 if !add.is_empty() => state.add_members(&add)?,
                    2 if !remove.is_empty() => state.remove_members(&remove)?,
                    _ => continue,
                };
                state = crate::api::preview(&state, &next, &tpl)?;
                decision.merge(next);
            }
            Ok(decision)
        },
    )
    .await
}

fn template(caller: &Caller, id: AggregateId) -> cairn_domain::StoredEvent {
    let mut event = crate::email::template(caller, id);
    event.aggregate_type = Group::aggregate_type();
    event
}
