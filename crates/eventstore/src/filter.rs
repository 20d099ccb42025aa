//! Which events a reader asks for.

use cairn_domain::{AggregateId, AggregateType, EventType, InstanceId, Position};

/// The largest page a single filter call returns.
pub const MAX_FILTER_LIMIT: u32 = 10_000;

/// A query over the global order. Empty lists mean "any"; `after` is an exclusive cursor compared as
/// a (position, offset) tuple, never an OFFSET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's events.
    pub instance_id: Option<InstanceId>,
    /// Only these aggregate types.
    pub aggregate_types: Vec<AggregateType>,
    /// Only these aggregates.
    pub aggregate_ids: Vec<AggregateId>,
    /// Only these event types.
    pub event_types: Vec<EventType>,
    /// Only events strictly after this position.
    pub after: Position,
    /// Only events at or before this position.
    pub up_to: Option<Position>,
    /// At most this many events (1 to [`MAX_FILTER_LIMIT`]).
    pub limit: u32,
}

impl Default for EventFilter {
    fn default() -> Self {
        Self {
            instance_id: None,
            aggregate_types: Vec::new(),
            aggregate_ids: Vec::new(),
            event_types: Vec::new(),
            after: Position::ZERO,
            up_to: None,
            limit: 1000,
        }
    }
}

impl EventFilter {
    /// Everything after `after`, at most `limit` events.
    pub fn after(after: Position, limit: u32) -> Self {
        Self {
            after,
            limit,
            ..Self::default()
        }
    }

    /// Restricts the filter to one instance.
    pub fn instance(mut self, instance: InstanceId) -> Self {
        self.instance_id = Some(instance);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), crate::StoreError> {
        if self.limit == 0 || self.limit > MAX_FILTER_LIMIT {
            return Err(crate::StoreError::invalid(
                "limit",
                format!("must be between 1 and {MAX_FILTER_LIMIT}"),
            ));
        }
        Ok(())
    }
}
