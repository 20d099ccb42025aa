//! Snapshots of aggregate state, so that loading a long-lived aggregate replays only its tail.

use cairn_domain::{AggregateId, AggregateType, InstanceId};

/// An aggregate's state as of `sequence`, serialised by the aggregate's own code.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The tenant.
    pub instance_id: InstanceId,
    /// The aggregate's type.
    pub aggregate_type: AggregateType,
    /// The aggregate's id.
    pub aggregate_id: AggregateId,
    /// The sequence of the last event folded into `state`.
    pub sequence: i64,
    /// The version of the state's schema; a reader with another version ignores the snapshot.
    pub schema_version: i32,
    /// The serialised state.
    pub state: serde_json::Value,
}
