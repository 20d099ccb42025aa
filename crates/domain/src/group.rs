//! The group aggregate: a named set of users inside one organisation. The name is unique per
//! organisation (claimed as `<org id>:<lower-cased name>`).
//!
//! Members are kept in a `BTreeSet` so that adding or removing them is idempotent by id; a group of
//! 100k members stays cheap because the aggregate is snapshotted and each membership change is one
//! small event. Whether a member id names an existing user of the same organisation is checked by
//! the command layer against the read model, not here. One push holds at most 10,000 events, so
//! the command layer splits larger membership changes into several decisions.

use crate::aggregate::{
    Aggregate, Decision, EventPayload, UNIQUE_GROUP_DISPLAY_NAME, accept, empty_payload, event_enum, nullable,
};
use crate::values::check_text;
use crate::{AggregateId, DisplayName, DomainError, StoredEvent, Violations};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The longest accepted `externalId` and description, in characters.
pub const MAX_GROUP_TEXT: usize = 1024;

/// `group.added`: JSON `{"orgId", "displayName", "externalId"?, "description"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupAdded {
    /// JSON `orgId`: the owning organisation.
    pub org_id: AggregateId,
    /// JSON `displayName`.
    pub display_name: DisplayName,
    /// JSON `externalId`: the IdP's id for the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// JSON `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl EventPayload for GroupAdded {
    const EVENT_TYPE: &'static str = "group.added";
}

/// `group.changed`: only changed fields are present; `null` clears an optional field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupChanged {
    /// JSON `displayName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// JSON `externalId`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub external_id: Option<Option<String>>,
    /// JSON `description`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub description: Option<Option<String>>,
}

impl EventPayload for GroupChanged {
    const EVENT_TYPE: &'static str = "group.changed";
}

/// `group.member.added`: JSON `{"userId"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberAdded {
    /// JSON `userId`.
    pub user_id: AggregateId,
}

impl EventPayload for GroupMemberAdded {
    const EVENT_TYPE: &'static str = "group.member.added";
}

/// `group.member.removed`: JSON `{"userId"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberRemoved {
    /// JSON `userId`.
    pub user_id: AggregateId,
}

impl EventPayload for GroupMemberRemoved {
    const EVENT_TYPE: &'static str = "group.member.removed";
}

empty_payload! {
    /// `group.removed`: `{}`.
    GroupRemoved = "group.removed";
}

event_enum! {
    /// Every event of the group aggregate.
    GroupEvent {
        Added(GroupAdded),
        Changed(GroupChanged),
        MemberAdded(GroupMemberAdded),
        MemberRemoved(GroupMemberRemoved),
        Removed(GroupRemoved),
    }
}

/// The command that creates a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddGroup {
    /// The owning organisation.
    pub org_id: AggregateId,
    /// The name, unique in the organisation (case-insensitively).
    pub display_name: DisplayName,
    /// The IdP's id for the group.
    pub external_id: Option<String>,
    /// A free-text description.
    pub description: Option<String>,
}

/// A partial change of a group: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChange {
    /// A new name.
    pub display_name: Option<DisplayName>,
    /// A new or cleared external id.
    pub external_id: Option<Option<String>>,
    /// A new or cleared description.
    pub description: Option<Option<String>>,
}

/// A group as rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    sequence: i64,
    id: Option<AggregateId>,
    org_id: Option<AggregateId>,
    display_name: Option<DisplayName>,
    external_id: Option<String>,
    description: Option<String>,
    members: BTreeSet<AggregateId>,
    removed: bool,
}

/// The value claimed under `group.displayname` for `name` in `org`.
pub fn group_name_claim(org: AggregateId, name: &DisplayName) -> String {
    format!("{org}:{}", name.normalized())
}

fn check_name(org: AggregateId, name: &DisplayName, v: &mut Violations) {
    // The store accepts unique values of up to 1024 bytes; lower-casing can grow a name.
    if group_name_claim(org, name).len() > 1024 {
        v.push("display_name", "is too long");
    }
}

fn check_optional_text(field: &str, value: Option<&String>, v: &mut Violations) {
    if let Some(Err(e)) = value.map(|t| check_text(t, MAX_GROUP_TEXT)) {
        v.push(field, e.description);
    }
}

impl Aggregate for Group {
    const TYPE: &'static str = "group";
    const SNAPSHOT_VERSION: i32 = 1;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !accept(self, event)? {
            return Ok(());
        }
        match GroupEvent::decode(event)? {
            GroupEvent::Added(e) => {
                self.id = Some(event.aggregate_id);
                self.org_id = Some(e.org_id);
                self.display_name = Some(e.display_name);
                self.external_id = e.external_id;
                self.description = e.description;
            }
            GroupEvent::Changed(e) => {
                if let Some(name) = e.display_name {
                    self.display_name = Some(name);
                }
                if let Some(external_id) = e.external_id {
                    self.external_id = external_id;
                }
                if let Some(description) = e.description {
                    self.description = description;
                }
            }
            GroupEvent::MemberAdded(e) => {
                self.members.insert(e.user_id);
            }
            GroupEvent::MemberRemoved(e) => {
                self.members.remove(&e.user_id);
            }
            GroupEvent::Removed(_) => self.removed = true,
        }
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

impl Group {
    /// The group's id, once added.
    pub fn id(&self) -> Option<AggregateId> {
        self.id
    }

    /// The owning organisation, once added.
    pub fn org_id(&self) -> Option<AggregateId> {
        self.org_id
    }

    /// The name, once added.
    pub fn display_name(&self) -> Option<&DisplayName> {
        self.display_name.as_ref()
    }

    /// The IdP's id for the group.
    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    /// The description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The member ids, sorted.
    pub fn members(&self) -> &BTreeSet<AggregateId> {
        &self.members
    }

    /// True once added and until removed.
    pub fn exists(&self) -> bool {
        self.display_name.is_some() && !self.removed
    }

    fn require(&self) -> Result<(AggregateId, &DisplayName), DomainError> {
        match (self.org_id, &self.display_name, self.removed) {
            (Some(org), Some(name), false) => Ok((org, name)),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Creates the group and claims its name in its organisation.
    pub fn add(&self, cmd: AddGroup) -> Result<Decision, DomainError> {
        if self.sequence > 0 {
            return Err(DomainError::already_exists("group"));
        }
        let mut v = Violations::new();
        check_name(cmd.org_id, &cmd.display_name, &mut v);
        check_optional_text("external_id", cmd.external_id.as_ref(), &mut v);
        check_optional_text("description", cmd.description.as_ref(), &mut v);
        v.into_result()?;
        let claim = group_name_claim(cmd.org_id, &cmd.display_name);
        Ok(Decision::none()
            .event(&GroupAdded {
                org_id: cmd.org_id,
                display_name: cmd.display_name,
                external_id: cmd.external_id,
                description: cmd.description,
            })?
            .claim(UNIQUE_GROUP_DISPLAY_NAME, claim))
    }

    /// Changes name, external id and description; only fields that differ go into the event,
    /// and a change that changes nothing is an empty decision. A rename releases the old name and
    /// claims the new one (a change of case only releases and claims the same value).
    pub fn change(&self, cmd: GroupChange) -> Result<Decision, DomainError> {
        let (org, current) = self.require()?;
        let mut v = Violations::new();
        if let Some(name) = &cmd.display_name {
            check_name(org, name, &mut v);
        }
        check_optional_text(
            "external_id",
            cmd.external_id.as_ref().and_then(Option::as_ref),
            &mut v,
        );
        check_optional_text(
            "description",
            cmd.description.as_ref().and_then(Option::as_ref),
            &mut v,
        );
        v.into_result()?;
        let event = GroupChanged {
            display_name: cmd.display_name.filter(|n| n != current),
            external_id: cmd.external_id.filter(|e| e != &self.external_id),
            description: cmd.description.filter(|d| d != &self.description),
        };
        if event == GroupChanged::default() {
            return Ok(Decision::none());
        }
        let mut decision = Decision::none();
        if let Some(name) = &event.display_name {
            decision = decision
                .release(UNIQUE_GROUP_DISPLAY_NAME, group_name_claim(org, current))
                .claim(UNIQUE_GROUP_DISPLAY_NAME, group_name_claim(org, name));
        }
        decision.push(&event)?;
        Ok(decision)
    }

    /// One `group.member.added` per id that is not a member yet (duplicates in the input count
    /// once). If every id is a member already the decision is empty: adding is idempotent.
    pub fn add_members(&self, user_ids: &[AggregateId]) -> Result<Decision, DomainError> {
        self.require()?;
        let mut seen = BTreeSet::new();
        let mut decision = Decision::none();
        for &user_id in user_ids {
            if !self.members.contains(&user_id) && seen.insert(user_id) {
                decision.push(&GroupMemberAdded { user_id })?;
            }
        }
        Ok(decision)
    }

    /// One `group.member.removed` per id that is a member; ids that are not are skipped, so
    /// removing is idempotent too.
    pub fn remove_members(&self, user_ids: &[AggregateId]) -> Result<Decision, DomainError> {
        self.require()?;
        let mut seen = BTreeSet::new();
        let mut decision = Decision::none();
        for &user_id in user_ids {
            if self.members.contains(&user_id) && seen.insert(user_id) {
                decision.push(&GroupMemberRemoved { user_id })?;
            }
        }
        Ok(decision)
    }

    /// Replaces the member list (SCIM `PUT`): removals of members not in `user_ids` (in id
    /// order), then additions of the new ones (in input order).
    pub fn set_members(&self, user_ids: &[AggregateId]) -> Result<Decision, DomainError> {
        self.require()?;
        let wanted: BTreeSet<AggregateId> = user_ids.iter().copied().collect();
        let gone: Vec<AggregateId> = self.members.difference(&wanted).copied().collect();
        let mut decision = self.remove_members(&gone)?;
        decision.events.extend(self.add_members(user_ids)?.events);
        Ok(decision)
    }

    /// Removes the group and releases its name. Memberships end with it.
    pub fn remove(&self) -> Result<Decision, DomainError> {
        let (org, name) = self.require()?;
        Ok(Decision::none()
            .event(&GroupRemoved {})?
            .release(UNIQUE_GROUP_DISPLAY_NAME, group_name_claim(org, name)))
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
