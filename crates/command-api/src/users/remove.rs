//! Removing a user: the removal, its removal from every group it belongs to and the revocation of
//! its tokens commit together.

use super::{expected, user_id, visible_user};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::details;
use crate::error::ApiError;
use crate::exec::{Plan, Written, lock_users};
use cairn_auth::tokens;
use cairn_auth::{Caller, Permission};
use cairn_domain::{Aggregate, AggregateId, Group, User};
use cairn_eventstore::{ExpectedSequence, Push};
use cairn_proto::user::v1 as pb;
use cairn_readmodel::GROUP_PROJECTIONS;
use cairn_readmodel::reads;
use tonic::{Request, Response, Status};

/// Pushes that remove user `id` from every group it belongs to, each pinned to the group's
/// version read here, as of everything committed so far (the groups read model is awaited up to
/// the instance's latest committed event).
async fn memberships_of(api: &Api, caller: &Caller, id: AggregateId) -> Result<Vec<Push>, ApiError> {
    let head = api
        .exec
        .store
        .latest_committed(caller.instance_id)
        .await
        .map_err(ApiError::from)?;
    api.wait(caller, GROUP_PROJECTIONS, Some(head)).await?;
    let groups = reads::groups_of_user(
        &api.exec.pool,
        cairn_readmodel::Scope {
            instance_id: caller.instance_id.as_uuid(),
            org_id: None,
        },
        id.as_uuid(),
    )
    .await
    .map_err(ApiError::from)?;
    let mut memberships = Vec::new();
    for group in groups {
        let group_id = AggregateId::from_uuid(group.id);
        let state: Group = api.exec.load(caller.instance_id, group_id).await?;
        let decision = state.remove_members(&[id]).map_err(ApiError::from)?;
        if !decision.is_empty() {
            memberships.push(Push::from_decision(
                caller.instance_id,
                Group::aggregate_type(),
                group_id,
                ExpectedSequence::Exact(state.sequence()),
                decision,
                &caller.creator(),
                AggregateId::from_uuid(group.org_id),
            ));
        }
    }
    Ok(memberships)
}

pub(super) async fn remove_user(
    api: &Api,
    request: Request<pb::UserIdRequest>,
) -> Result<Response<pb::RemoveUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.get_ref().clone();
    let id = user_id(&req.user_id)?;
    let key = Api::idempotency_key(&request);
    let caller_ref = &caller;
    let pinned = expected(req.expected_sequence);
    // A removal holds a connection while it reads through a second one: never more removals at
    // once than leave the pool a connection for those reads.
    let _permit = api
        .removals
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the service is stopping".into()))?;
    let response = api
        .exec
        .run(
            &caller,
            "RemoveUser",
            key,
            request.get_ref(),
            |mut tx| async move {
                // Commands that add the user to a group wait for this removal (and vice versa), so
                // the groups read below are all the groups it will be in.
                lock_users(tx.conn().await?, caller_ref.instance_id, &[id], true).await?;
                let org = visible_user(api, caller_ref, id).await?.org_id().unwrap_or(id);
                let memberships = memberships_of(api, caller_ref, id).await?;
                // The removal, the memberships and the revocation of the user's tokens commit
                // together.
                let written: Written<User> = api
                    .exec
                    .change(&mut tx, caller_ref, id, pinned, |user: &User| {
                        let mut plan = Plan::new(user.remove()?, org);
                        plan.also = memberships.clone();
                        Ok(plan)
                    })
                    .await
                    .map_err(|e| match e {
                        // A group changed after its membership was read: read them again.
                        ApiError::Aborted(reason) if pinned.is_none() => ApiError::Restart(reason),
                        other => other,
                    })?;
                tokens::revoke_all_of(tx.conn().await?, caller_ref.instance_id, id).await?;
                api.auth.forget("*");
                let response = pb::RemoveUserResponse {
                    details: Some(details(&written.events, written.state.sequence(), Some(org))),
                };
                Ok((tx, response, written.position()))
            },
        )
        .await?;
    Ok(Response::new(response))
}
