//! Commands that create users and change their data: adding humans and machines, profile changes
//! (partial, and the full replacement of a SCIM `PUT`), and password hashes.

use super::events::{HumanAdded, MachineAdded, MachineChanged, PasswordChanged, UserDeactivated};
use super::profile::{HumanProfile, MAX_TEXT, ProfileChange};
use super::{User, UserState};
use crate::aggregate::{Decision, UNIQUE_USERNAME};
use crate::values::check_text;
use crate::{AggregateId, DisplayName, DomainError, PasswordHash, UserName, Violations};

/// The command that creates a human user.
#[derive(Debug, Clone, PartialEq)]
pub struct AddHumanUser {
    /// The owning organisation (also the events' resource owner).
    pub org_id: AggregateId,
    /// The login name, unique per instance case-insensitively.
    pub user_name: UserName,
    /// The profile. Emails may be marked verified by a privileged caller or by SCIM
    /// configuration; otherwise they start unverified.
    pub profile: HumanProfile,
    /// The password hash, computed outside the domain.
    pub password_hash: Option<PasswordHash>,
    /// `false` creates the user deactivated (SCIM `active: false`).
    pub active: bool,
}

/// The full replacement of a human user (SCIM `PUT`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaceHumanUser {
    /// The login name.
    pub user_name: UserName,
    /// The whole new profile.
    pub profile: HumanProfile,
    /// A new password hash; `None` keeps the current password (a `PUT` without a password does
    /// not remove it).
    pub password_hash: Option<PasswordHash>,
    /// The wanted `active` flag; a locked user stays locked when `true`.
    pub active: bool,
}

/// The command that creates a machine user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddMachineUser {
    /// The owning organisation.
    pub org_id: AggregateId,
    /// The login name.
    pub user_name: UserName,
    /// The display name.
    pub name: DisplayName,
    /// What the machine user is for.
    pub description: Option<String>,
}

/// A partial change of a machine user: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineChange {
    /// A new display name.
    pub name: Option<DisplayName>,
    /// A new or cleared (`Some(None)`) description.
    pub description: Option<Option<String>>,
}

/// Checks that the normalised userName fits the store's unique-value limit (lower-casing can
/// make a 256-character name longer in bytes).
pub(super) fn check_user_name(name: &UserName, v: &mut Violations) {
    if name.normalized().len() > 1024 {
        v.push("user_name", "is too long");
    }
}

fn check_description(description: Option<&String>, v: &mut Violations) {
    if let Some(Err(e)) = description.map(|d| check_text(d, MAX_TEXT)) {
        v.push("description", e.description);
    }
}

impl User {
    /// Creates a human user: `user.human.added` (plus `user.deactivated` when `active` is
    /// false), claiming the userName.
    pub fn add_human(&self, cmd: AddHumanUser) -> Result<Decision, DomainError> {
        if self.sequence > 0 {
            return Err(DomainError::already_exists("user"));
        }
        let mut profile = cmd.profile;
        profile.normalize(None);
        let mut v = Violations::new();
        check_user_name(&cmd.user_name, &mut v);
        profile.check(&mut v);
        v.into_result()?;
        let claim = cmd.user_name.normalized();
        let mut decision = Decision::none()
            .event(&HumanAdded {
                org_id: cmd.org_id,
                user_name: cmd.user_name,
                profile,
                password_hash: cmd.password_hash,
            })?
            .claim(UNIQUE_USERNAME, claim);
        if !cmd.active {
            decision.push(&UserDeactivated {})?;
        }
        Ok(decision)
    }

    /// Creates a machine user, claiming its userName.
    pub fn add_machine(&self, cmd: AddMachineUser) -> Result<Decision, DomainError> {
        if self.sequence > 0 {
            return Err(DomainError::already_exists("user"));
        }
        let mut v = Violations::new();
        check_user_name(&cmd.user_name, &mut v);
        check_description(cmd.description.as_ref(), &mut v);
        v.into_result()?;
        let claim = cmd.user_name.normalized();
        Ok(Decision::none()
            .event(&MachineAdded {
                org_id: cmd.org_id,
                user_name: cmd.user_name,
                name: cmd.name,
                description: cmd.description,
            })?
            .claim(UNIQUE_USERNAME, claim))
    }

    /// Changes a machine user's name or description; only changed fields go into
    /// `user.machine.changed`, and no change is an empty decision.
    pub fn change_machine(&self, cmd: MachineChange) -> Result<Decision, DomainError> {
        self.require()?;
        let machine = self
            .machine()
            .ok_or_else(|| DomainError::precondition("not a machine user"))?;
        let mut v = Violations::new();
        check_description(cmd.description.as_ref().and_then(Option::as_ref), &mut v);
        v.into_result()?;
        let event = MachineChanged {
            name: cmd.name.filter(|n| n != &machine.name),
            description: cmd.description.filter(|d| d != &machine.description),
        };
        if event == MachineChanged::default() {
            return Ok(Decision::none());
        }
        Decision::none().event(&event)
    }

    /// Changes some profile fields. The change is applied to the current profile, normalised
    /// (one primary entry per list; verification carries over to addresses already verified)
    /// and checked as a whole; `user.human.profile.changed` then carries only the fields that
    /// differ. If nothing differs the decision is empty and nothing is to be pushed. Emails
    /// marked `verified` are taken as vouched for: the command layer clears the flag for callers
    /// that may not vouch.
    pub fn change_profile(&self, change: ProfileChange) -> Result<Decision, DomainError> {
        let current = &self.require_human()?.profile;
        let mut next = current.clone();
        change.apply_to(&mut next);
        next.normalize(Some(current));
        let mut v = Violations::new();
        next.check(&mut v);
        v.into_result()?;
        let event = ProfileChange::replace_with(next).without_unchanged(current);
        if event.is_empty() {
            return Ok(Decision::none());
        }
        Decision::none().event(&event)
    }

    /// Replaces the whole user (SCIM `PUT`): userName, profile, password (if given) and the
    /// active flag, in one decision of only the events needed (possibly none).
    pub fn replace_profile(&self, cmd: ReplaceHumanUser) -> Result<Decision, DomainError> {
        self.require_human()?;
        let mut decision = self.change_username(cmd.user_name)?;
        decision.merge(self.change_profile(ProfileChange::replace_with(cmd.profile))?);
        if let Some(hash) = cmd.password_hash {
            decision.merge(self.set_password(hash)?);
        }
        match (self.state, cmd.active) {
            (UserState::Active | UserState::Locked, false) => decision.merge(self.deactivate()?),
            (UserState::Inactive, true) => decision.merge(self.reactivate()?),
            _ => {}
        }
        Ok(decision)
    }

    /// Sets the password hash (`user.human.password.changed`); the same hash is an empty
    /// decision.
    pub fn set_password(&self, password_hash: PasswordHash) -> Result<Decision, DomainError> {
        let human = self.require_human()?;
        if human.password_hash.as_ref() == Some(&password_hash) {
            return Ok(Decision::none());
        }
        Decision::none().event(&PasswordChanged { password_hash })
    }
}
