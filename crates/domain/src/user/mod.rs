//! The user aggregate: human users (SCIM-rich profile, password hash, email verification) and
//! machine users (for API access with personal access tokens), both owned by an organisation.
//!
//! Lifecycle: `Active ⇄ Inactive` (deactivate / reactivate), `Active ⇄ Locked` (lock / unlock),
//! `Locked → Inactive` (deactivate), and any of them `→ Removed`. A removed or never-added user is
//! [`DomainError::NotFound`] to every command. A transition to the state the user is already in is
//! a [`DomainError::FailedPrecondition`]; a data change that changes nothing is an empty
//! [`Decision`](crate::Decision). Group memberships of a removed user are cleaned up by the command layer from the
//! read model; the user aggregate only records `user.removed`.

mod apply;
mod commands;
mod email;
mod events;
mod lifecycle;
pub mod profile;
mod validate;

pub use commands::{AddHumanUser, AddMachineUser, MachineChange, ReplaceHumanUser};
pub use email::{EmailCode, PendingCode, VerifyOutcome};
pub use events::*;
pub use lifecycle::AddPat;
pub use profile::{Address, Email, Enterprise, HumanProfile, Manager, PersonName, Phone, ProfileChange};

use crate::aggregate::Aggregate;
use crate::{AggregateId, DisplayName, DomainError, PasswordHash, StoredEvent, UserName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The lifecycle state of a user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// Never added (the state of a fresh aggregate).
    #[default]
    Absent,
    /// Can sign in and use tokens.
    Active,
    /// Deactivated by an administrator or the IdP (SCIM `active: false`).
    Inactive,
    /// Locked, e.g. after failed sign-ins; unlocking returns it to active.
    Locked,
    /// Removed for good; its userName is free again.
    Removed,
}

/// A machine user's own data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The display name.
    pub name: DisplayName,
    /// What the machine user is for.
    pub description: Option<String>,
}

/// A human user's own data. The password hash is private: [`User::password_hash`] is the only way
/// to it, for the credential check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Human {
    profile: HumanProfile,
    password_hash: Option<PasswordHash>,
    code: Option<PendingCode>,
}

impl Human {
    /// The profile (without the password hash).
    pub fn profile(&self) -> &HumanProfile {
        &self.profile
    }
}

/// Whether a user is a human or a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A person.
    Human(Box<Human>),
    /// A service account.
    Machine(Machine),
}

/// A user as rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    sequence: i64,
    id: Option<AggregateId>,
    org_id: Option<AggregateId>,
    state: UserState,
    user_name: Option<UserName>,
    kind: Option<UserKind>,
    pats: BTreeMap<Uuid, Option<DateTime<Utc>>>,
    #[serde(default)]
    erased: bool,
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    // 2: snapshots are sealed with the user's data key (version 1 snapshots held plain data).
    const SNAPSHOT_VERSION: i32 = 2;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !crate::aggregate::accept(self, event)? {
            return Ok(());
        }
        if crate::personal::is_erased(&event.payload) {
            // The user's data is erased: its events only move the sequence on, and the
            // `user.erased` that follows them leaves the user removed.
            self.id = Some(event.aggregate_id);
            self.sequence = event.sequence;
            return Ok(());
        }
        let decoded = UserEvent::decode(event)?;
        self.fold(event.aggregate_id, decoded)?;
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

impl User {
    /// The user's id, once added.
    pub fn id(&self) -> Option<AggregateId> {
        self.id
    }

    /// The owning organisation (the events' resource owner), once added.
    pub fn org_id(&self) -> Option<AggregateId> {
        self.org_id
    }

    /// The lifecycle state.
    pub fn state(&self) -> UserState {
        self.state
    }

    /// True while the user exists (active, inactive or locked).
    pub fn exists(&self) -> bool {
        matches!(
            self.state,
            UserState::Active | UserState::Inactive | UserState::Locked
        )
    }

    /// The login name, once added.
    pub fn user_name(&self) -> Option<&UserName> {
        self.user_name.as_ref()
    }

    /// Human or machine, once added.
    pub fn kind(&self) -> Option<&UserKind> {
        self.kind.as_ref()
    }

    /// The human user's profile; `None` for a machine user.
    pub fn human(&self) -> Option<&HumanProfile> {
        match &self.kind {
            Some(UserKind::Human(h)) => Some(&h.profile),
            _ => None,
        }
    }

    /// The machine user's data; `None` for a human user.
    pub fn machine(&self) -> Option<&Machine> {
        match &self.kind {
            Some(UserKind::Machine(m)) => Some(m),
            _ => None,
        }
    }

    /// The password hash, for the credential check only; never put it into a view or a response.
    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.human_data().and_then(|h| h.password_hash.as_ref())
    }

    /// Whether the human user has a password.
    pub fn has_password(&self) -> bool {
        self.password_hash().is_some()
    }

    /// Whether the primary email address is verified (`false` without one).
    pub fn email_verified(&self) -> bool {
        self.human()
            .and_then(HumanProfile::primary_email)
            .is_some_and(|e| e.verified)
    }

    /// The latest email verification code, voided or not; `None` when no code is pending
    /// (none requested, the address verified since, or the address changed since).
    pub fn pending_code(&self) -> Option<&PendingCode> {
        self.human_data().and_then(|h| h.code.as_ref())
    }

    /// Whether the user's personal data was erased (`user.erased`).
    pub fn erased(&self) -> bool {
        self.erased
    }

    /// The personal access tokens: id → expiry (`None`: no expiry).
    pub fn pats(&self) -> &BTreeMap<Uuid, Option<DateTime<Utc>>> {
        &self.pats
    }

    fn human_data(&self) -> Option<&Human> {
        match &self.kind {
            Some(UserKind::Human(h)) => Some(h),
            _ => None,
        }
    }

    /// The existing user's name, or [`DomainError::NotFound`].
    fn require(&self) -> Result<&UserName, DomainError> {
        match (&self.user_name, self.exists()) {
            (Some(name), true) => Ok(name),
            _ => Err(DomainError::NotFound),
        }
    }

    /// The existing human user's data, or `NotFound` / `FailedPrecondition` for a machine.
    fn require_human(&self) -> Result<&Human, DomainError> {
        self.require()?;
        self.human_data()
            .ok_or_else(|| DomainError::precondition("not a human user"))
    }
}

#[cfg(test)]
mod tests;
