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

/// The user to erase: one the caller can see that exists, or was removed but not erased yet.
async fn erasable_user(api: &Api, caller: &Caller, id: AggregateId) -> Result<User, ApiError> {
    let user: User = api.exec.load(caller.instance_id, id).await?;
    match user.org_id() {
        Some(org) if caller.sees_org(org) && !user.erased() => Ok(user),
        _ => Err(ApiError::NotFound("user")),
    }
}

/// Destroys the user's data key, in the transaction of its `user.erased`, and drops the stored
/// responses of idempotent commands that name the user (they may hold its profile).
async fn erase_personal_data(
    api: &Api,
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    id: AggregateId,
) -> Result<(), ApiError> {
    api.exec.vault.erase(conn, caller.instance_id, id).await?;
    sqlx::query(
        "DELETE FROM api.commands WHERE instance_id = $1 AND position(convert_to($2, 'UTF8') IN response) > 0",
    )
    .bind(caller.instance_id.as_uuid())
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn remove_user(
    api: &Api,
    request: Request<pb::RemoveUserRequest>,
) -> Result<Response<pb::RemoveUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.get_ref().clone();
    let id = user_id(&req.user_id)?;
    let key = Api::idempotency_key(&request);
    let caller_ref = &caller;
    let pinned = expected(req.expected_sequence);
    let erase = req.erase;
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
                let user = if erase {
                    erasable_user(api, caller_ref, id).await?
                } else {
                    visible_user(api, caller_ref, id).await?
                };
                let org = user.org_id().unwrap_or(id);
                // A user removed earlier (and now erased) is in no group any more.
                let memberships = if user.exists() {
                    memberships_of(api, caller_ref, id).await?
                } else {
                    Vec::new()
                };
                // The removal, the memberships and the revocation of the user's tokens commit
                // together.
                let written: Written<User> = api
                    .exec
                    .change(&mut tx, caller_ref, id, pinned, |user: &User| {
                        let decision = if erase { user.erase()? } else { user.remove()? };
                        let mut plan = Plan::new(decision, org);
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
                if erase {
                    erase_personal_data(api, tx.conn().await?, caller_ref, id).await?;
                }
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
