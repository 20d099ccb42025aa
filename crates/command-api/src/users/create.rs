//! Adding users: human users (profile, optional password) and machine users, in the organisation
//! [`target_org`] resolves for the caller.

use super::{hash_password, may_vouch, user_response};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, details, opt, profile_from_pb, user_to_pb};
use crate::error::ApiError;
use crate::exec::{Plan, Written, already_exists};
use cairn_auth::{Caller, Permission};
use cairn_domain::user::{AddHumanUser, AddMachineUser};
use cairn_domain::{Aggregate, AggregateId, DisplayName, Org, User, UserName};
use cairn_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

/// The organisation a new user goes to: the requested one, else the caller's, else the instance's
/// default; it must exist and be visible to the caller. Resolutions are remembered for a few
/// seconds ([`crate::api::Api::org_cache`]): creating users in bulk does not re-read the instance
/// and the organisation every time, at the price of accepting, for those seconds, a user in an
/// organisation that was just removed.
pub async fn target_org(api: &Api, caller: &Caller, requested: &str) -> Result<AggregateId, ApiError> {
    let key = (caller.instance_id, requested.to_owned(), caller.org_id);
    if let Some(org) = api.org_cache.get(&key) {
        return Ok(org);
    }
    let org = if !requested.is_empty() {
        requested
            .parse::<AggregateId>()
            .map_err(|e| ApiError::invalid("org_id", e.to_string()))?
    } else if let Some(own) = caller.org_id {
        own
    } else {
        // The instance aggregate, not the read model: a fresh instance has no row yet.
        let instance: cairn_domain::Instance = api
            .exec
            .load(
                caller.instance_id,
                AggregateId::from_uuid(caller.instance_id.as_uuid()),
            )
            .await?;
        instance
            .default_org_id()
            .ok_or_else(|| ApiError::invalid("org_id", "is required"))?
    };
    if !caller.sees_org(org) {
        return Err(ApiError::NotFound("organisation"));
    }
    let state: Org = api.exec.load(caller.instance_id, org).await?;
    if !state.exists() {
        return Err(ApiError::NotFound("organisation"));
    }
    api.org_cache.put(key, org);
    Ok(org)
}

pub(super) async fn add_human_user(
    api: &Api,
    request: Request<pb::AddHumanUserRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.get_ref().clone();
    let mut p = Parser::default();
    let user_name = p.parse("user_name", UserName::parse(req.user_name.clone()));
    let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(api, &caller));
    let fresh = req.user_id.is_empty();
    let id = if req.user_id.is_empty() {
        Some(AggregateId::new())
    } else {
        p.id("user_id", &req.user_id)
    };
    p.finish()?;
    let (Some(user_name), Some(id)) = (user_name, id) else {
        return Err(ApiError::invalid("user_name", "is required").into());
    };
    let password_hash = hash_password("password", &req.password)?;
    let key = Api::idempotency_key(&request);
    let (caller_ref, req_ref) = (&caller, &req);
    let (user_name, profile, password_hash) = (&user_name, &profile, &password_hash);
    let response = api
        .exec
        .run(
            &caller,
            "AddHumanUser",
            key,
            request.get_ref(),
            |mut tx| async move {
                let org = target_org(api, caller_ref, &req_ref.org_id).await?;
                let command = AddHumanUser {
                    org_id: org,
                    user_name: user_name.clone(),
                    profile: profile.clone(),
                    password_hash: password_hash.clone(),
                    active: !req_ref.inactive,
                };
                let caller = caller_ref;
                let written: Written<User> = api
                    .exec
                    .change_new(&mut tx, caller, id, Some(0), fresh, |user: &User| {
                        Ok(Plan::new(user.add_human(command.clone())?, org))
                    })
                    .await
                    .map_err(already_exists("a user"))?;
                let created = written.events.first().map(|e| e.created_at);
                let response = pb::UserResponse {
                    user: Some(user_to_pb(&written.state, created, created)),
                    details: Some(details(&written.events, written.state.sequence(), Some(org))),
                };
                Ok((tx, response, written.position()))
            },
        )
        .await?;
    Ok(Response::new(response))
}

pub(super) async fn add_machine_user(
    api: &Api,
    request: Request<pb::AddMachineUserRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.get_ref().clone();
    let mut p = Parser::default();
    let user_name = p.parse("user_name", UserName::parse(req.user_name.clone()));
    let name = p.parse("name", DisplayName::parse(req.name.clone()));
    let fresh = req.user_id.is_empty();
    let id = if req.user_id.is_empty() {
        Some(AggregateId::new())
    } else {
        p.id("user_id", &req.user_id)
    };
    p.finish()?;
    let (Some(user_name), Some(name), Some(id)) = (user_name, name, id) else {
        return Err(ApiError::invalid("user_name", "is required").into());
    };
    let key = Api::idempotency_key(&request);
    let (caller_ref, req_ref, user_name, name) = (&caller, &req, &user_name, &name);
    let response = api
        .exec
        .run(
            &caller,
            "AddMachineUser",
            key,
            request.get_ref(),
            |mut tx| async move {
                let org = target_org(api, caller_ref, &req_ref.org_id).await?;
                let command = AddMachineUser {
                    org_id: org,
                    user_name: user_name.clone(),
                    name: name.clone(),
                    description: opt(&req_ref.description),
                };
                let caller = caller_ref;
                let written: Written<User> = api
                    .exec
                    .change_new(&mut tx, caller, id, Some(0), fresh, |user: &User| {
                        Ok(Plan::new(user.add_machine(command.clone())?, org))
                    })
                    .await
                    .map_err(already_exists("a user"))?;
                Ok((tx, user_response(&written, org), written.position()))
            },
        )
        .await?;
    Ok(Response::new(response))
}
