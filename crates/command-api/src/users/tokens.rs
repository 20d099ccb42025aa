//! Personal access tokens: issuing one (its secret shown once, never to a replayed request) and
//! revoking one, each committed with its event on the user.

use super::{user_id, user_response, visible_user};
use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{details, from_timestamp};
use crate::error::ApiError;
use crate::exec::{Plan, Written};
use cairn_auth::tokens::{self, pat_uuid};
use cairn_auth::{NewToken, Permission, Role, TokenKind};
use cairn_domain::user::AddPat;
use cairn_domain::{Aggregate, User};
use cairn_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

pub(super) async fn add_personal_access_token(
    api: &Api,
    request: Request<pb::AddPersonalAccessTokenRequest>,
) -> Result<Response<pb::AddPersonalAccessTokenResponse>, Status> {
    let caller = api.caller(&request).await?;
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

pub(super) async fn remove_personal_access_token(
    api: &Api,
    request: Request<pb::RemovePersonalAccessTokenRequest>,
) -> Result<Response<pb::UserResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.require(Permission::AdministerInstance)?;
    let req = request.get_ref().clone();
    let pat = pat_uuid(&req.token_id);
    let id = user_id(&req.user_id)?;
    let key = Api::idempotency_key(&request);
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
    api.auth.forget(&req.token_id);
    Ok(Response::new(response))
}
