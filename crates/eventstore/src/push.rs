//! What a writer hands to [`crate::EventStore::push`], and the checks every implementation runs
//! before touching storage.

use crate::StoreError;
use cairn_domain::{AggregateId, AggregateType, Decision, EventDraft, InstanceId, UniqueChange};
use std::collections::HashSet;

/// The largest accepted payload, serialised.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The most events one push may carry.
pub const MAX_EVENTS_PER_PUSH: usize = 10_000;
const MAX_CREATOR_LEN: usize = 200;
const MAX_UNIQUE_LEN: usize = 1024;

/// Where a writer expects an aggregate to be before its events are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedSequence {
    /// Append wherever the aggregate is (a concurrent append of the same sequence still conflicts).
    Any,
    /// The aggregate must be at exactly this sequence; `Exact(0)` means it must not exist yet.
    Exact(i64),
}

/// Events for one aggregate within a push.
#[derive(Debug, Clone)]
pub struct AggregatePush {
    /// The tenant.
    pub instance_id: InstanceId,
    /// The aggregate's type.
    pub aggregate_type: AggregateType,
    /// The aggregate's id.
    pub aggregate_id: AggregateId,
    /// The sequence the writer decided against.
    pub expected: ExpectedSequence,
    /// The events, in order; at least one.
    pub events: Vec<EventDraft>,
}

/// A claim on or a release of a unique value, applied in the push's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueOp {
    /// Claims `value` for `unique_type` in the instance; the push fails if it is taken.
    Add {
        /// The tenant.
        instance_id: InstanceId,
        /// The kind of value, e.g. `user.username`.
        unique_type: String,
        /// The value, normalised by the caller (e.g. lower-cased).
        value: String,
    },
    /// Releases a value; releasing a value that is not claimed is not an error.
    Remove {
        /// The tenant.
        instance_id: InstanceId,
        /// The kind of value.
        unique_type: String,
        /// The value.
        value: String,
    },
}

/// A data key made for the first sealed push of a subject (a user), stored in the same statement
/// as the push's events (`eventstore.data_keys`), so a key exists exactly when its subject's first
/// events do. The key material is sealed by the caller; the store keeps it as it is given. A key
/// already stored for the subject fails the push as a conflict on the subject's aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDataKey {
    /// The tenant.
    pub instance_id: InstanceId,
    /// What the key is for (`user`).
    pub purpose: String,
    /// The subject (the aggregate whose data the key seals).
    pub subject_id: AggregateId,
    /// The keyring key that sealed it.
    pub key_id: String,
    /// The seal's nonce.
    pub nonce: String,
    /// The sealed key.
    pub ciphertext: String,
}

/// One atomic write: events for one or several aggregates plus unique-constraint operations.
#[derive(Debug, Clone, Default)]
pub struct Push {
    /// The aggregates and their events; each aggregate appears once.
    pub aggregates: Vec<AggregatePush>,
    /// Unique-constraint operations; removals are applied before additions.
    pub unique_ops: Vec<UniqueOp>,
    /// Data keys to store with the events (see [`NewDataKey`]).
    pub data_keys: Vec<NewDataKey>,
}

impl Push {
    /// A push of events for one aggregate.
    pub fn single(
        instance_id: InstanceId,
        aggregate_type: AggregateType,
        aggregate_id: AggregateId,
        expected: ExpectedSequence,
        events: Vec<EventDraft>,
    ) -> Self {
        Self {
            aggregates: vec![AggregatePush {
                instance_id,
                aggregate_type,
                aggregate_id,
                expected,
                events,
            }],
            unique_ops: Vec::new(),
            data_keys: Vec::new(),
        }
    }

    /// The push for one aggregate's [`Decision`]: its events (in order, attributed to `creator` and
    /// owned by `resource_owner`) and its unique claims and releases, scoped to `instance_id`.
    pub fn from_decision(
        instance_id: InstanceId,
        aggregate_type: AggregateType,
        aggregate_id: AggregateId,
        expected: ExpectedSequence,
        decision: Decision,
        creator: &str,
        resource_owner: AggregateId,
    ) -> Self {
        let events = decision
            .events
            .into_iter()
            .map(|(event_type, payload)| EventDraft::new(event_type, payload, creator, resource_owner))
            .collect();
        let mut push = Self::single(instance_id, aggregate_type, aggregate_id, expected, events);
        push.unique_ops = decision
            .unique
            .into_iter()
            .map(|change| match change {
                UniqueChange::Claim { kind, value } => UniqueOp::Add {
                    instance_id,
                    unique_type: kind.to_owned(),
                    value,
                },
                UniqueChange::Release { kind, value } => UniqueOp::Remove {
                    instance_id,
                    unique_type: kind.to_owned(),
                    value,
                },
            })
            .collect();
        push
    }

    /// Adds another aggregate's events and unique operations to this push (one transaction).
    pub fn and(mut self, other: Push) -> Self {
        self.aggregates.extend(other.aggregates);
        self.unique_ops.extend(other.unique_ops);
        self.data_keys.extend(other.data_keys);
        self
    }

    /// Records `traceparent` (the W3C trace context of the request that made the push) on every
    /// event that has none yet, so readers and the relay can continue the trace.
    pub fn traced(mut self, traceparent: Option<String>) -> Self {
        if let Some(traceparent) = traceparent {
            for draft in self.aggregates.iter_mut().flat_map(|a| a.events.iter_mut()) {
                if draft.trace_context.is_none() {
                    draft.trace_context = Some(traceparent.clone());
                }
            }
        }
        self
    }

    /// Adds a unique-constraint operation.
    pub fn with_unique(mut self, op: UniqueOp) -> Self {
        self.unique_ops.push(op);
        self
    }

    /// The number of events in the push.
    pub fn event_count(&self) -> usize {
        self.aggregates.iter().map(|a| a.events.len()).sum()
    }

    /// Checks the push without touching storage: not empty, each aggregate once with at least one
    /// event, payloads JSON objects within [`MAX_PAYLOAD_BYTES`], sane creators and unique values.
    /// Names are already valid by construction ([`AggregateType`], `EventType`).
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.aggregates.is_empty() {
            return Err(StoreError::invalid(
                "aggregates",
                "a push needs at least one event",
            ));
        }
        let total = self.event_count();
        if total > MAX_EVENTS_PER_PUSH {
            return Err(StoreError::invalid(
                "aggregates",
                format!("a push carries at most {MAX_EVENTS_PER_PUSH} events, got {total}"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, aggregate) in self.aggregates.iter().enumerate() {
            let key = (
                aggregate.instance_id,
                &aggregate.aggregate_type,
                aggregate.aggregate_id,
            );
            if !seen.insert(key) {
                return Err(StoreError::invalid(
                    format!("aggregates[{i}]"),
                    "an aggregate may appear only once in a push",
                ));
            }
            if aggregate.events.is_empty() {
                return Err(StoreError::invalid(
                    format!("aggregates[{i}].events"),
                    "must not be empty",
                ));
            }
            if let ExpectedSequence::Exact(n) = aggregate.expected
                && n < 0
            {
                return Err(StoreError::invalid(
                    format!("aggregates[{i}].expected"),
                    "must not be negative",
                ));
            }
            for (j, event) in aggregate.events.iter().enumerate() {
                validate_event(event).map_err(|(field, reason)| {
                    StoreError::invalid(format!("aggregates[{i}].events[{j}].{field}"), reason)
                })?;
            }
        }
        for (i, op) in self.unique_ops.iter().enumerate() {
            let (unique_type, value) = match op {
                UniqueOp::Add {
                    unique_type, value, ..
                }
                | UniqueOp::Remove {
                    unique_type, value, ..
                } => (unique_type, value),
            };
            if unique_type.is_empty() || unique_type.len() > MAX_UNIQUE_LEN {
                return Err(StoreError::invalid(
                    format!("unique_ops[{i}].unique_type"),
                    "must be 1 to 1024 bytes",
                ));
            }
            if value.is_empty() || value.len() > MAX_UNIQUE_LEN {
                return Err(StoreError::invalid(
                    format!("unique_ops[{i}].value"),
                    "must be 1 to 1024 bytes",
                ));
            }
        }
        Ok(())
    }
}

fn validate_event(event: &EventDraft) -> Result<(), (&'static str, String)> {
    if !event.payload.is_object() {
        return Err(("payload", "must be a JSON object".into()));
    }
    let size = serde_json::to_vec(&event.payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err((
            "payload",
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes, got {size}"),
        ));
    }
    if event.creator.is_empty() || event.creator.len() > MAX_CREATOR_LEN {
        return Err(("creator", format!("must be 1 to {MAX_CREATOR_LEN} bytes")));
    }
    if event.revision < 1 {
        return Err(("revision", "must be at least 1".into()));
    }
    Ok(())
}
