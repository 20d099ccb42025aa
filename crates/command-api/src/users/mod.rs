//! `cairn.user.v1.UserService`: the service, whose methods each hand the call to the module of
//! its concern, and what those modules share (the visible-user check, id and password parsing, the
//! user response).
//!
//! - `create`: adding human and machine users, in the organisation [`target_org`] resolves.
//! - `read`: one user with its groups, and filtered, sorted pages of users.
//! - `profile`: changes to one user (profile, replacement, user name, password, phone, state).
//! - `email`: setting an email address, checking and resending its verification code
//!   ([`verify`] and [`resend`] also serve the REST routes).
//! - `remove`: removing a user with its group memberships and tokens.
//! - `tokens`: personal access tokens.

mod create;
mod email;
mod profile;
mod read;
mod remove;
mod tokens;

pub use create::target_org;
pub use email::{resend, verify};

use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, details, user_to_pb};
use crate::error::ApiError;
use crate::exec::Written;
use cairn_auth::{Caller, Permission, Role};
use cairn_domain::{Aggregate, AggregateId, PasswordHash, User};
use cairn_proto::user::v1 as pb;
use cairn_proto::user::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

/// The user service.
#[derive(Clone)]
pub struct Users {
    api: Api,
}

impl Users {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

/// Loads a user the caller may see, or NOT_FOUND.
pub async fn visible_user(api: &Api, caller: &Caller, id: AggregateId) -> Result<User, ApiError> {
    let user: User = api.exec.load(caller.instance_id, id).await?;
    match user.org_id() {
        Some(org) if caller.sees_org(org) && user.state() != cairn_domain::UserState::Removed => Ok(user),
        _ => Err(ApiError::NotFound("user")),
    }
}

fn user_id(value: &str) -> Result<AggregateId, ApiError> {
    let mut p = Parser::default();
    let id = p.id("user_id", value);
    p.finish()?;
    id.ok_or_else(|| ApiError::invalid("user_id", "is required"))
}

fn expected(value: i64) -> Option<i64> {
    (value > 0).then_some(value)
}

fn hash_password(field: &str, password: &str) -> Result<Option<PasswordHash>, ApiError> {
    if password.is_empty() {
        return Ok(None);
    }
    if password.len() < 8 || password.len() > 1024 {
        return Err(ApiError::invalid(field, "must be 8 to 1024 characters"));
    }
    let phc = cairn_secrets::hash_password(password).map_err(|e| ApiError::Internal(e.to_string()))?;
    PasswordHash::parse(phc)
        .map(Some)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whether the caller may mark emails verified: a SCIM provisioner only where its instance trusts
/// its identity provider's emails (the instance's setting, else `CAIRN_TRUST_IDP_EMAILS`).
pub fn may_vouch(api: &Api, caller: &Caller) -> bool {
    caller.require(Permission::VouchForEmail).is_ok()
        && (caller
            .settings
            .scim_emails_verified
            .unwrap_or(api.trust_idp_emails)
            || caller.roles.iter().any(|r| *r != Role::ScimProvisioner))
}

fn user_response(written: &Written<User>, org: AggregateId) -> pb::UserResponse {
    let changed = written.events.last().map(|e| e.created_at);
    pb::UserResponse {
        user: Some(user_to_pb(&written.state, None, changed)),
        details: Some(details(&written.events, written.state.sequence(), Some(org))),
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn add_human_user(
        &self,
        request: Request<pb::AddHumanUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        create::add_human_user(&self.api, request).await
    }

    async fn add_machine_user(
        &self,
        request: Request<pb::AddMachineUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        create::add_machine_user(&self.api, request).await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        read::get_user(&self.api, request).await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        read::list_users(&self.api, request).await
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::update_profile(&self.api, request).await
    }

    async fn replace_human_user(
        &self,
        request: Request<pb::ReplaceHumanUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::replace_human_user(&self.api, request).await
    }

    async fn change_user_name(
        &self,
        request: Request<pb::ChangeUserNameRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::change_user_name(&self.api, request).await
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::set_password(&self.api, request).await
    }

    async fn set_email(
        &self,
        request: Request<pb::SetEmailRequest>,
    ) -> Result<Response<pb::SetEmailResponse>, Status> {
        email::set_email(&self.api, request).await
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        email::verify_email(&self.api, request).await
    }

    async fn resend_email_code(
        &self,
        request: Request<pb::ResendEmailCodeRequest>,
    ) -> Result<Response<pb::SetEmailResponse>, Status> {
        email::resend_email_code(&self.api, request).await
    }

    async fn set_phone(
        &self,
        request: Request<pb::SetPhoneRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::set_phone(&self.api, request).await
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::deactivate_user(&self.api, request).await
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::reactivate_user(&self.api, request).await
    }

    async fn lock_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::lock_user(&self.api, request).await
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        profile::unlock_user(&self.api, request).await
    }

    async fn remove_user(
        &self,
        request: Request<pb::RemoveUserRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        remove::remove_user(&self.api, request).await
    }

    async fn add_personal_access_token(
        &self,
        request: Request<pb::AddPersonalAccessTokenRequest>,
    ) -> Result<Response<pb::AddPersonalAccessTokenResponse>, Status> {
        tokens::add_personal_access_token(&self.api, request).await
    }

    async fn remove_personal_access_token(
        &self,
        request: Request<pb::RemovePersonalAccessTokenRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        tokens::remove_personal_access_token(&self.api, request).await
    }
}
