//! The user's lifecycle (deactivate, reactivate, lock, unlock, remove), its userName, and its
//! personal access tokens.

use super::commands::check_user_name;
use super::events::{
    PatAdded, PatRemoved, UserDeactivated, UserErased, UserLocked, UserReactivated, UserRemoved,
    UserUnlocked, UsernameChanged,
};
use super::{User, UserState};
use crate::aggregate::{Decision, UNIQUE_USERNAME};
use crate::{DomainError, UserName, Violations};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The command that adds a personal access token. Only the id and the expiry live in events;
/// the token's hash lives in its own table, written by the command layer in the same push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddPat {
    /// The token's id.
    pub token_id: Uuid,
    /// When the token stops working; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
}

impl User {
    fn transition(&self, allowed: &[UserState], refusal: &str) -> Result<(), DomainError> {
        self.require()?;
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(DomainError::precondition(refusal))
        }
    }

    /// Active or locked → inactive.
    pub fn deactivate(&self) -> Result<Decision, DomainError> {
        self.transition(
            &[UserState::Active, UserState::Locked],
            "user is already inactive",
        )?;
        Decision::none().event(&UserDeactivated {})
    }

    /// Inactive → active.
    pub fn reactivate(&self) -> Result<Decision, DomainError> {
        let refusal = if self.state == UserState::Locked {
            "user is locked; unlock it instead"
        } else {
            "user is already active"
        };
        self.transition(&[UserState::Inactive], refusal)?;
        Decision::none().event(&UserReactivated {})
    }

    /// Active → locked.
    pub fn lock(&self) -> Result<Decision, DomainError> {
        let refusal = if self.state == UserState::Locked {
            "user is already locked"
        } else {
            "only an active user can be locked"
        };
        self.transition(&[UserState::Active], refusal)?;
        Decision::none().event(&UserLocked {})
    }

    /// Locked → active.
    pub fn unlock(&self) -> Result<Decision, DomainError> {
        self.transition(&[UserState::Locked], "user is not locked")?;
        Decision::none().event(&UserUnlocked {})
    }

    /// Any existing user → removed, releasing its userName.
    pub fn remove(&self) -> Result<Decision, DomainError> {
        let name = self.require()?;
        Ok(Decision::none()
            .event(&UserRemoved {})?
            .release(UNIQUE_USERNAME, name.normalized()))
    }

    /// Removes the user (as [`User::remove`]) and erases its personal data: `user.removed` (when
    /// the user still exists) then `user.erased`. A user removed earlier can still be erased; a
    /// user already erased, or never added, is [`DomainError::NotFound`]. The command layer
    /// destroys the user's data key in the same transaction.
    pub fn erase(&self) -> Result<Decision, DomainError> {
        if self.erased || self.state == UserState::Absent {
            return Err(DomainError::NotFound);
        }
        let decision = if self.exists() {
            self.remove()?
        } else {
            Decision::none()
        };
        decision.event(&UserErased {})
    }

    /// Renames the user, releasing the old normalised name and claiming the new one (a change of
    /// case only releases and claims the same value, which the store applies in that order). The
    /// identical name is an empty decision.
    pub fn change_username(&self, user_name: UserName) -> Result<Decision, DomainError> {
        let current = self.require()?;
        if current == &user_name {
            return Ok(Decision::none());
        }
        let mut v = Violations::new();
        check_user_name(&user_name, &mut v);
        v.into_result()?;
        let (released, claimed) = (current.normalized(), user_name.normalized());
        Ok(Decision::none()
            .event(&UsernameChanged { user_name })?
            .release(UNIQUE_USERNAME, released)
            .claim(UNIQUE_USERNAME, claimed))
    }

    /// Adds a personal access token; an expiry at or before `now` is refused.
    pub fn add_pat(&self, cmd: AddPat, now: DateTime<Utc>) -> Result<Decision, DomainError> {
        self.require()?;
        if self.pats.contains_key(&cmd.token_id) {
            return Err(DomainError::already_exists("token"));
        }
        if cmd.expires_at.is_some_and(|at| at <= now) {
            return Err(DomainError::invalid("expires_at", "must be in the future"));
        }
        Decision::none().event(&PatAdded {
            token_id: cmd.token_id,
            expires_at: cmd.expires_at,
        })
    }

    /// Removes a personal access token; an unknown id is [`DomainError::NotFound`].
    pub fn remove_pat(&self, token_id: Uuid) -> Result<Decision, DomainError> {
        self.require()?;
        if !self.pats.contains_key(&token_id) {
            return Err(DomainError::NotFound);
        }
        Decision::none().event(&PatRemoved { token_id })
    }
}
