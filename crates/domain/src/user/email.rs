//! Email and phone changes and the email verification flow. The domain holds the rules only:
//! codes are generated, encrypted and compared (in constant time) by the command layer, which
//! passes in whether the code matched and the current time.

use super::User;
use super::events::{
    EmailChanged, EmailCodeAdded, EmailVerificationFailed, EmailVerified, PhoneChanged, VerificationFailure,
};
use crate::aggregate::Decision;
use crate::values::check_text;
use crate::{DomainError, EmailAddress, PhoneNumber, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A new verification code for the primary email address, already encrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailCode {
    /// The encrypted code, opaque here: `{keyId, nonce, ciphertext}`.
    pub encrypted: serde_json::Value,
    /// When the code stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// A link template for the email (e.g. `https://app/verify?user={{.UserID}}&code={{.Code}}`).
    pub url_template: Option<String>,
    /// Return the code to the caller instead of mailing it.
    pub return_code: bool,
}

/// The latest verification code; a new code replaces it, so only one code is ever valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCode {
    /// The address the code was sent to.
    pub email: EmailAddress,
    /// The encrypted code, for the command layer to decrypt and compare.
    pub encrypted: serde_json::Value,
    /// When the code stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The link template the code was sent with.
    pub url_template: Option<String>,
    /// Whether the code was returned to the caller instead of mailed.
    pub return_code: bool,
    /// Failed attempts against this code so far.
    pub attempts: u32,
    /// True once the code expired on use or its attempts ran out: only a new code helps then.
    pub voided: bool,
}

/// The result of a verification attempt. A failure is still a decision to commit (the failed
/// attempt counts), so the caller pushes `decision` and then answers with an error when
/// `verified` is false.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyOutcome {
    /// The events to push: `user.human.email.verified` or
    /// `user.human.email.verification.failed`.
    pub decision: Decision,
    /// Whether the address is now verified.
    pub verified: bool,
    /// Why not: `"expired"` or `"mismatch"`.
    pub reason: Option<&'static str>,
}

impl User {
    /// Sets the primary email address: `user.human.email.changed` (the address starts
    /// unverified and any pending code is voided), followed by `user.human.email.verified` when
    /// `verified` (a privileged caller vouches for it). Setting the current address again only
    /// adds the verification if asked for and missing; otherwise the decision is empty.
    pub fn set_email(&self, email: EmailAddress, verified: bool) -> Result<Decision, DomainError> {
        let human = self.require_human()?;
        let mut decision = Decision::none();
        match human.profile.primary_email() {
            Some(current) if current.value.normalized() == email.normalized() => {
                if verified && !current.verified {
                    decision.push(&EmailVerified {
                        email: current.value.clone(),
                    })?;
                }
            }
            _ => {
                decision.push(&EmailChanged { email: email.clone() })?;
                if verified {
                    decision.push(&EmailVerified { email })?;
                }
            }
        }
        Ok(decision)
    }

    /// Sets (or with `None` removes) the primary phone number; the same number is an empty
    /// decision.
    pub fn set_phone(&self, phone: Option<PhoneNumber>) -> Result<Decision, DomainError> {
        let human = self.require_human()?;
        if human.profile.primary_phone().map(|p| &p.value) == phone.as_ref() {
            return Ok(Decision::none());
        }
        Decision::none().event(&PhoneChanged { phone })
    }

    /// Records a new verification code for the primary address (`user.human.email.code.added`);
    /// it replaces, and so voids, any earlier code.
    pub fn add_email_code(&self, code: EmailCode) -> Result<Decision, DomainError> {
        let human = self.require_human()?;
        let email = human
            .profile
            .primary_email()
            .ok_or_else(|| DomainError::precondition("user has no email address"))?;
        if email.verified {
            return Err(DomainError::precondition("email is already verified"));
        }
        let mut v = Violations::new();
        if !code.encrypted.is_object() {
            v.push("encrypted", "must be a JSON object");
        }
        if let Some(Err(e)) = code.url_template.as_deref().map(|t| check_text(t, 2048)) {
            v.push("url_template", e.description);
        }
        v.into_result()?;
        Decision::none().event(&EmailCodeAdded {
            email: email.value.clone(),
            code: code.encrypted,
            expires_at: code.expires_at,
            url_template: code.url_template,
            return_code: code.return_code,
        })
    }

    /// Decides a verification attempt. `code_matches` is the caller's constant-time comparison
    /// of the submitted code with [`User::pending_code`]; `now` is the caller's clock. An expired
    /// code fails (and is voided) whether it matches or not; a mismatch counts an attempt and
    /// voids the code on the `max_attempts`-th failure (at least one attempt is always allowed).
    pub fn verify_email(
        &self,
        code_matches: bool,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<VerifyOutcome, DomainError> {
        let human = self.require_human()?;
        let email = human
            .profile
            .primary_email()
            .ok_or_else(|| DomainError::precondition("user has no email address"))?;
        if email.verified {
            return Err(DomainError::precondition("email is already verified"));
        }
        let code = match &human.code {
            Some(code) if !code.voided => code,
            _ => {
                return Err(DomainError::precondition(
                    "no valid verification code; request a new one",
                ));
            }
        };
        let attempt = code.attempts.saturating_add(1);
        let failure = if now >= code.expires_at {
            Some((VerificationFailure::Expired, true))
        } else if !code_matches {
            Some((VerificationFailure::Mismatch, attempt >= max_attempts.max(1)))
        } else {
            None
        };
        Ok(match failure {
            Some((reason, voided)) => VerifyOutcome {
                decision: Decision::none().event(&EmailVerificationFailed {
                    reason,
                    attempt,
                    voided,
                })?,
                verified: false,
                reason: Some(reason.as_str()),
            },
            None => VerifyOutcome {
                decision: Decision::none().event(&EmailVerified {
                    email: email.value.clone(),
                })?,
                verified: true,
                reason: None,
            },
        })
    }
}
