//! The event store: the single source of truth of Cairn.
//!
//! [`EventStore`] is implemented twice, by [`PgEventStore`] (PostgreSQL, what services run on) and
//! [`MemoryEventStore`] (for unit tests of code above the store); both pass the same contract test
//! suite (`tests/contract.rs`). The guarantees (durability, optimistic concurrency, uniqueness in the
//! same transaction, gap-free global order) and how the PostgreSQL implementation meets them are
//! described in `docs/ARCHITECTURE.md`.

mod error;
mod filter;
mod listen;
mod memory;
mod pg;
mod prepared;
mod push;
mod snapshot;

pub use error::StoreError;
pub use filter::{EventFilter, MAX_FILTER_LIMIT};
pub use listen::{CommitListener, Heard, ReconnectBackoff, listen_forever};
pub use memory::MemoryEventStore;
pub use pg::{IDLE_IN_TRANSACTION_TIMEOUT, NOTIFY_CHANNEL, PgEventStore, begin, connect_options, migrate};
pub use prepared::{
    PREPARED_TRANSACTION_MAX_AGE, PreparedTransaction, PreparedTransactions, prepared_transactions,
};
pub use push::{AggregatePush, ExpectedSequence, MAX_PAYLOAD_BYTES, NewDataKey, Push, UniqueOp};
pub use snapshot::Snapshot;

use cairn_domain::{AggregateId, AggregateType, InstanceId, Position, StoredEvent};
use std::future::Future;

/// The operations every event store offers. Implementations are cheap to clone (they share their
/// state), so a service clones one store into every task that needs it.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Commits a push atomically: all its events and unique-constraint operations, or nothing.
    /// Returns the stored events, in push order, with their sequences and positions.
    fn push(&self, push: Push) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Events matching `filter`, in global position order. Only events that no still-running
    /// transaction can precede are returned, so a reader that advances a cursor past the last event
    /// it saw never misses one that commits later.
    fn filter(
        &self,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The position of the last event a tailing reader can see, for one instance or (with `None`)
    /// for the whole store; [`Position::ZERO`] when there is none.
    fn head_position(
        &self,
        instance: Option<InstanceId>,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// One aggregate's events with a sequence greater than `after_sequence`, in sequence order.
    fn load_aggregate(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        after_sequence: i64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Stores a snapshot unless a snapshot at a later sequence is already stored.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The aggregate's snapshot if one was written with `schema_version`; a snapshot written by
    /// another version is ignored (`None`), so the caller replays the aggregate from its events.
    fn load_snapshot(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        schema_version: i32,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;
}
