//! Reading groups from the read model (after waiting for the caller's `min_position`): one group,
//! filtered pages of groups, and a group's members.

use super::group_id;
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, min_position, opt, timestamp};
use crate::error::ApiError;
use cairn_auth::Permission;
use cairn_proto::group::v1 as pb;
use cairn_readmodel::reads::{self, GroupFilter, Page};
use cairn_readmodel::rows::GroupRow;
use cairn_readmodel::{GROUP_PROJECTIONS, MEMBER_PROJECTIONS};
use tonic::{Request, Response, Status};

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

pub(super) async fn get_group(
    api: &Api,
    request: Request<pb::GetGroupRequest>,
) -> Result<Response<pb::GetGroupResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::Read)?;
    let req = request.into_inner();
    let id = group_id(&req.group_id)?;
    api.wait(&caller, GROUP_PROJECTIONS, min_position(&req.min_position)?)
        .await?;
    let row = reads::get_group(&api.exec.pool, caller.scope(), id.as_uuid())
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound("group"))?;
    Ok(Response::new(pb::GetGroupResponse {
        group: Some(row_to_pb(&row)),
    }))
}

pub(super) async fn list_groups(
    api: &Api,
    request: Request<pb::ListGroupsRequest>,
) -> Result<Response<pb::ListGroupsResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::Read)?;
    let req = request.into_inner();
    let position = min_position(&req.min_position)?;
    api.wait(&caller, GROUP_PROJECTIONS, position).await?;
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
    let (rows, total) = reads::list_groups(&api.exec.pool, caller.scope(), &filter, page)
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

pub(super) async fn list_members(
    api: &Api,
    request: Request<pb::ListMembersRequest>,
) -> Result<Response<pb::ListMembersResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::Read)?;
    let req = request.into_inner();
    let id = group_id(&req.group_id)?;
    let position = min_position(&req.min_position)?;
    // The listing joins the members' user rows, so both projections must have the write.
    api.wait(&caller, MEMBER_PROJECTIONS, position).await?;
    reads::get_group(&api.exec.pool, caller.scope(), id.as_uuid())
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
    let (members, total) = reads::list_members(&api.exec.pool, caller.scope(), id.as_uuid(), page)
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
