//! `cairn.group.v1.GroupService`: the service, whose methods each hand the call to the module of
//! its concern.
//!
//! - `read`: one group, filtered pages of groups, and a group's members, from the read model.
//! - `write`: commands on one group (add, update, modify, remove), run by one helper inside the
//!   keyed transaction.
//! - `members`: the membership commands (add, remove, set), and the checks that the users added
//!   exist.

mod members;
mod read;
mod write;

pub use members::existing_users;
pub use read::row_to_pb;

use crate::api::Api;
use crate::convert::Parser;
use crate::error::ApiError;
use cairn_domain::AggregateId;
use cairn_proto::group::v1 as pb;
use cairn_proto::group::v1::group_service_server::GroupService;
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

fn group_id(value: &str) -> Result<AggregateId, ApiError> {
    let mut p = Parser::default();
    let id = p.id("group_id", value);
    p.finish()?;
    id.ok_or_else(|| ApiError::invalid("group_id", "is required"))
}

#[tonic::async_trait]
impl GroupService for Groups {
    async fn add_group(
        &self,
        request: Request<pb::AddGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        write::add_group(&self.api, request).await
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        read::get_group(&self.api, request).await
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        read::list_groups(&self.api, request).await
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        write::update_group(&self.api, request).await
    }

    async fn add_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        members::add_members(&self.api, request).await
    }

    async fn remove_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        members::remove_members(&self.api, request).await
    }

    async fn set_members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        members::set_members(&self.api, request).await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        read::list_members(&self.api, request).await
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
        write::remove_group(&self.api, request).await
    }
}

impl Groups {
    /// `ModifyGroup`: one atomic command from several changes.
    pub async fn modify(
        &self,
        request: Request<pb::ModifyGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        write::modify_group(&self.api, request).await
    }
}
