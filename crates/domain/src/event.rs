//! The event envelope: what a command hands to the store ([`EventDraft`]) and what the store hands
//! back to every reader ([`StoredEvent`]).

use crate::{AggregateId, AggregateType, EventId, EventType, InstanceId, Position};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event as a command produces it, before the store has given it a sequence and a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    /// The event's id; also its de-duplication key on the stream.
    pub id: EventId,
    /// What happened, e.g. `user.human.added`.
    pub event_type: EventType,
    /// The version of the payload's schema, so readers can upcast old payloads.
    pub revision: i16,
    /// The payload: always a JSON object.
    pub payload: serde_json::Value,
    /// The principal that caused the event (a user or machine id, or `system`).
    pub creator: String,
    /// The organisation (or instance) that owns the resource.
    pub resource_owner: AggregateId,
    /// The W3C `traceparent` of the request that produced the event, if traced.
    pub trace_context: Option<String>,
}

impl EventDraft {
    /// A draft with a fresh id, revision 1 and no trace context.
    pub fn new(
        event_type: EventType,
        payload: serde_json::Value,
        creator: impl Into<String>,
        resource_owner: AggregateId,
    ) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            revision: 1,
            payload,
            creator: creator.into(),
            resource_owner,
            trace_context: None,
        }
    }
}

/// A committed event with everything the store assigned to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's id.
    pub id: EventId,
    /// The tenant.
    pub instance_id: InstanceId,
    /// The kind of aggregate the event belongs to.
    pub aggregate_type: AggregateType,
    /// The aggregate the event belongs to.
    pub aggregate_id: AggregateId,
    /// The event's sequence within its aggregate, starting at 1, without gaps.
    pub sequence: i64,
    /// What happened.
    pub event_type: EventType,
    /// The version of the payload's schema.
    pub revision: i16,
    /// The payload (a JSON object).
    pub payload: serde_json::Value,
    /// The principal that caused the event.
    pub creator: String,
    /// The organisation (or instance) that owns the resource.
    pub resource_owner: AggregateId,
    /// When the event was committed (transaction time).
    pub created_at: DateTime<Utc>,
    /// The global position.
    pub position: Position,
    /// The W3C `traceparent` recorded at push time.
    pub trace_context: Option<String>,
}
