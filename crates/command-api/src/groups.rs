//! `cairn.group.v1.GroupService`.

use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, details, min_position, opt, timestamp};
use crate::error::ApiError;
use crate::exec::{Plan, Written, already_exists, lock_users};
use crate::users::target_org;
use cairn_auth::{Caller, Permission};
use cairn_domain::group::{AddGroup, GroupChange};
use cairn_domain::{Aggregate, AggregateId, DisplayName, Group};
use cairn_proto::group::v1 as pb;
use cairn_proto::group::v1::group_service_server::GroupService;
use cairn_readmodel::reads::{self, GroupFilter, Page};
use cairn_readmodel::rows::GroupRow;
use cairn_readmodel::{GROUP_PROJECTIONS, MEMBER_PROJECTIONS};
use std::collections::HashSet;
use tonic::{Request, Response, Status};

/// At most this many members per call.
pub const MAX_MEMBERS_PER_CALL: usize = 10_000;

/// The group service.
#[derive(Clone)]
pub struct Groups {
    api: Api,
}

impl Groups {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

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

/// A group row on the wire.
pub fn row_to_pb(row: &GroupRow) -> pb::Group {
    pb::Group {
        id: row.id.to_string(),
        org_id: row.org_id.to_string(),
        display_name: row.display_name.clone(),
        external_id: row.external_id.clone().unwrap_or_default(),
        description: row.description.clone().unwrap_or_default(),
        member_count: row.member_count.max(0) as u64,
        created_at: Some(timestamp(row.created_at)),
        changed_at: Some(timestamp(row.changed_at)),
        sequence: row.sequence,
    }
}

/// The ids among `users` that are users of the caller's instance and not removed, read from the
/// event store itself (no read-model lag).
pub async fn existing_users(
    api: &Api,
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
    .fetch_all(&api.exec.pool)
    .await?;
    Ok(found.into_iter().map(AggregateId::from_uuid).collect())
}

fn parse_members(p: &mut Parser, field: &str, ids: &[String]) -> Vec<AggregateId> {
    if ids.len() > MAX_MEMBERS_PER_CALL {
        p.fail(field, format!("at most {MAX_MEMBERS_PER_CALL} per call"));
        return Vec::new();
    }
    ids.iter()
        .enumerate()
        .filter_map(|(i, id)| p.id(&format!("{field}[{i}]"), id))
        .collect()
}

async fn check_members(api: &Api, caller: &Caller, members: &[AggregateId]) -> Result<(), ApiError> {
    if members.is_empty() {
        return Ok(());
    }
    let existing = existing_users(api, caller, members).await?;
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

async fn visible_group(api: &Api, caller: &Caller, id: AggregateId) -> Result<Group, ApiError> {
    let group: Group = api.exec.load(caller.instance_id, id).await?;
    match group.org_id() {
        Some(org) if group.exists() && caller.sees_org(org) => Ok(group),
        _ => Err(ApiError::NotFound("group")),
    }
}

fn group_id(value: &str) -> Result<AggregateId, ApiError> {
    let mut p = Parser::default();
    let id = p.id("group_id", value);
    p.finish()?;
    id.ok_or_else(|| ApiError::invalid("group_id", "is required"))
}

impl Groups {
    /// Runs a command on one group the caller may see. `members` are users the command adds: they
    /// must exist. Both checks run inside the keyed transaction, after the key lookup, so a retry
    /// of a call that succeeded gets its first response even when the group or a member is gone.
    async fn group_command<T: prost::Message>(
        &self,
        request: Request<T>,
        method: &'static str,
        id: AggregateId,
        expected_sequence: i64,
        members: Vec<AggregateId>,
        decide: impl Fn(&Group) -> Result<cairn_domain::Decision, ApiError> + Send + Sync,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let api = &self.api;
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
                        lock_users(tx.conn().await?, caller_ref.instance_id, members, false).await?;
                        check_members(api, caller_ref, members).await?;
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
}

#[tonic::async_trait]
impl GroupService for Groups {
    async fn add_group(
        &self,
        request: Request<pb::AddGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let caller = self.api.caller(&request).await?;
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
        let api = &self.api;
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
                        lock_users(tx.conn().await?, caller_ref.instance_id, members, false).await?;
                        check_members(api, caller_ref, members).await?;
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

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let id = group_id(&req.group_id)?;
        self.api
            .wait(&caller, GROUP_PROJECTIONS, min_position(&req.min_position)?)
            .await?;
        let row = reads::get_group(&self.api.exec.pool, caller.scope(), id.as_uuid())
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("group"))?;
        Ok(Response::new(pb::GetGroupResponse {
            group: Some(row_to_pb(&row)),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let position = min_position(&req.min_position)?;
        self.api.wait(&caller, GROUP_PROJECTIONS, position).await?;
        let mut p = Parser::default();
        let org_id = opt(&req.org_id).and_then(|o| p.parse("org_id", o.parse::<uuid::Uuid>()));
        let member_id = opt(&req.member_id).and_then(|o| p.parse("member_id", o.parse::<uuid::Uuid>()));
        p.finish()?;
        let query = req.query.unwrap_or_default();
        if query.limit > 1000 {
            return Err(ApiError::invalid("query.limit", "at most 1000").into());
        }
        let filter = GroupFilter {
            display_name: opt(&req.display_name),
            external_id: opt(&req.external_id),
            org_id,
            member_id,
        };
        let page = Page {
            offset: query.offset,
            limit: if query.limit == 0 { 100 } else { query.limit },
            ascending: query.asc || query.limit == 0,
        };
        let (rows, total) = reads::list_groups(&self.api.exec.pool, caller.scope(), &filter, page)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: rows.iter().map(row_to_pb).collect(),
            details: Some(cairn_proto::common::v1::ListDetails {
                total_result: total,
                processed_position: position.map(|p| p.to_string()).unwrap_or_default(),
            }),
        }))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let req = request.get_ref().clone();
        let id = group_id(&req.group_id)?;
        let mut p = Parser::default();
        let display_name =
            opt(&req.display_name).and_then(|d| p.parse("display_name", DisplayName::parse(d)));
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
        self.group_command(
            request,
            "UpdateGroup",
            id,
            req.expected_sequence,
            Vec::new(),
            move |g| Ok(g.change(change.clone())?),
        )
        .await
    }

    async fn add_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let (id, members, expected) = members_request(&request)?;
        self.group_command(request, "AddMembers", id, expected, members.clone(), move |g| {
            Ok(g.add_members(&members)?)
        })
        .await
    }

    async fn remove_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let req = request.get_ref().clone();
        let id = group_id(&req.group_id)?;
        let mut p = Parser::default();
        let members = parse_members(&mut p, "user_ids", &req.user_ids);
        p.finish()?;
        self.group_command(
            request,
            "RemoveMembers",
            id,
            req.expected_sequence,
            Vec::new(),
            move |g| Ok(g.remove_members(&members)?),
        )
        .await
    }

    async fn set_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let (id, members, expected) = members_request(&request)?;
        self.group_command(request, "SetMembers", id, expected, members.clone(), move |g| {
            Ok(g.set_members(&members)?)
        })
        .await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let id = group_id(&req.group_id)?;
        let position = min_position(&req.min_position)?;
        // The listing joins the members' user rows, so both projections must have the write.
        self.api.wait(&caller, MEMBER_PROJECTIONS, position).await?;
        reads::get_group(&self.api.exec.pool, caller.scope(), id.as_uuid())
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("group"))?;
        let query = req.query.unwrap_or_default();
        let page = Page {
            offset: query.offset,
            limit: if query.limit == 0 {
                1000
            } else {
                query.limit.min(10_000)
            },
            ascending: true,
        };
        let (members, total) = reads::list_members(&self.api.exec.pool, caller.scope(), id.as_uuid(), page)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members
                .into_iter()
                .map(|m| pb::Member {
                    user_id: m.user_id.to_string(),
                    user_name: m.user_name.unwrap_or_default(),
                    display_name: m.display_name.unwrap_or_default(),
                })
                .collect(),
            details: Some(cairn_proto::common::v1::ListDetails {
                total_result: total,
                processed_position: position.map(|p| p.to_string()).unwrap_or_default(),
            }),
        }))
    }

    async fn modify_group(
        &self,
        request: Request<pb::ModifyGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        self.modify(request).await
    }

    async fn remove_group(
        &self,
        request: Request<pb::GroupIdRequest>,
    ) -> Result<Response<pb::RemoveGroupResponse>, Status> {
        let req = request.get_ref().clone();
        let id = group_id(&req.group_id)?;
        let response = self
            .group_command(
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
}

impl Groups {
    /// `ModifyGroup`: one atomic command from several changes.
    pub async fn modify(
        &self,
        request: Request<pb::ModifyGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        let req = request.get_ref().clone();
        let id = group_id(&req.group_id)?;
        let mut p = Parser::default();
        let display_name =
            opt(&req.display_name).and_then(|d| p.parse("display_name", DisplayName::parse(d)));
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
        self.group_command(
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

fn template(caller: &Caller, id: AggregateId) -> cairn_domain::StoredEvent {
    let mut event = crate::email::template(caller, id);
    event.aggregate_type = Group::aggregate_type();
    event
}
