//! Folding user events into state. Kept apart from the commands so that the rules of "what an
//! event means" are in one place, shared by command handling and snapshot rebuilding.

use super::profile::{Email, HumanProfile, Phone};
use super::{Human, Machine, PendingCode, User, UserEvent, UserKind, UserState};
use crate::{AggregateId, DomainError, EmailAddress, PhoneNumber};

impl User {
    pub(super) fn fold(&mut self, id: AggregateId, event: UserEvent) -> Result<(), DomainError> {
        match event {
            UserEvent::HumanAdded(e) => {
                self.id = Some(id);
                self.org_id = Some(e.org_id);
                self.user_name = Some(e.user_name);
                self.state = UserState::Active;
                self.kind = Some(UserKind::Human(Box::new(Human {
                    profile: e.profile,
                    password_hash: e.password_hash,
                    code: None,
                })));
            }
            UserEvent::MachineAdded(e) => {
                self.id = Some(id);
                self.org_id = Some(e.org_id);
                self.user_name = Some(e.user_name);
                self.state = UserState::Active;
                self.kind = Some(UserKind::Machine(Machine {
                    name: e.name,
                    description: e.description,
                }));
            }
            UserEvent::MachineChanged(e) => {
                let machine = self.machine_mut()?;
                if let Some(name) = e.name {
                    machine.name = name;
                }
                if let Some(description) = e.description {
                    machine.description = description;
                }
            }
            UserEvent::ProfileChanged(change) => {
                let human = self.human_mut()?;
                change.apply_to(&mut human.profile);
                human.drop_stale_code();
            }
            UserEvent::UsernameChanged(e) => self.user_name = Some(e.user_name),
            UserEvent::EmailChanged(e) => {
                let human = self.human_mut()?;
                human.profile.set_primary_email(e.email);
                human.drop_stale_code();
            }
            UserEvent::EmailCodeAdded(e) => {
                self.human_mut()?.code = Some(PendingCode {
                    email: e.email,
                    encrypted: e.code,
                    expires_at: e.expires_at,
                    url_template: e.url_template,
                    return_code: e.return_code,
                    attempts: 0,
                    voided: false,
                });
            }
            UserEvent::EmailVerified(e) => {
                let human = self.human_mut()?;
                human.profile.mark_verified(&e.email);
                human.code = None;
            }
            UserEvent::EmailVerificationFailed(e) => {
                if let Some(code) = &mut self.human_mut()?.code {
                    code.attempts = e.attempt;
                    code.voided |= e.voided;
                }
            }
            UserEvent::PhoneChanged(e) => self.human_mut()?.profile.set_primary_phone(e.phone),
            UserEvent::PasswordChanged(e) => self.human_mut()?.password_hash = Some(e.password_hash),
            UserEvent::Deactivated(_) => self.state = UserState::Inactive,
            UserEvent::Reactivated(_) | UserEvent::Unlocked(_) => self.state = UserState::Active,
            UserEvent::Locked(_) => self.state = UserState::Locked,
            UserEvent::Removed(_) => self.state = UserState::Removed,
            UserEvent::Erased(_) => {
                self.state = UserState::Removed;
                self.erased = true;
                self.user_name = None;
                self.kind = None;
            }
            UserEvent::PatAdded(e) => {
                self.pats.insert(e.token_id, e.expires_at);
            }
            UserEvent::PatRemoved(e) => {
                self.pats.remove(&e.token_id);
            }
        }
        Ok(())
    }

    fn human_mut(&mut self) -> Result<&mut Human, DomainError> {
        match &mut self.kind {
            Some(UserKind::Human(h)) => Ok(h),
            _ => Err(DomainError::Corrupt(
                "a human user event was stored for a user that is not human".into(),
            )),
        }
    }

    fn machine_mut(&mut self) -> Result<&mut Machine, DomainError> {
        match &mut self.kind {
            Some(UserKind::Machine(m)) => Ok(m),
            _ => Err(DomainError::Corrupt(
                "a machine user event was stored for a user that is not a machine".into(),
            )),
        }
    }
}

impl Human {
    /// A code belongs to the address it was sent to; once the primary address changes, the code
    /// is gone (a new address needs a new code).
    fn drop_stale_code(&mut self) {
        let current = self.profile.primary_email().map(|e| e.value.normalized());
        if self
            .code
            .as_ref()
            .is_some_and(|c| Some(c.email.normalized()) != current)
        {
            self.code = None;
        }
    }
}

impl HumanProfile {
    /// Marks every entry with `email`'s address (compared normalised) as verified.
    pub fn mark_verified(&mut self, email: &EmailAddress) {
        let verified = email.normalized();
        for entry in &mut self.emails {
            if entry.value.normalized() == verified {
                entry.verified = true;
            }
        }
    }

    /// Replaces the primary address (unverified); another entry with the same address is dropped
    /// so the list keeps no duplicates.
    pub fn set_primary_email(&mut self, email: EmailAddress) {
        let new = email.normalized();
        let current = self
            .emails
            .iter()
            .position(|e| e.primary)
            .or(if self.emails.is_empty() { None } else { Some(0) });
        let keep = current.map(|i| self.emails[i].value.normalized());
        self.emails
            .retain(|e| Some(e.value.normalized()) == keep || e.value.normalized() != new);
        match self
            .emails
            .iter()
            .position(|e| Some(e.value.normalized()) == keep)
        {
            Some(i) => {
                let primary = &mut self.emails[i];
                primary.value = email;
                primary.verified = false;
            }
            None => self.emails.insert(
                0,
                Email {
                    value: email,
                    kind: None,
                    display: None,
                    primary: true,
                    verified: false,
                },
            ),
        }
    }

    /// Replaces or removes the primary phone number (the one marked primary, else the first).
    pub fn set_primary_phone(&mut self, phone: Option<PhoneNumber>) {
        let current =
            self.phone_numbers
                .iter()
                .position(|p| p.primary)
                .or(if self.phone_numbers.is_empty() {
                    None
                } else {
                    Some(0)
                });
        match phone {
            Some(value) => match current {
                Some(i) => self.phone_numbers[i].value = value,
                None => self.phone_numbers.insert(
                    0,
                    Phone {
                        value,
                        kind: None,
                        display: None,
                        primary: true,
                    },
                ),
            },
            None => {
                if let Some(i) = current {
                    self.phone_numbers.remove(i);
                }
            }
        }
    }
}
