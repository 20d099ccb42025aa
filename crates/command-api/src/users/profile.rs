//! Changes to one existing user, each run by [`user_command`] (inside the keyed transaction, on a
//! user the caller may see): profile fields, full replacement, user name, password, phone, and
//! state (deactivate, reactivate, lock, unlock).

use super::{expected, hash_password, may_vouch, user_id, user_response, visible_user};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, opt, profile_from_pb};
use crate::error::ApiError;
use crate::exec::{Plan, Written};
use cairn_auth::Permission;
use cairn_domain::user::{ProfileChange, ReplaceHumanUser};
use cairn_domain::{PhoneNumber, User, UserName};
use cairn_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

/// Runs a command on one user the caller may see and answers with the resulting user.
async fn user_command<T: prost::Message>(
    api: &Api,
    request: Request<T>,
    method: &'static str,
    id: &str,
    expected_sequence: i64,
    decide: impl Fn(&User) -> Result<cairn_domain::Decision, ApiError> + Send + Sync,
) -> Result<Response<pb::UserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let id = user_id(id)?;
    let key = Api::idempotency_key(&request);
    let decide = &decide;
    let response = api
        .exec
        .run(&caller, method, key, request.get_ref(), |mut tx| async {
            // Inside the keyed transaction: a retry of a call that succeeded gets its first
            // response, even when the user is gone by now.
            let org = visible_user(api, &caller, id).await?.org_id().unwrap_or(id);
            let written: Written<User> = api
                .exec
                .change(
                    &mut tx,
                    &caller,
                    id,
                    expected(expected_sequence),
                    |user: &User| {
                        if user.state() == cairn_domain::UserState::Removed || user.org_id().is_none() {
                            return Err(ApiError::NotFound("user"));
                        }
                        Ok(Plan::new(decide(user)?, org))
                    },
                )
                .await?;
            let response = user_response(&written, org);
            Ok((tx, response, written.position()))
        })
        .await?;
    Ok(Response::new(response))
}

pub(super) async fn update_profile(
    api: &Api,
    request: Request<pb::UpdateProfileRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    let caller = api.caller(&request).await?;
    let mut p = Parser::default();
    let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(api, &caller));
    let mut change = ProfileChange::default();
    for field in &req.fields {
        match field.as_str() {
            "name" => change.name = Some(profile.name.clone()),
            "display_name" => change.display_name = Some(profile.display_name.clone()),
            "nick_name" => change.nick_name = Some(profile.nick_name.clone()),
            "profile_url" => change.profile_url = Some(profile.profile_url.clone()),
            "title" => change.title = Some(profile.title.clone()),
            "user_type" => change.user_type = Some(profile.user_type.clone()),
            "preferred_language" => change.preferred_language = Some(profile.preferred_language.clone()),
            "locale" => change.locale = Some(profile.locale.clone()),
            "timezone" => change.timezone = Some(profile.timezone.clone()),
            "emails" => change.emails = Some(profile.emails.clone()),
            "phone_numbers" => change.phone_numbers = Some(profile.phone_numbers.clone()),
            "addresses" => change.addresses = Some(profile.addresses.clone()),
            "external_id" => change.external_id = Some(profile.external_id.clone()),
            "enterprise" => change.enterprise = Some(profile.enterprise.clone()),
            "extra_json" => change.extra = Some(profile.extra.clone()),
            other => p.fail("fields", format!("unknown profile field {other:?}")),
        }
    }
    if req.fields.is_empty() {
        p.fail("fields", "name at least one profile field to change");
    }
    p.finish()?;
    user_command(
        api,
        request,
        "UpdateProfile",
        &req.user_id,
        req.expected_sequence,
        move |user| Ok(user.change_profile(change.clone())?),
    )
    .await
}

pub(super) async fn replace_human_user(
    api: &Api,
    request: Request<pb::ReplaceHumanUserRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    let caller = api.caller(&request).await?;
    let mut p = Parser::default();
    let user_name = p.parse("user_name", UserName::parse(req.user_name.clone()));
    let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(api, &caller));
    p.finish()?;
    let Some(user_name) = user_name else {
        return Err(ApiError::invalid("user_name", "is required").into());
    };
    let password_hash = hash_password("password", &req.password)?;
    let command = ReplaceHumanUser {
        user_name,
        profile,
        password_hash,
        active: !req.inactive,
    };
    user_command(
        api,
        request,
        "ReplaceHumanUser",
        &req.user_id,
        req.expected_sequence,
        move |user| Ok(user.replace_profile(command.clone())?),
    )
    .await
}

pub(super) async fn change_user_name(
    api: &Api,
    request: Request<pb::ChangeUserNameRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    let user_name =
        UserName::parse(req.user_name.clone()).map_err(|e| ApiError::invalid("user_name", e.to_string()))?;
    user_command(
        api,
        request,
        "ChangeUserName",
        &req.user_id,
        req.expected_sequence,
        move |user| Ok(user.change_username(user_name.clone())?),
    )
    .await
}

pub(super) async fn set_password(
    api: &Api,
    request: Request<pb::SetPasswordRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    let hash = hash_password("password", &req.password)?
        .ok_or_else(|| ApiError::invalid("password", "is required"))?;
    user_command(api, request, "SetPassword", &req.user_id, 0, move |user| {
        Ok(user.set_password(hash.clone())?)
    })
    .await
}

pub(super) async fn set_phone(
    api: &Api,
    request: Request<pb::SetPhoneRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    let phone = match opt(&req.phone) {
        None => None,
        Some(phone) => {
            Some(PhoneNumber::parse(phone).map_err(|e| ApiError::invalid("phone", e.to_string()))?)
        }
    };
    user_command(api, request, "SetPhone", &req.user_id, 0, move |user| {
        Ok(user.set_phone(phone.clone())?)
    })
    .await
}

pub(super) async fn deactivate_user(
    api: &Api,
    request: Request<pb::UserIdRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    user_command(
        api,
        request,
        "DeactivateUser",
        &req.user_id,
        req.expected_sequence,
        |u| Ok(u.deactivate()?),
    )
    .await
}

pub(super) async fn reactivate_user(
    api: &Api,
    request: Request<pb::UserIdRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    user_command(
        api,
        request,
        "ReactivateUser",
        &req.user_id,
        req.expected_sequence,
        |u| Ok(u.reactivate()?),
    )
    .await
}

pub(super) async fn lock_user(
    api: &Api,
    request: Request<pb::UserIdRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    user_command(
        api,
        request,
        "LockUser",
        &req.user_id,
        req.expected_sequence,
        |u| Ok(u.lock()?),
    )
    .await
}

pub(super) async fn unlock_user(
    api: &Api,
    request: Request<pb::UserIdRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let req = request.get_ref().clone();
    user_command(
        api,
        request,
        "UnlockUser",
        &req.user_id,
        req.expected_sequence,
        |u| Ok(u.unlock()?),
    )
    .await
}
