//! The bottom of Cairn's crate graph: identifiers, the event envelope, global positions, the clock,
//! and the domain model — aggregates rebuilt from events and commands that decide new events.
//! Nothing here performs I/O; every type parses its input at the edge so that the rest of the
//! system cannot hold a malformed name or id.

pub mod action;
pub mod aggregate;
pub mod clock;
pub mod error;
pub mod event;
pub mod group;
pub mod ids;
pub mod instance;
pub mod names;
pub mod org;
pub mod personal;
pub mod position;
pub mod user;
pub mod values;

#[cfg(test)]
mod testing;

pub use aggregate::{
    Aggregate, Decision, EventPayload, UNIQUE_GROUP_DISPLAY_NAME, UNIQUE_ORG_DOMAIN, UNIQUE_ORG_NAME,
    UNIQUE_USERNAME, UniqueChange, rebuild,
};
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{DomainError, FieldViolation, Violations};
pub use event::{EventDraft, StoredEvent};
pub use group::{Group, GroupEvent};
pub use ids::{AggregateId, EventId, InstanceId};
pub use instance::{Instance, InstanceEvent, InstanceSettings, UNIQUE_INSTANCE_DOMAIN};
pub use names::{AggregateType, EventType, NameError};
pub use org::{Org, OrgEvent, OrgState};
pub use position::{Position, PositionParseError};
pub use user::{User, UserEvent, UserState};
pub use values::{
    DisplayName, DomainName, EmailAddress, InvalidValue, LanguageTag, PasswordHash, PhoneNumber, UserName,
};
