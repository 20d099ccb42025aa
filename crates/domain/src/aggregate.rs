//! The shape every aggregate shares: state is rebuilt by folding its events ([`Aggregate::apply`]),
//! and a command reads that state and returns a [`Decision`] (new events plus unique-value claims
//! and releases) without performing any I/O. The command layer turns a decision into one store
//! push, expecting the aggregate's [`Aggregate::sequence`], so a stale decision conflicts instead
//! of overwriting.

use crate::{AggregateType, DomainError, EventType, StoredEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Unique kind: a user's lower-cased userName, unique per instance.
pub const UNIQUE_USERNAME: &str = "user.username";
/// Unique kind: `<org id>:<lower-cased displayName>`, a group name unique per organisation.
pub const UNIQUE_GROUP_DISPLAY_NAME: &str = "group.displayname";
/// Unique kind: an organisation's lower-cased name, unique per instance.
pub const UNIQUE_ORG_NAME: &str = "org.name";
/// Unique kind: a verified (and so possibly primary) organisation domain, lower-cased.
pub const UNIQUE_ORG_DOMAIN: &str = "org.domain";

/// State rebuilt from events, plus the metadata the store needs to load and snapshot it.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// The aggregate type as stored with each event, e.g. `user`.
    const TYPE: &'static str;
    /// The version of the serialised state; bumping it makes older snapshots ignored.
    const SNAPSHOT_VERSION: i32;

    /// Folds one event into the state. Events at or below [`Aggregate::sequence`] were folded
    /// before (a snapshot overlapping the loaded tail) and are skipped; an event of another
    /// aggregate type, a gap in the sequence, or a payload that does not parse is
    /// [`DomainError::Corrupt`].
    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError>;

    /// The sequence of the last event folded in; `0` for an aggregate with no events.
    fn sequence(&self) -> i64;

    /// [`Aggregate::TYPE`] as an [`AggregateType`].
    fn aggregate_type() -> AggregateType {
        AggregateType::from_static(Self::TYPE)
    }
}

/// Folds `events` (in sequence order) into a fresh aggregate.
pub fn rebuild<A: Aggregate>(events: &[StoredEvent]) -> Result<A, DomainError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event)?;
    }
    Ok(aggregate)
}

/// Checks an event before an aggregate folds it: `Ok(false)` when it was folded already,
/// `Ok(true)` when it is the next one, an error when it cannot belong here.
pub(crate) fn accept<A: Aggregate>(state: &A, event: &StoredEvent) -> Result<bool, DomainError> {
    if event.aggregate_type.as_str() != A::TYPE {
        return Err(DomainError::Corrupt(format!(
            "a {} event was folded into a {} aggregate",
            event.aggregate_type,
            A::TYPE
        )));
    }
    let current = state.sequence();
    if event.sequence <= current {
        return Ok(false);
    }
    if event.sequence != current + 1 {
        return Err(DomainError::Corrupt(format!(
            "{} {}: expected sequence {}, got {}",
            A::TYPE,
            event.aggregate_id,
            current + 1,
            event.sequence
        )));
    }
    Ok(true)
}

/// A typed event payload: the struct serialises to the event's JSON object and knows its type.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The event type, lower-case dotted (`user.human.added`).
    const EVENT_TYPE: &'static str;

    /// [`EventPayload::EVENT_TYPE`] as an [`EventType`].
    fn event_type() -> EventType {
        EventType::from_static(Self::EVENT_TYPE)
    }

    /// Parses a stored event's payload as this type.
    fn decode(event: &StoredEvent) -> Result<Self, DomainError> {
        serde_json::from_value(event.payload.clone()).map_err(|e| {
            DomainError::Corrupt(format!(
                "{} {} sequence {}: {} payload does not parse: {e}",
                event.aggregate_type, event.aggregate_id, event.sequence, event.event_type
            ))
        })
    }
}

/// A claim on or a release of a unique value; the command layer adds the instance id and turns it
/// into the store's unique operation, applied in the same transaction as the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueChange {
    /// Claim `value`; the push fails if another aggregate holds it.
    Claim {
        /// One of the `UNIQUE_*` kinds.
        kind: &'static str,
        /// The normalised value.
        value: String,
    },
    /// Release `value`.
    Release {
        /// One of the `UNIQUE_*` kinds.
        kind: &'static str,
        /// The normalised value.
        value: String,
    },
}

/// What a command decided: the events to append, in order, and the unique values to claim or
/// release with them. A decision with no events means the command changed nothing; the command
/// layer then pushes nothing and answers with the aggregate's current state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The new events as (type, JSON object payload).
    pub events: Vec<(EventType, serde_json::Value)>,
    /// Unique-value operations to apply in the same transaction.
    pub unique: Vec<UniqueChange>,
}

impl Decision {
    /// An empty decision: nothing changes.
    pub fn none() -> Self {
        Self::default()
    }

    /// True if the decision has no events (and so nothing to push).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends a typed event.
    pub fn event<P: EventPayload>(mut self, payload: &P) -> Result<Self, DomainError> {
        self.push(payload)?;
        Ok(self)
    }

    /// Appends a typed event in place.
    pub fn push<P: EventPayload>(&mut self, payload: &P) -> Result<(), DomainError> {
        let value = serde_json::to_value(payload).map_err(|e| {
            DomainError::Corrupt(format!("{} payload does not serialise: {e}", P::EVENT_TYPE))
        })?;
        self.events.push((P::event_type(), value));
        Ok(())
    }

    /// Adds a claim of `value` under `kind`.
    pub fn claim(mut self, kind: &'static str, value: impl Into<String>) -> Self {
        self.unique.push(UniqueChange::Claim {
            kind,
            value: value.into(),
        });
        self
    }

    /// Adds a release of `value` under `kind`.
    pub fn release(mut self, kind: &'static str, value: impl Into<String>) -> Self {
        self.unique.push(UniqueChange::Release {
            kind,
            value: value.into(),
        });
        self
    }

    /// Appends `other`'s events and unique changes after this decision's. Only for decisions
    /// taken against the same state that do not depend on each other (a SCIM `PUT` changes the
    /// userName, the profile and the active flag at once).
    pub fn merge(&mut self, other: Decision) {
        self.events.extend(other.events);
        self.unique.extend(other.unique);
    }

    /// The event types, in order; handy for logs and tests.
    pub fn event_types(&self) -> Vec<&str> {
        self.events.iter().map(|(t, _)| t.as_str()).collect()
    }
}

/// Empty event payloads (`user.locked`, `group.removed`, ...) still serialise as `{}`, because
/// the store takes only JSON objects.
macro_rules! empty_payload {
    ($($(#[$doc:meta])* $name:ident = $event:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct $name {}

        impl $crate::aggregate::EventPayload for $name {
            const EVENT_TYPE: &'static str = $event;
        }
    )*};
}
pub(crate) use empty_payload;

/// Declares an aggregate's event enum: one variant per payload type, a decoder from
/// [`StoredEvent`], and the list of the aggregate's event types (for subscriptions and filters).
macro_rules! event_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($payload:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[allow(missing_docs)] // the payload type documents the event
                $variant($payload),
            )*
        }

        impl $name {
            /// Every event type of this aggregate.
            pub const EVENT_TYPES: &'static [&'static str] =
                &[$(<$payload as $crate::aggregate::EventPayload>::EVENT_TYPE),*];

            /// Parses a stored event; an unknown type or a malformed payload is
            /// [`crate::DomainError::Corrupt`].
            pub fn decode(event: &$crate::StoredEvent) -> Result<Self, $crate::DomainError> {
                use $crate::aggregate::EventPayload;
                let t = event.event_type.as_str();
                $(
                    if t == <$payload>::EVENT_TYPE {
                        return <$payload>::decode(event).map(Self::$variant);
                    }
                )*
                Err($crate::DomainError::Corrupt(format!(
                    "{} sequence {}: unknown event type {t}",
                    event.aggregate_id, event.sequence
                )))
            }
        }
    };
}
pub(crate) use event_enum;

/// Deserialises a patch field of type `Option<Option<T>>`: an absent field stays `None`
/// (unchanged, via `#[serde(default)]`), `null` becomes `Some(None)` (cleared) and a value
/// `Some(Some(v))`. Paired with `skip_serializing_if = "Option::is_none"`.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
