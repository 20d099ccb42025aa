//! Reading users from the read model (after waiting for the caller's `min_position`): one user
//! with its groups, and filtered, sorted pages of users.

use super::user_id;
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, min_position, opt, row_to_pb};
use crate::error::ApiError;
use cairn_auth::Permission;
use cairn_proto::user::v1 as pb;
use cairn_readmodel::reads::{self, Page, UserFilter, UserSort};
use cairn_readmodel::{USER_PROJECTIONS, USER_WITH_GROUPS_PROJECTIONS};
use tonic::{Request, Response, Status};

pub(super) async fn get_user(
    api: &Api,
    request: Request<pb::GetUserRequest>,
) -> Result<Response<pb::GetUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::Read)?;
    let req = request.into_inner();
    let id = user_id(&req.user_id)?;
    let position = min_position(&req.min_position)?;
    api.wait(&caller, USER_WITH_GROUPS_PROJECTIONS, position).await?;
    let row = reads::get_user(&api.exec.pool, caller.scope(), id.as_uuid())
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound("user"))?;
    let groups = reads::groups_of_user(&api.exec.pool, caller.scope(), id.as_uuid())
        .await
        .map_err(ApiError::from)?;
    Ok(Response::new(pb::GetUserResponse {
        user: Some(row_to_pb(&row)?),
        group_ids: groups.iter().map(|g| g.id.to_string()).collect(),
    }))
}

pub(super) async fn list_users(
    api: &Api,
    request: Request<pb::ListUsersRequest>,
) -> Result<Response<pb::ListUsersResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::Read)?;
    let req = request.into_inner();
    let position = min_position(&req.min_position)?;
    api.wait(&caller, USER_PROJECTIONS, position).await?;
    let mut p = Parser::default();
    let org_id = opt(&req.org_id).and_then(|o| p.parse("org_id", o.parse::<uuid::Uuid>()));
    p.finish()?;
    let state = match pb::UserState::try_from(req.state).unwrap_or_default() {
        pb::UserState::Active => Some("active".to_owned()),
        pb::UserState::Inactive => Some("inactive".to_owned()),
        pb::UserState::Locked => Some("locked".to_owned()),
        pb::UserState::Unspecified => None,
    };
    let filter = UserFilter {
        user_name: opt(&req.user_name),
        email: opt(&req.email),
        state,
        org_id,
        external_id: opt(&req.external_id),
    };
    let sort = match pb::UserField::try_from(req.sort_by).unwrap_or_default() {
        pb::UserField::UserName => UserSort::UserName,
        pb::UserField::DisplayName => UserSort::DisplayName,
        pb::UserField::FamilyName => UserSort::FamilyName,
        pb::UserField::GivenName => UserSort::GivenName,
        pb::UserField::Email => UserSort::Email,
        pb::UserField::ChangedAt => UserSort::ChangedAt,
        pb::UserField::CreatedAt | pb::UserField::Unspecified => UserSort::CreatedAt,
    };
    let query = req.query.unwrap_or_default();
    if query.limit > 1000 {
        return Err(ApiError::invalid("query.limit", "at most 1000").into());
    }
    let page = Page {
        offset: query.offset,
        limit: if query.limit == 0 { 100 } else { query.limit },
        ascending: query.asc || query.limit == 0,
    };
    let (rows, total) = reads::list_users(&api.exec.pool, caller.scope(), &filter, sort, page)
        .await
        .map_err(ApiError::from)?;
    Ok(Response::new(pb::ListUsersResponse {
        users: rows.iter().map(row_to_pb).collect::<Result<_, _>>()?,
        details: Some(cairn_proto::common::v1::ListDetails {
            total_result: total,
            processed_position: position.map(|p| p.to_string()).unwrap_or_default(),
        }),
    }))
}
