//! `cairn.user.v1.UserService`.

use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{
    Parser, details, from_timestamp, min_position, opt, profile_from_pb, row_to_pb, user_to_pb,
};
use crate::email::{code_matches, new_code, set_email_decision};
use crate::error::ApiError;
use crate::exec::{Plan, Written, already_exists, lock_users};
use cairn_auth::tokens::{self, pat_uuid};
use cairn_auth::{Caller, NewToken, Permission, Role, TokenKind};
use cairn_domain::user::{AddHumanUser, AddMachineUser, AddPat, ProfileChange, ReplaceHumanUser};
use cairn_domain::{
    Aggregate, AggregateId, DisplayName, EmailAddress, Group, Org, PasswordHash, PhoneNumber, User, UserName,
};
use cairn_eventstore::{ExpectedSequence, Push};
use cairn_proto::user::v1 as pb;
use cairn_proto::user::v1::user_service_server::UserService;
use cairn_readmodel::reads::{self, Page, UserFilter, UserSort};
use cairn_readmodel::{GROUP_PROJECTIONS, USER_PROJECTIONS, USER_WITH_GROUPS_PROJECTIONS};
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

/// Whether the caller may mark emails verified.
pub fn may_vouch(api: &Api, caller: &Caller) -> bool {
    caller.require(Permission::VouchForEmail).is_ok()
        && (api.trust_idp_emails || caller.roles.iter().any(|r| *r != Role::ScimProvisioner))
}

impl Users {
    /// Runs a command on one user the caller may see and answers with the resulting user.
    async fn user_command<T: prost::Message>(
        &self,
        request: Request<T>,
        method: &'static str,
        id: &str,
        expected_sequence: i64,
        decide: impl Fn(&User) -> Result<cairn_domain::Decision, ApiError> + Send + Sync,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let id = user_id(id)?;
        let key = Api::idempotency_key(&request);
        let api = &self.api;
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
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let req = request.get_ref().clone();
        let mut p = Parser::default();
        let user_name = p.parse("user_name", UserName::parse(req.user_name.clone()));
        let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(&self.api, &caller));
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
        let api = &self.api;
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

    async fn add_machine_user(
        &self,
        request: Request<pb::AddMachineUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
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
        let api = &self.api;
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

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let id = user_id(&req.user_id)?;
        let position = min_position(&req.min_position)?;
        self.api
            .wait(&caller, USER_WITH_GROUPS_PROJECTIONS, position)
            .await?;
        let row = reads::get_user(&self.api.exec.pool, caller.scope(), id.as_uuid())
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("user"))?;
        let groups = reads::groups_of_user(&self.api.exec.pool, caller.scope(), id.as_uuid())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(row_to_pb(&row)?),
            group_ids: groups.iter().map(|g| g.id.to_string()).collect(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let position = min_position(&req.min_position)?;
        self.api.wait(&caller, USER_PROJECTIONS, position).await?;
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
        let (rows, total) = reads::list_users(&self.api.exec.pool, caller.scope(), &filter, sort, page)
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

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        let caller = self.api.caller(&request).await?;
        let mut p = Parser::default();
        let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(&self.api, &caller));
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
        self.user_command(
            request,
            "UpdateProfile",
            &req.user_id,
            req.expected_sequence,
            move |user| Ok(user.change_profile(change.clone())?),
        )
        .await
    }

    async fn replace_human_user(
        &self,
        request: Request<pb::ReplaceHumanUserRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        let caller = self.api.caller(&request).await?;
        let mut p = Parser::default();
        let user_name = p.parse("user_name", UserName::parse(req.user_name.clone()));
        let profile = profile_from_pb(&mut p, req.profile.clone(), may_vouch(&self.api, &caller));
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
        self.user_command(
            request,
            "ReplaceHumanUser",
            &req.user_id,
            req.expected_sequence,
            move |user| Ok(user.replace_profile(command.clone())?),
        )
        .await
    }

    async fn change_user_name(
        &self,
        request: Request<pb::ChangeUserNameRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        let user_name = UserName::parse(req.user_name.clone())
            .map_err(|e| ApiError::invalid("user_name", e.to_string()))?;
        self.user_command(
            request,
            "ChangeUserName",
            &req.user_id,
            req.expected_sequence,
            move |user| Ok(user.change_username(user_name.clone())?),
        )
        .await
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        let hash = hash_password("password", &req.password)?
            .ok_or_else(|| ApiError::invalid("password", "is required"))?;
        self.user_command(request, "SetPassword", &req.user_id, 0, move |user| {
            Ok(user.set_password(hash.clone())?)
        })
        .await
    }

    async fn set_email(
        &self,
        request: Request<pb::SetEmailRequest>,
    ) -> Result<Response<pb::SetEmailResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let req = request.get_ref().clone();
        let id = user_id(&req.user_id)?;
        let email =
            EmailAddress::parse(req.email.clone()).map_err(|e| ApiError::invalid("email", e.to_string()))?;
        let mode = pb::EmailVerification::try_from(req.verification).unwrap_or_default();
        let (verified, return_code) = match mode {
            pb::EmailVerification::IsVerified => (true, false),
            pb::EmailVerification::ReturnCode => (false, true),
            _ => (false, false),
        };
        if (verified || return_code) && !may_vouch(&self.api, &caller) {
            return Err(ApiError::PermissionDenied(
                "only privileged callers may mark emails verified or receive codes",
            )
            .into());
        }
        let url_template = opt(&req.url_template);
        let key = Api::idempotency_key(&request);
        let api = &self.api;
        let caller_ref = &caller;
        let code_out = std::sync::Mutex::new(None);
        let code_slot = &code_out;
        let (email, url_template) = (&email, &url_template);
        let mut response = api
            .exec
            .run(&caller, "SetEmail", key, request.get_ref(), |mut tx| async move {
                let org = visible_user(api, caller_ref, id).await?.org_id().unwrap_or(id);
                let written: Written<User> = api
                    .exec
                    .change(&mut tx, caller_ref, id, None, |user: &User| {
                        let (decision, code) = set_email_decision(
                            api,
                            caller_ref,
                            user,
                            id,
                            email.clone(),
                            verified,
                            url_template.clone(),
                            return_code,
                        )?;
                        *code_slot.lock().unwrap_or_else(|p| p.into_inner()) = code;
                        Ok(Plan::new(decision, org))
                    })
                    .await?;
                let base = user_response(&written, org);
                let response = pb::SetEmailResponse {
                    user: base.user,
                    details: base.details,
                    verification_code: String::new(),
                };
                Ok((tx, response, written.position()))
            })
            .await?;
        if return_code && let Some(code) = code_out.into_inner().unwrap_or_else(|p| p.into_inner()) {
            response.verification_code = code.to_string();
        }
        Ok(Response::new(response))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let req = request.into_inner();
        let id = user_id(&req.user_id)?;
        let (written, org) = verify(&self.api, &caller, id, &req.code).await?;
        Ok(Response::new(user_response(&written, org)))
    }

    async fn resend_email_code(
        &self,
        request: Request<pb::ResendEmailCodeRequest>,
    ) -> Result<Response<pb::SetEmailResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let req = request.into_inner();
        if req.return_code && !may_vouch(&self.api, &caller) {
            return Err(ApiError::PermissionDenied("only privileged callers may receive codes").into());
        }
        let id = user_id(&req.user_id)?;
        let (written, org, code) =
            resend(&self.api, &caller, id, opt(&req.url_template), req.return_code).await?;
        let base = user_response(&written, org);
        Ok(Response::new(pb::SetEmailResponse {
            user: base.user,
            details: base.details,
            verification_code: if req.return_code {
                code.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn set_phone(
        &self,
        request: Request<pb::SetPhoneRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        let phone = match opt(&req.phone) {
            None => None,
            Some(phone) => {
                Some(PhoneNumber::parse(phone).map_err(|e| ApiError::invalid("phone", e.to_string()))?)
            }
        };
        self.user_command(request, "SetPhone", &req.user_id, 0, move |user| {
            Ok(user.set_phone(phone.clone())?)
        })
        .await
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        self.user_command(
            request,
            "DeactivateUser",
            &req.user_id,
            req.expected_sequence,
            |u| Ok(u.deactivate()?),
        )
        .await
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        self.user_command(
            request,
            "ReactivateUser",
            &req.user_id,
            req.expected_sequence,
            |u| Ok(u.reactivate()?),
        )
        .await
    }

    async fn lock_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        self.user_command(request, "LockUser", &req.user_id, req.expected_sequence, |u| {
            Ok(u.lock()?)
        })
        .await
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let req = request.get_ref().clone();
        self.user_command(request, "UnlockUser", &req.user_id, req.expected_sequence, |u| {
            Ok(u.unlock()?)
        })
        .await
    }

    async fn remove_user(
        &self,
        request: Request<pb::UserIdRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::ManageUsers)?;
        let req = request.get_ref().clone();
        let id = user_id(&req.user_id)?;
        let key = Api::idempotency_key(&request);
        let api = &self.api;
        let caller_ref = &caller;
        let pinned = expected(req.expected_sequence);
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

    async fn add_personal_access_token(
        &self,
        request: Request<pb::AddPersonalAccessTokenRequest>,
    ) -> Result<Response<pb::AddPersonalAccessTokenResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.get_ref().clone();
        let id = user_id(&req.user_id)?;
        let roles = req
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        if roles.is_empty() {
            return Err(ApiError::invalid("roles", "name at least one role").into());
        }
        let expires_at = req.expires_at.as_ref().and_then(from_timestamp);
        let api = &self.api;
        let caller_ref = &caller;
        let secret = std::sync::Mutex::new(None);
        let secret_slot = &secret;
        let roles = &roles;
        let mut response = api
            .exec
            .run(
                &caller,
                "AddPersonalAccessToken",
                Api::idempotency_key(&request),
                request.get_ref(),
                |mut tx| async move {
                    let org = visible_user(api, caller_ref, id).await?.org_id().unwrap_or(id);
                    let tokens::Issued {
                        id: token_id,
                        secret: plaintext,
                    } = tokens::issue(
                        tx.conn().await?,
                        &NewToken {
                            instance_id: caller_ref.instance_id,
                            org_id: caller_ref.org_id,
                            principal_id: id,
                            kind: TokenKind::Pat,
                            roles: roles.clone(),
                            description: None,
                            expires_at,
                        },
                    )
                    .await?;
                    let pat = pat_uuid(&token_id);
                    let now = api.exec.clock.now();
                    let written: Written<User> = api
                        .exec
                        .change(&mut tx, caller_ref, id, None, |user: &User| {
                            Ok(Plan::new(
                                user.add_pat(
                                    AddPat {
                                        token_id: pat,
                                        expires_at,
                                    },
                                    now,
                                )?,
                                org,
                            ))
                        })
                        .await?;
                    *secret_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(plaintext);
                    let response = pb::AddPersonalAccessTokenResponse {
                        token_id,
                        token: String::new(),
                        details: Some(details(&written.events, written.state.sequence(), Some(org))),
                    };
                    Ok((tx, response, written.position()))
                },
            )
            .await?;
        // A replayed request (same idempotency key) cannot show the secret again.
        if let Some(plaintext) = secret.into_inner().unwrap_or_else(|p| p.into_inner()) {
            response.token = plaintext.to_string();
        }
        Ok(Response::new(response))
    }

    async fn remove_personal_access_token(
        &self,
        request: Request<pb::RemovePersonalAccessTokenRequest>,
    ) -> Result<Response<pb::UserResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.get_ref().clone();
        let pat = pat_uuid(&req.token_id);
        let id = user_id(&req.user_id)?;
        let key = Api::idempotency_key(&request);
        let api = &self.api;
        let (caller_ref, token_id) = (&caller, &req.token_id);
        let response = api
            .exec
            .run(
                &caller,
                "RemovePersonalAccessToken",
                key,
                request.get_ref(),
                |mut tx| async move {
                    let org = visible_user(api, caller_ref, id).await?.org_id().unwrap_or(id);
                    // The revocation and the event commit together.
                    if !tokens::revoke_active(tx.conn().await?, caller_ref.instance_id, id, token_id).await? {
                        return Err(ApiError::NotFound("token"));
                    }
                    let written: Written<User> = api
                        .exec
                        .change(&mut tx, caller_ref, id, None, |user: &User| {
                            Ok(Plan::new(user.remove_pat(pat)?, org))
                        })
                        .await?;
                    Ok((tx, user_response(&written, org), written.position()))
                },
            )
            .await?;
        self.api.auth.forget(&req.token_id);
        Ok(Response::new(response))
    }
}

/// Checks a verification code: the outcome (verified, or a failed attempt, possibly voiding the
/// code) is committed either way; a failure is then answered as an error.
pub async fn verify(
    api: &Api,
    caller: &Caller,
    id: AggregateId,
    code: &str,
) -> Result<(Written<User>, AggregateId), ApiError> {
    if code.trim().is_empty() || code.len() > 64 {
        return Err(ApiError::invalid("code", "must be 1 to 64 characters"));
    }
    let user = visible_user(api, caller, id).await?;
    let org = user.org_id().unwrap_or(id);
    let outcome = std::sync::Mutex::new(None::<(bool, Option<&'static str>)>);
    let mut tx = crate::exec::Tx::lazy(api.exec.pool.clone());
    let written: Written<User> = api
        .exec
        .change(&mut tx, caller, id, None, |user: &User| {
            let pending = user.pending_code().ok_or_else(|| {
                ApiError::FailedPrecondition("no valid verification code; request a new one".into())
            })?;
            let matches = code_matches(api, caller, id, &pending.encrypted, code);
            let result = user.verify_email(matches, api.exec.clock.now(), api.email.max_attempts)?;
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some((result.verified, result.reason));
            Ok(Plan::new(result.decision, org))
        })
        .await?;
    tx.commit().await?;
    if let Some(position) = written.position() {
        api.exec.store.announce(position);
    }
    match outcome.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((true, _)) => Ok((written, org)),
        Some((false, Some("expired"))) => Err(ApiError::FailedPrecondition(
            "the verification code has expired; request a new one".into(),
        )),
        _ => {
            let voided = written.state.pending_code().is_none_or(|c| c.voided);
            Err(if voided {
                ApiError::FailedPrecondition(
                    "wrong verification code; too many attempts, request a new one".into(),
                )
            } else {
                ApiError::invalid("code", "wrong verification code")
            })
        }
    }
}

/// Makes a new code for the user's current email (voiding the old one).
pub async fn resend(
    api: &Api,
    caller: &Caller,
    id: AggregateId,
    url_template: Option<String>,
    return_code: bool,
) -> Result<(Written<User>, AggregateId, cairn_secrets::Zeroizing<String>), ApiError> {
    let user = visible_user(api, caller, id).await?;
    let org = user.org_id().unwrap_or(id);
    let (code, plaintext) = new_code(api, caller, id, url_template, return_code)?;
    let mut tx = crate::exec::Tx::lazy(api.exec.pool.clone());
    let written: Written<User> = api
        .exec
        .change(&mut tx, caller, id, None, |user: &User| {
            Ok(Plan::new(user.add_email_code(code.clone())?, org))
        })
        .await?;
    tx.commit().await?;
    if let Some(position) = written.position() {
        api.exec.store.announce(position);
    }
    Ok((written, org, plaintext))
}
