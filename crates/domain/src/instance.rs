//! The instance aggregate: one tenant. It only records the tenant's name and its default
//! organisation; everything else a tenant owns lives in its own aggregates.

use crate::aggregate::{Aggregate, Decision, EventPayload, accept, empty_payload, event_enum};
use crate::{AggregateId, DisplayName, DomainError, StoredEvent};
use serde::{Deserialize, Serialize};

/// `instance.added`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAdded {
    /// JSON `name`.
    pub name: DisplayName,
    /// JSON `defaultOrgId`, omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_org_id: Option<AggregateId>,
}

impl EventPayload for InstanceAdded {
    const EVENT_TYPE: &'static str = "instance.added";
}

/// `instance.changed`: only the changed fields are present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceChanged {
    /// JSON `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    /// JSON `defaultOrgId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_org_id: Option<AggregateId>,
}

impl EventPayload for InstanceChanged {
    const EVENT_TYPE: &'static str = "instance.changed";
}

empty_payload! {
    /// `instance.removed`: `{}`.
    InstanceRemoved = "instance.removed";
    /// `instance.deactivated`: `{}`.
    InstanceDeactivated = "instance.deactivated";
    /// `instance.reactivated`: `{}`.
    InstanceReactivated = "instance.reactivated";
}

/// `instance.domain.added`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDomainAdded {
    /// JSON `domain`.
    pub domain: String,
}

impl EventPayload for InstanceDomainAdded {
    const EVENT_TYPE: &'static str = "instance.domain.added";
}

/// `instance.domain.removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDomainRemoved {
    /// JSON `domain`.
    pub domain: String,
}

impl EventPayload for InstanceDomainRemoved {
    const EVENT_TYPE: &'static str = "instance.domain.removed";
}

event_enum! {
    /// Every event of the instance aggregate.
    InstanceEvent {
        Added(InstanceAdded),
        Changed(InstanceChanged),
        Deactivated(InstanceDeactivated),
        Reactivated(InstanceReactivated),
        DomainAdded(InstanceDomainAdded),
        DomainRemoved(InstanceDomainRemoved),
        Removed(InstanceRemoved),
    }
}

/// Settings a tenant may hold apart from the deployment's; `None` is the deployment's default (its
/// environment variable). Kept in the instance registry and handed to every request with its
/// caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSettings {
    /// How long an email verification code is valid, in seconds (at least 60).
    pub email_code_ttl_secs: Option<i32>,
    /// Wrong guesses that void an email code (at least 1).
    pub email_code_max_attempts: Option<i32>,
    /// Whether emails provisioned over SCIM count as verified.
    pub scim_emails_verified: Option<bool>,
    /// The language of messages to users whose own is unknown (`en`, `de-CH`, ...).
    pub default_language: Option<String>,
    /// Whether a SCIM `DELETE /Users/{id}` erases the user's personal data (`RemoveUser` with
    /// `erase`) instead of only removing the user.
    pub scim_erase_on_delete: Option<bool>,
}

impl InstanceSettings {
    /// Checks every value that is set.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.email_code_ttl_secs.is_some_and(|s| s < 60) {
            return Err(DomainError::invalid(
                "settings.email_code_ttl_secs",
                "must be at least 60",
            ));
        }
        if self.email_code_max_attempts.is_some_and(|a| a < 1) {
            return Err(DomainError::invalid(
                "settings.email_code_max_attempts",
                "must be at least 1",
            ));
        }
        if let Some(language) = &self.default_language
            && crate::LanguageTag::parse(language.clone()).is_err()
        {
            return Err(DomainError::invalid(
                "settings.default_language",
                "must be a language tag such as en or de-CH",
            ));
        }
        Ok(())
    }
}

/// Unique kind: an instance domain, lower-cased, unique across every instance of the deployment
/// (claimed under the nil instance id, see [`crate::InstanceId::SYSTEM`]).
pub const UNIQUE_INSTANCE_DOMAIN: &str = "instance.domain";

/// An instance as rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    sequence: i64,
    id: Option<AggregateId>,
    name: Option<DisplayName>,
    default_org_id: Option<AggregateId>,
    removed: bool,
    #[serde(default)]
    inactive: bool,
    #[serde(default)]
    domains: std::collections::BTreeSet<String>,
}

impl Aggregate for Instance {
    const TYPE: &'static str = "instance";
    const SNAPSHOT_VERSION: i32 = 1;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !accept(self, event)? {
            return Ok(());
        }
        match InstanceEvent::decode(event)? {
            InstanceEvent::Added(e) => {
                self.id = Some(event.aggregate_id);
                self.name = Some(e.name);
                self.default_org_id = e.default_org_id;
            }
            InstanceEvent::Changed(e) => {
                if let Some(name) = e.name {
                    self.name = Some(name);
                }
                if let Some(org) = e.default_org_id {
                    self.default_org_id = Some(org);
                }
            }
            InstanceEvent::Deactivated(_) => self.inactive = true,
            InstanceEvent::Reactivated(_) => self.inactive = false,
            InstanceEvent::DomainAdded(e) => {
                self.domains.insert(e.domain);
            }
            InstanceEvent::DomainRemoved(e) => {
                self.domains.remove(&e.domain);
            }
            InstanceEvent::Removed(_) => self.removed = true,
        }
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

impl Instance {
    /// True once added and until removed.
    pub fn exists(&self) -> bool {
        self.name.is_some() && !self.removed
    }

    /// The instance's id, once added.
    pub fn id(&self) -> Option<AggregateId> {
        self.id
    }

    /// The instance's name, once added.
    pub fn name(&self) -> Option<&DisplayName> {
        self.name.as_ref()
    }

    /// The organisation new users land in when none is named.
    pub fn default_org_id(&self) -> Option<AggregateId> {
        self.default_org_id
    }

    fn require(&self) -> Result<(), DomainError> {
        if self.exists() {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    /// Creates the instance; an id used before (even by a removed instance) is refused.
    pub fn add(
        &self,
        name: DisplayName,
        default_org_id: Option<AggregateId>,
    ) -> Result<Decision, DomainError> {
        if self.sequence > 0 {
            return Err(DomainError::already_exists("instance"));
        }
        Decision::none().event(&InstanceAdded { name, default_org_id })
    }

    /// Changes the name and/or the default organisation; `None` leaves a field as it is, and a
    /// change that changes nothing is an empty decision.
    pub fn change(
        &self,
        name: Option<DisplayName>,
        default_org_id: Option<AggregateId>,
    ) -> Result<Decision, DomainError> {
        self.require()?;
        let change = InstanceChanged {
            name: name.filter(|n| Some(n) != self.name.as_ref()),
            default_org_id: default_org_id.filter(|o| Some(*o) != self.default_org_id),
        };
        if change == InstanceChanged::default() {
            return Ok(Decision::none());
        }
        Decision::none().event(&change)
    }

    /// True while deactivated (its tokens are refused; its data is kept).
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// The instance's domains, sorted.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(String::as_str)
    }

    /// Deactivates the instance; deactivating an inactive instance changes nothing.
    pub fn deactivate(&self) -> Result<Decision, DomainError> {
        self.require()?;
        if self.inactive {
            return Ok(Decision::none());
        }
        Decision::none().event(&InstanceDeactivated {})
    }

    /// Reactivates the instance; reactivating an active instance changes nothing.
    pub fn reactivate(&self) -> Result<Decision, DomainError> {
        self.require()?;
        if !self.inactive {
            return Ok(Decision::none());
        }
        Decision::none().event(&InstanceReactivated {})
    }

    /// A host name as instance domains hold it: lower-cased, dot-separated labels of letters,
    /// digits and inner hyphens, 1 to 63 characters each, 253 in all, no trailing dot.
    pub fn parse_domain(domain: &str) -> Result<String, DomainError> {
        let domain = domain.trim().to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(DomainError::invalid(
                "domain",
                "must be a host name: labels of letters, digits and inner hyphens separated by dots",
            ));
        }
        Ok(domain)
    }

    /// Adds a domain (already parsed); the caller claims it across instances with the push.
    /// Adding a domain the instance has changes nothing.
    pub fn add_domain(&self, domain: &str) -> Result<Decision, DomainError> {
        self.require()?;
        if self.domains.contains(domain) {
            return Ok(Decision::none());
        }
        Decision::none().event(&InstanceDomainAdded {
            domain: domain.to_owned(),
        })
    }

    /// Removes a domain the instance has.
    pub fn remove_domain(&self, domain: &str) -> Result<Decision, DomainError> {
        self.require()?;
        if !self.domains.contains(domain) {
            return Err(DomainError::NotFound);
        }
        Decision::none().event(&InstanceDomainRemoved {
            domain: domain.to_owned(),
        })
    }

    /// Removes the instance.
    pub fn remove(&self) -> Result<Decision, DomainError> {
        self.require()?;
        Decision::none().event(&InstanceRemoved {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::History;

    fn name(s: &str) -> DisplayName {
        DisplayName::parse(s).unwrap()
    }

    #[test]
    fn lifecycle_and_rebuild() {
        let id = AggregateId::new();
        let org = AggregateId::new();
        let mut h = History::<Instance>::new(id, id);
        assert_eq!(h.state.change(None, None), Err(DomainError::NotFound));
        let d = h.run(|i| i.add(name("Acme"), None));
        assert_eq!(d.event_types(), ["instance.added"]);
        assert_eq!(d.events[0].1, serde_json::json!({"name": "Acme"}));
        assert_eq!(h.state.id(), Some(id));
        assert!(matches!(
            h.state.add(name("Again"), None),
            Err(DomainError::AlreadyExists { .. })
        ));

        assert!(h.state.change(Some(name("Acme")), None).unwrap().is_empty());
        let d = h.run(|i| i.change(Some(name("Acme AG")), Some(org)));
        assert_eq!(
            d.events[0].1,
            serde_json::json!({"name": "Acme AG", "defaultOrgId": org.to_string()})
        );
        assert_eq!(h.state.name().unwrap().as_str(), "Acme AG");
        assert_eq!(h.state.default_org_id(), Some(org));

        assert!(h.state.reactivate().unwrap().is_empty());
        let d = h.run(Instance::deactivate);
        assert_eq!(d.event_types(), ["instance.deactivated"]);
        assert!(h.state.is_inactive());
        assert!(h.state.deactivate().unwrap().is_empty());
        h.run(Instance::reactivate);
        assert!(!h.state.is_inactive());

        let domain = Instance::parse_domain(" Login.Acme.EXAMPLE ").unwrap();
        assert_eq!(domain, "login.acme.example");
        for bad in [
            "",
            "-a.example",
            "a..b",
            "a_b.example",
            "a.example.",
            &"x".repeat(64),
        ] {
            assert!(Instance::parse_domain(bad).is_err(), "{bad:?}");
        }
        let d = h.run(|i| i.add_domain(&domain));
        assert_eq!(d.events[0].1, serde_json::json!({"domain": "login.acme.example"}));
        assert!(h.state.add_domain(&domain).unwrap().is_empty());
        assert_eq!(h.state.domains().collect::<Vec<_>>(), ["login.acme.example"]);
        assert_eq!(h.state.remove_domain("other.example"), Err(DomainError::NotFound));
        h.run(|i| i.remove_domain(&domain));
        assert_eq!(h.state.domains().count(), 0);

        h.run(Instance::remove);
        assert!(!h.state.exists());
        assert_eq!(h.state.remove(), Err(DomainError::NotFound));
        assert!(matches!(
            h.state.add(name("Reuse"), None),
            Err(DomainError::AlreadyExists { .. })
        ));
        h.assert_rebuild_matches();
    }
}
