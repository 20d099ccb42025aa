//! Verification codes: drawn from the OS CSPRNG without modulo bias, encrypted with AES-256-GCM
//! under the active key id (bound to the instance and user by the AAD), compared in constant time.
//! The plaintext code exists only in memory, in the email the notifier sends, or in the response
//! to a privileged caller who asked for it.

use crate::api::{Api, preview};
use crate::error::ApiError;
use cairn_auth::Caller;
use cairn_domain::user::EmailCode;
use cairn_domain::{AggregateId, Decision, EventId, Position, StoredEvent, User};
use cairn_secrets::{Sealed, Zeroizing};

/// The AAD that binds a code to its instance and user.
pub fn code_aad(instance: cairn_domain::InstanceId, user: AggregateId) -> Vec<u8> {
    cairn_secrets::email_code_aad(instance.as_uuid().as_bytes(), user.as_uuid().as_bytes())
}

/// A fresh code for `user`, sealed for the event, and its plaintext.
pub fn new_code(
    api: &Api,
    caller: &Caller,
    user: AggregateId,
    url_template: Option<String>,
    return_code: bool,
) -> Result<(EmailCode, Zeroizing<String>), ApiError> {
    if let Some(template) = &url_template {
        cairn_secrets_url_check(template)?;
    }
    let code = cairn_secrets::generate_code(&api.email.code_spec, &mut rand::rng());
    let sealed = api
        .keys
        .encrypt_str(&code, &code_aad(caller.instance_id, user))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let encrypted = serde_json::to_value(&sealed).map_err(|e| ApiError::Internal(e.to_string()))?;
    // The instance's own lifetime, else the deployment's.
    let lifetime = caller
        .settings
        .email_code_ttl_secs
        .map_or(api.email.code_expiry, |secs| {
            std::time::Duration::from_secs(u64::try_from(secs).unwrap_or_default())
        });
    let expires_at = api.exec.clock.now()
        + chrono::Duration::from_std(lifetime).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        EmailCode {
            encrypted,
            expires_at,
            url_template,
            return_code,
        },
        code,
    ))
}

fn cairn_secrets_url_check(template: &str) -> Result<(), ApiError> {
    if template.len() > 2048 || !(template.starts_with("https://") || template.starts_with("http://")) {
        return Err(ApiError::invalid(
            "url_template",
            "must be an http(s) URL of at most 2048 characters",
        ));
    }
    Ok(())
}

/// Whether `presented` is the user's pending code (false when it cannot be decrypted).
pub fn code_matches(
    api: &Api,
    caller: &Caller,
    user: AggregateId,
    encrypted: &serde_json::Value,
    presented: &str,
) -> bool {
    let Ok(sealed) = serde_json::from_value::<Sealed>(encrypted.clone()) else {
        return false;
    };
    match api
        .keys
        .decrypt_string(&sealed, &code_aad(caller.instance_id, user))
    {
        Ok(expected) => cairn_secrets::codes_match(presented.trim(), &expected),
        Err(error) => {
            tracing::warn!(%error, user = %user, "a stored verification code cannot be decrypted");
            false
        }
    }
}

/// The decision to set `email` (each argument is one input of the command) and, unless `verified`, add a code for it; with the plaintext code.
#[allow(clippy::too_many_arguments)]
pub fn set_email_decision(
    api: &Api,
    caller: &Caller,
    user: &User,
    id: AggregateId,
    email: cairn_domain::EmailAddress,
    verified: bool,
    url_template: Option<String>,
    return_code: bool,
) -> Result<(Decision, Option<Zeroizing<String>>), ApiError> {
    let mut decision = user.set_email(email, verified)?;
    if verified {
        return Ok((decision, None));
    }
    let after = preview(user, &decision, &template(caller, id))?;
    if after.email_verified() {
        return Ok((decision, None));
    }
    let (code, plaintext) = new_code(api, caller, id, url_template, return_code)?;
    decision.merge(after.add_email_code(code)?);
    Ok((decision, Some(plaintext)))
}

/// A stored-event template for previews of a user's decisions.
pub fn template(caller: &Caller, id: AggregateId) -> StoredEvent {
    StoredEvent {
        id: EventId::new(),
        instance_id: caller.instance_id,
        aggregate_type: <User as cairn_domain::Aggregate>::aggregate_type(),
        aggregate_id: id,
        sequence: 0,
        // replaced by each previewed event's own type
        event_type: <cairn_domain::user::UserLocked as cairn_domain::EventPayload>::event_type(),
        revision: 1,
        payload: serde_json::json!({}),
        creator: caller.creator(),
        resource_owner: id,
        created_at: chrono::DateTime::UNIX_EPOCH,
        position: Position::ZERO,
        trace_context: None,
    }
}
