//! An in-memory event store with the same observable behaviour as the PostgreSQL one, for tests of
//! code that sits above the store. Everything happens under one lock, so every push is atomic and
//! immediately visible in order.

use crate::{EventFilter, EventStore, ExpectedSequence, Push, Snapshot, StoreError, UniqueOp};
use cairn_domain::{AggregateId, AggregateType, Clock, InstanceId, Position, StoredEvent, SystemClock};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

type AggregateKey = (InstanceId, AggregateType, AggregateId);

#[derive(Default)]
struct State {
    events: Vec<StoredEvent>,
    sequences: HashMap<AggregateKey, i64>,
    unique: HashSet<(InstanceId, String, String)>,
    snapshots: HashMap<AggregateKey, Snapshot>,
    next_position: i64,
}

/// The in-memory [`EventStore`].
#[derive(Clone)]
pub struct MemoryEventStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventStore").finish_non_exhaustive()
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryEventStore {
    /// An empty store that stamps events with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_position: 1,
                ..State::default()
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_locked(&self, state: &mut State, push: Push) -> Result<Vec<StoredEvent>, StoreError> {
        let mut current = Vec::with_capacity(push.aggregates.len());
        for aggregate in &push.aggregates {
            let key = (
                aggregate.instance_id,
                aggregate.aggregate_type.clone(),
                aggregate.aggregate_id,
            );
            let actual = state.sequences.get(&key).copied().unwrap_or(0);
            if let ExpectedSequence::Exact(expected) = aggregate.expected
                && expected != actual
            {
                return Err(StoreError::Conflict {
                    instance_id: aggregate.instance_id,
                    aggregate_type: aggregate.aggregate_type.clone(),
                    aggregate_id: aggregate.aggregate_id,
                    expected: Some(expected),
                    actual: Some(actual),
                });
            }
            current.push(actual);
        }
        let mut unique = state.unique.clone();
        for op in &push.unique_ops {
            if let UniqueOp::Remove {
                instance_id,
                unique_type,
                value,
            } = op
            {
                unique.remove(&(*instance_id, unique_type.clone(), value.clone()));
            }
        }
        let mut claimed = HashSet::new();
        for op in &push.unique_ops {
            if let UniqueOp::Add {
                instance_id,
                unique_type,
                value,
            } = op
            {
                let key = (*instance_id, unique_type.clone(), value.clone());
                if !unique.insert(key.clone()) && !claimed.contains(&key) {
                    return Err(StoreError::UniqueViolation {
                        unique_type: unique_type.clone(),
                        value: value.clone(),
                    });
                }
                claimed.insert(key);
            }
        }
        state.unique = unique;

        let position = state.next_position;
        state.next_position += 1;
        let created_at = self.clock.now();
        let mut stored = Vec::with_capacity(push.event_count());
        let mut offset = 0;
        for (aggregate, start) in push.aggregates.into_iter().zip(current) {
            let mut sequence = start;
            for draft in aggregate.events {
                sequence += 1;
                stored.push(StoredEvent {
                    id: draft.id,
                    instance_id: aggregate.instance_id,
                    aggregate_type: aggregate.aggregate_type.clone(),
                    aggregate_id: aggregate.aggregate_id,
                    sequence,
                    event_type: draft.event_type,
                    revision: draft.revision,
                    payload: draft.payload,
                    creator: draft.creator,
                    resource_owner: draft.resource_owner,
                    created_at,
                    position: Position::new(position, offset),
                    trace_context: draft.trace_context,
                });
                offset += 1;
            }
            state.sequences.insert(
                (
                    aggregate.instance_id,
                    aggregate.aggregate_type,
                    aggregate.aggregate_id,
                ),
                sequence,
            );
        }
        state.events.extend(stored.iter().cloned());
        Ok(stored)
    }
}

fn matches(filter: &EventFilter, event: &StoredEvent) -> bool {
    event.position > filter.after
        && filter.up_to.is_none_or(|up_to| event.position <= up_to)
        && filter.instance_id.is_none_or(|i| i == event.instance_id)
        && (filter.aggregate_types.is_empty() || filter.aggregate_types.contains(&event.aggregate_type))
        && (filter.aggregate_ids.is_empty() || filter.aggregate_ids.contains(&event.aggregate_id))
        && (filter.event_types.is_empty() || filter.event_types.contains(&event.event_type))
}

impl EventStore for MemoryEventStore {
    async fn push(&self, push: Push) -> Result<Vec<StoredEvent>, StoreError> {
        push.validate()?;
        let mut state = self.lock();
        self.push_locked(&mut state, push)
    }

    async fn filter(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        filter.validate()?;
        let state = self.lock();
        // Events are appended in position order, so a binary search finds the cursor.
        let start = state.events.partition_point(|e| e.position <= filter.after);
        Ok(state.events[start..]
            .iter()
            .filter(|e| matches(filter, e))
            .take(filter.limit as usize)
            .cloned()
            .collect())
    }

    async fn head_position(&self, instance: Option<InstanceId>) -> Result<Position, StoreError> {
        let state = self.lock();
        Ok(state
            .events
            .iter()
            .rev()
            .find(|e| instance.is_none_or(|i| i == e.instance_id))
            .map_or(Position::ZERO, |e| e.position))
    }

    async fn load_aggregate(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let state = self.lock();
        Ok(state
            .events
            .iter()
            .filter(|e| {
                e.instance_id == instance
                    && e.aggregate_id == aggregate_id
                    && &e.aggregate_type == aggregate_type
                    && e.sequence > after_sequence
            })
            .cloned()
            .collect())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut state = self.lock();
        let key = (
            snapshot.instance_id,
            snapshot.aggregate_type.clone(),
            snapshot.aggregate_id,
        );
        match state.snapshots.get(&key) {
            Some(existing) if existing.sequence > snapshot.sequence => {}
            _ => {
                state.snapshots.insert(key, snapshot);
            }
        }
        Ok(())
    }

    async fn load_snapshot(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        schema_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let state = self.lock();
        Ok(state
            .snapshots
            .get(&(instance, aggregate_type.clone(), aggregate_id))
            .filter(|s| s.schema_version == schema_version)
            .cloned())
    }
}
