//! A user's email address and its verification: setting an address (marked verified, or with a
//! code sent or returned to the caller), checking a code ([`verify`]) and making a new one
//! ([`resend`]); the last two also serve the REST routes.

use super::{may_vouch, user_id, user_response, visible_user};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::opt;
use crate::email::{code_matches, new_code, set_email_decision};
use crate::error::ApiError;
use crate::exec::{Plan, Written};
use cairn_auth::{Caller, Permission};
use cairn_domain::{AggregateId, EmailAddress, User};
use cairn_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

pub(super) async fn set_email(
    api: &Api,
    request: Request<pb::SetEmailRequest>,
) -> Result<Response<pb::SetEmailResponse>, Status> {
    let caller = api.caller(&request).await?;
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
    if (verified || return_code) && !may_vouch(api, &caller) {
        return Err(ApiError::PermissionDenied(
            "only privileged callers may mark emails verified or receive codes",
        )
        .into());
    }
    let url_template = opt(&req.url_template);
    let key = Api::idempotency_key(&request);
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

pub(super) async fn verify_email(
    api: &Api,
    request: Request<pb::VerifyEmailRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.into_inner();
    let id = user_id(&req.user_id)?;
    let (written, org) = verify(api, &caller, id, &req.code).await?;
    Ok(Response::new(user_response(&written, org)))
}

pub(super) async fn resend_email_code(
    api: &Api,
    request: Request<pb::ResendEmailCodeRequest>,
) -> Result<Response<pb::SetEmailResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::ManageUsers)?;
    let req = request.into_inner();
    if req.return_code && !may_vouch(api, &caller) {
        return Err(ApiError::PermissionDenied("only privileged callers may receive codes").into());
    }
    let id = user_id(&req.user_id)?;
    let (written, org, code) = resend(api, &caller, id, opt(&req.url_template), req.return_code).await?;
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
            let max_attempts = caller
                .settings
                .email_code_max_attempts
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(api.email.max_attempts);
            let result = user.verify_email(matches, api.exec.clock.now(), max_attempts)?;
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
