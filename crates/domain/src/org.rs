//! The organisation aggregate: a named owner of users and groups inside an instance, with the DNS
//! domains it has claimed. A domain's uniqueness is claimed when it is verified (only a verified
//! domain can become primary), so an unverified claim cannot squat on another tenant's domain.

use crate::aggregate::{
    Aggregate, Decision, EventPayload, UNIQUE_ORG_DOMAIN, UNIQUE_ORG_NAME, accept, empty_payload, event_enum,
};
use crate::{AggregateId, DisplayName, DomainError, DomainName, StoredEvent};
use serde::{Deserialize, Serialize};

/// The most domains one organisation may hold.
pub const MAX_ORG_DOMAINS: usize = 100;

/// `org.added`: JSON `{"name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgAdded {
    /// JSON `name`.
    pub name: DisplayName,
}

/// `org.changed`: JSON `{"name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgChanged {
    /// JSON `name`.
    pub name: DisplayName,
}

/// `org.domain.added`, `org.domain.verified`, `org.domain.primary.set` and `org.domain.removed`
/// all carry JSON `{"domain"}`.
macro_rules! domain_payload {
    ($($(#[$doc:meta])* $name:ident = $event:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// JSON `domain`.
            pub domain: DomainName,
        }

        impl EventPayload for $name {
            const EVENT_TYPE: &'static str = $event;
        }
    )*};
}

domain_payload! {
    /// `org.domain.added`.
    OrgDomainAdded = "org.domain.added";
    /// `org.domain.verified`.
    OrgDomainVerified = "org.domain.verified";
    /// `org.domain.primary.set`.
    OrgDomainPrimarySet = "org.domain.primary.set";
    /// `org.domain.removed`.
    OrgDomainRemoved = "org.domain.removed";
}

impl EventPayload for OrgAdded {
    const EVENT_TYPE: &'static str = "org.added";
}

impl EventPayload for OrgChanged {
    const EVENT_TYPE: &'static str = "org.changed";
}

empty_payload! {
    /// `org.deactivated`: `{}`.
    OrgDeactivated = "org.deactivated";
    /// `org.reactivated`: `{}`.
    OrgReactivated = "org.reactivated";
    /// `org.removed`: `{}`.
    OrgRemoved = "org.removed";
}

event_enum! {
    /// Every event of the organisation aggregate.
    OrgEvent {
        Added(OrgAdded),
        Changed(OrgChanged),
        Deactivated(OrgDeactivated),
        Reactivated(OrgReactivated),
        Removed(OrgRemoved),
        DomainAdded(OrgDomainAdded),
        DomainVerified(OrgDomainVerified),
        DomainPrimarySet(OrgDomainPrimarySet),
        DomainRemoved(OrgDomainRemoved),
    }
}

/// The lifecycle of an organisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgState {
    /// Never added.
    #[default]
    Absent,
    /// In use.
    Active,
    /// Deactivated; can be reactivated.
    Inactive,
    /// Removed for good.
    Removed,
}

/// One domain of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgDomain {
    /// The domain, lower-cased.
    pub name: DomainName,
    /// Whether ownership was proven (the proof itself happens outside the domain).
    pub verified: bool,
    /// Whether this is the organisation's primary domain.
    pub primary: bool,
}

/// An organisation as rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Org {
    sequence: i64,
    id: Option<AggregateId>,
    state: OrgState,
    name: Option<DisplayName>,
    domains: Vec<OrgDomain>,
}

impl Aggregate for Org {
    const TYPE: &'static str = "org";
    const SNAPSHOT_VERSION: i32 = 1;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !accept(self, event)? {
            return Ok(());
        }
        match OrgEvent::decode(event)? {
            OrgEvent::Added(e) => {
                self.id = Some(event.aggregate_id);
                self.name = Some(e.name);
                self.state = OrgState::Active;
            }
            OrgEvent::Changed(e) => self.name = Some(e.name),
            OrgEvent::Deactivated(_) => self.state = OrgState::Inactive,
            OrgEvent::Reactivated(_) => self.state = OrgState::Active,
            OrgEvent::Removed(_) => self.state = OrgState::Removed,
            OrgEvent::DomainAdded(e) => self.domains.push(OrgDomain {
                name: e.domain,
                verified: false,
                primary: false,
            }),
            OrgEvent::DomainVerified(e) => {
                if let Some(d) = self.domains.iter_mut().find(|d| d.name == e.domain) {
                    d.verified = true;
                }
            }
            OrgEvent::DomainPrimarySet(e) => {
                for d in &mut self.domains {
                    d.primary = d.name == e.domain;
                }
            }
            OrgEvent::DomainRemoved(e) => self.domains.retain(|d| d.name != e.domain),
        }
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

impl Org {
    /// The organisation's id, once added.
    pub fn id(&self) -> Option<AggregateId> {
        self.id
    }

    /// The lifecycle state.
    pub fn state(&self) -> OrgState {
        self.state
    }

    /// The name, once added.
    pub fn name(&self) -> Option<&DisplayName> {
        self.name.as_ref()
    }

    /// The domains, in the order they were added.
    pub fn domains(&self) -> &[OrgDomain] {
        &self.domains
    }

    /// The primary domain, if one was set.
    pub fn primary_domain(&self) -> Option<&DomainName> {
        self.domains.iter().find(|d| d.primary).map(|d| &d.name)
    }

    /// True while the organisation exists (active or inactive).
    pub fn exists(&self) -> bool {
        matches!(self.state, OrgState::Active | OrgState::Inactive)
    }

    fn require(&self) -> Result<&DisplayName, DomainError> {
        match (&self.name, self.exists()) {
            (Some(name), true) => Ok(name),
            _ => Err(DomainError::NotFound),
        }
    }

    fn domain(&self, domain: &DomainName) -> Result<&OrgDomain, DomainError> {
        self.require()?;
        self.domains
            .iter()
            .find(|d| &d.name == domain)
            .ok_or(DomainError::NotFound)
    }

    /// Creates the organisation and claims its name.
    pub fn add(&self, name: DisplayName) -> Result<Decision, DomainError> {
        if self.sequence > 0 {
            return Err(DomainError::already_exists("organisation"));
        }
        let claim = name.normalized();
        Ok(Decision::none()
            .event(&OrgAdded { name })?
            .claim(UNIQUE_ORG_NAME, claim))
    }

    /// Renames the organisation, releasing the old name and claiming the new one. The same name
    /// is an empty decision.
    pub fn rename(&self, name: DisplayName) -> Result<Decision, DomainError> {
        let old = self.require()?;
        if old == &name {
            return Ok(Decision::none());
        }
        let (released, claimed) = (old.normalized(), name.normalized());
        Ok(Decision::none()
            .event(&OrgChanged { name })?
            .release(UNIQUE_ORG_NAME, released)
            .claim(UNIQUE_ORG_NAME, claimed))
    }

    /// Active → inactive.
    pub fn deactivate(&self) -> Result<Decision, DomainError> {
        self.require()?;
        if self.state != OrgState::Active {
            return Err(DomainError::precondition("organisation is already inactive"));
        }
        Decision::none().event(&OrgDeactivated {})
    }

    /// Inactive → active.
    pub fn reactivate(&self) -> Result<Decision, DomainError> {
        self.require()?;
        if self.state != OrgState::Inactive {
            return Err(DomainError::precondition("organisation is already active"));
        }
        Decision::none().event(&OrgReactivated {})
    }

    /// Removes the organisation, releasing its name and every verified domain. Its users and
    /// groups are cleaned up by the command layer from the read model.
    pub fn remove(&self) -> Result<Decision, DomainError> {
        let name = self.require()?;
        let mut decision = Decision::none()
            .event(&OrgRemoved {})?
            .release(UNIQUE_ORG_NAME, name.normalized());
        for d in self.domains.iter().filter(|d| d.verified) {
            decision = decision.release(UNIQUE_ORG_DOMAIN, d.name.as_str());
        }
        Ok(decision)
    }

    /// Adds an unverified domain.
    pub fn add_domain(&self, domain: DomainName) -> Result<Decision, DomainError> {
        self.require()?;
        if self.domains.iter().any(|d| d.name == domain) {
            return Err(DomainError::already_exists("domain"));
        }
        if self.domains.len() >= MAX_ORG_DOMAINS {
            return Err(DomainError::invalid(
                "domain",
                format!("an organisation holds at most {MAX_ORG_DOMAINS} domains"),
            ));
        }
        Decision::none().event(&OrgDomainAdded { domain })
    }

    /// Records that ownership of `domain` was proven and claims it instance-wide.
    pub fn verify_domain(&self, domain: DomainName) -> Result<Decision, DomainError> {
        if self.domain(&domain)?.verified {
            return Err(DomainError::precondition("domain is already verified"));
        }
        let claim = domain.as_str().to_owned();
        Ok(Decision::none()
            .event(&OrgDomainVerified { domain })?
            .claim(UNIQUE_ORG_DOMAIN, claim))
    }

    /// Makes a verified domain the primary one.
    pub fn set_primary_domain(&self, domain: DomainName) -> Result<Decision, DomainError> {
        let found = self.domain(&domain)?;
        if !found.verified {
            return Err(DomainError::precondition(
                "a domain must be verified before it becomes primary",
            ));
        }
        if found.primary {
            return Err(DomainError::precondition("domain is already primary"));
        }
        Decision::none().event(&OrgDomainPrimarySet { domain })
    }

    /// Removes a domain that is not primary, releasing its claim if it was verified.
    pub fn remove_domain(&self, domain: DomainName) -> Result<Decision, DomainError> {
        let found = self.domain(&domain)?;
        if found.primary {
            return Err(DomainError::precondition(
                "the primary domain cannot be removed; set another primary domain first",
            ));
        }
        let release = found.verified.then(|| domain.as_str().to_owned());
        let mut decision = Decision::none().event(&OrgDomainRemoved { domain })?;
        if let Some(value) = release {
            decision = decision.release(UNIQUE_ORG_DOMAIN, value);
        }
        Ok(decision)
    }
}

#[cfg(test)]
#[path = "org_tests.rs"]
mod tests;
