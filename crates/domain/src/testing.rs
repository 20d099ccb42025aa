//! Test support: commits decisions to an in-memory history the way the store would (increasing
//! sequences, one position per decision), so tests can check that folding the stored events gives
//! the same state as the running aggregate.

use crate::aggregate::{Aggregate, Decision, rebuild};
use crate::{AggregateId, EventId, InstanceId, Position, StoredEvent};
use chrono::{DateTime, Utc};
use std::fmt::Debug;

/// A fixed instant for tests.
pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// One aggregate's state and the events it was built from.
#[derive(Debug)]
pub(crate) struct History<A> {
    pub state: A,
    pub events: Vec<StoredEvent>,
    pub id: AggregateId,
    pub owner: AggregateId,
    instance: InstanceId,
}

impl<A: Aggregate + PartialEq + Debug> History<A> {
    pub fn new(id: AggregateId, owner: AggregateId) -> Self {
        Self {
            state: A::default(),
            events: Vec::new(),
            id,
            owner,
            instance: InstanceId::new(),
        }
    }

    /// Wraps the decision's events into stored events and folds them into the state.
    pub fn commit(&mut self, decision: &Decision) {
        let position = self.events.len() as i64 + 1;
        for (offset, (event_type, payload)) in decision.events.iter().enumerate() {
            let event = StoredEvent {
                id: EventId::new(),
                instance_id: self.instance,
                aggregate_type: A::aggregate_type(),
                aggregate_id: self.id,
                sequence: self.state.sequence() + 1,
                event_type: event_type.clone(),
                revision: 1,
                payload: payload.clone(),
                creator: "test".into(),
                resource_owner: self.owner,
                created_at: t0(),
                position: Position::new(position, offset as i32),
                trace_context: None,
            };
            self.state.apply(&event).unwrap();
            self.events.push(event);
        }
    }

    /// Runs a command against the state and commits its decision.
    pub fn run(&mut self, command: impl FnOnce(&A) -> Result<Decision, crate::DomainError>) -> Decision {
        let decision = command(&self.state).unwrap();
        self.commit(&decision);
        decision
    }

    /// Asserts that a fresh fold of the history, and a snapshot round trip, equal the state.
    pub fn assert_rebuild_matches(&self) {
        let rebuilt: A = rebuild(&self.events).unwrap();
        assert_eq!(rebuilt, self.state, "rebuild from events differs");
        let snapshot = serde_json::to_value(&self.state).unwrap();
        let restored: A = serde_json::from_value(snapshot).unwrap();
        assert_eq!(restored, self.state, "snapshot round trip differs");
        // Folding the history again into the restored snapshot skips every event.
        let mut again = restored;
        for event in &self.events {
            again.apply(event).unwrap();
        }
        assert_eq!(again, self.state, "re-applying folded events changed the state");
    }
}
