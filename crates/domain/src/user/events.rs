//! The user aggregate's events and their JSON payloads (camelCase field names).

use super::profile::{HumanProfile, ProfileChange};
use crate::aggregate::{EventPayload, empty_payload, event_enum, nullable};
use crate::{AggregateId, DisplayName, EmailAddress, PasswordHash, PhoneNumber, UserName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! payload {
    ($($name:ident = $event:literal;)*) => {$(
        impl EventPayload for $name {
            const EVENT_TYPE: &'static str = $event;
        }
    )*};
}

/// `user.human.added`: JSON `{"orgId", "userName", "passwordHash"?, ...}` plus every
/// [`HumanProfile`] field at the top level (`name`, `displayName`, `emails`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanAdded {
    /// JSON `orgId`: the owning organisation.
    pub org_id: AggregateId,
    /// JSON `userName`.
    pub user_name: UserName,
    /// The profile, flattened into the payload.
    #[serde(flatten)]
    pub profile: HumanProfile,
    /// JSON `passwordHash` (PHC string), omitted when the user has no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<PasswordHash>,
}

/// `user.machine.added`: JSON `{"orgId", "userName", "name", "description"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineAdded {
    /// JSON `orgId`.
    pub org_id: AggregateId,
    /// JSON `userName`.
    pub user_name: UserName,
    /// JSON `name`: the display name.
    pub name: DisplayName,
    /// JSON `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `user.machine.changed`: JSON `{"name"?, "description"?}`, only changed fields; `null` clears
/// the description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineChanged {
    /// JSON `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    /// JSON `description`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub description: Option<Option<String>>,
}

/// `user.username.changed`: JSON `{"userName"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsernameChanged {
    /// JSON `userName`: the new name.
    pub user_name: UserName,
}

/// `user.human.email.changed`: JSON `{"email"}`. The new address replaces the primary one,
/// unverified, and voids any pending code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChanged {
    /// JSON `email`.
    pub email: EmailAddress,
}

/// `user.human.email.verified`: JSON `{"email"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerified {
    /// JSON `email`: the address that was verified.
    pub email: EmailAddress,
}

/// `user.human.email.code.added`: JSON `{"email", "code", "expiresAt", "urlTemplate"?,
/// "returnCode"}`. `code` is the encrypted code (`{keyId, nonce, ciphertext}`), opaque here; the
/// notifier decrypts it and mails it to `email`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailCodeAdded {
    /// JSON `email`: where the code goes.
    pub email: EmailAddress,
    /// JSON `code`: the encrypted code.
    pub code: serde_json::Value,
    /// JSON `expiresAt` (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// JSON `urlTemplate`: a link template for the email, if the caller gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_template: Option<String>,
    /// JSON `returnCode`: the code is returned to the caller instead of being mailed.
    #[serde(default)]
    pub return_code: bool,
}

/// Why a verification attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationFailure {
    /// The code's expiry had passed (the code is voided).
    Expired,
    /// The code did not match.
    Mismatch,
}

impl VerificationFailure {
    /// `"expired"` or `"mismatch"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Mismatch => "mismatch",
        }
    }
}

/// `user.human.email.verification.failed`: JSON `{"reason", "attempt", "voided"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerificationFailed {
    /// JSON `reason`: `"expired"` or `"mismatch"`.
    pub reason: VerificationFailure,
    /// JSON `attempt`: the number of failed attempts against this code, this one included.
    pub attempt: u32,
    /// JSON `voided`: this failure voided the code (expired, or attempts exhausted).
    pub voided: bool,
}

/// `user.human.phone.changed`: JSON `{"phone"}`; `null` removes the primary phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneChanged {
    /// JSON `phone`.
    pub phone: Option<PhoneNumber>,
}

/// `user.human.password.changed`: JSON `{"passwordHash"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChanged {
    /// JSON `passwordHash` (PHC string).
    pub password_hash: PasswordHash,
}

/// `user.pat.added`: JSON `{"tokenId", "expiresAt"?}`. The token's hash lives in its own table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatAdded {
    /// JSON `tokenId`.
    pub token_id: Uuid,
    /// JSON `expiresAt`; absent for a token that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `user.pat.removed`: JSON `{"tokenId"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatRemoved {
    /// JSON `tokenId`.
    pub token_id: Uuid,
}

payload! {
    HumanAdded = "user.human.added";
    MachineAdded = "user.machine.added";
    MachineChanged = "user.machine.changed";
    ProfileChange = "user.human.profile.changed";
    UsernameChanged = "user.username.changed";
    EmailChanged = "user.human.email.changed";
    EmailCodeAdded = "user.human.email.code.added";
    EmailVerified = "user.human.email.verified";
    EmailVerificationFailed = "user.human.email.verification.failed";
    PhoneChanged = "user.human.phone.changed";
    PasswordChanged = "user.human.password.changed";
    PatAdded = "user.pat.added";
    PatRemoved = "user.pat.removed";
}

empty_payload! {
    /// `user.deactivated`: `{}`.
    UserDeactivated = "user.deactivated";
    /// `user.reactivated`: `{}`.
    UserReactivated = "user.reactivated";
    /// `user.locked`: `{}`.
    UserLocked = "user.locked";
    /// `user.unlocked`: `{}`.
    UserUnlocked = "user.unlocked";
    /// `user.removed`: `{}`.
    UserRemoved = "user.removed";
    /// `user.erased`: `{}`. The user's data key was destroyed in the same transaction: every
    /// personal field of its earlier events reads as erased from now on.
    UserErased = "user.erased";
}

event_enum! {
    /// Every event of the user aggregate.
    UserEvent {
        HumanAdded(HumanAdded),
        MachineAdded(MachineAdded),
        MachineChanged(MachineChanged),
        ProfileChanged(ProfileChange),
        UsernameChanged(UsernameChanged),
        EmailChanged(EmailChanged),
        EmailCodeAdded(EmailCodeAdded),
        EmailVerified(EmailVerified),
        EmailVerificationFailed(EmailVerificationFailed),
        PhoneChanged(PhoneChanged),
        PasswordChanged(PasswordChanged),
        Deactivated(UserDeactivated),
        Reactivated(UserReactivated),
        Locked(UserLocked),
        Unlocked(UserUnlocked),
        Removed(UserRemoved),
        Erased(UserErased),
        PatAdded(PatAdded),
        PatRemoved(PatRemoved),
    }
}
