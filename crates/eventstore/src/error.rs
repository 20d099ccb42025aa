//! What can go wrong when talking to the event store. A conflict and a taken unique value are
//! variants of their own, so that each API maps them to its protocol (gRPC `ABORTED` /
//! `ALREADY_EXISTS`, SCIM `412` / `409`) without parsing messages.

use cairn_domain::{AggregateId, AggregateType, InstanceId};

/// An event store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The push was malformed; nothing was written.
    #[error("invalid push: {field}: {reason}")]
    Invalid {
        /// The offending part of the push, e.g. `aggregates[0].events[2].payload`.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An aggregate was not at the sequence the writer expected (or a concurrent writer appended
    /// the same sequence first); nothing was written.
    #[error(
        "aggregate {aggregate_type} {aggregate_id} was changed concurrently (expected sequence {expected:?}, found {actual:?})"
    )]
    Conflict {
        /// The tenant.
        instance_id: InstanceId,
        /// The aggregate's type.
        aggregate_type: AggregateType,
        /// The aggregate's id.
        aggregate_id: AggregateId,
        /// The sequence the writer expected, if it expected one.
        expected: Option<i64>,
        /// The sequence found, when known.
        actual: Option<i64>,
    },
    /// The push ran in a transaction that took its position before another transaction appended
    /// to the aggregate and committed: the aggregate's next event would stand below its previous
    /// one in position order (DESIGN.md guarantee 11). Nothing was written. Only a push inside a
    /// caller's transaction ([`crate::PgEventStore::push_in`]) returns it: roll that transaction
    /// back and run it again from the start (a new transaction gets a new, higher position). A
    /// retry inside the same transaction, even after a savepoint, fails the same way.
    #[error(
        "aggregate {aggregate_type} {aggregate_id} has an event at position {latest}, above this transaction's {own}; run the transaction again"
    )]
    TransactionTooOld {
        /// The tenant.
        instance_id: InstanceId,
        /// The aggregate's type.
        aggregate_type: AggregateType,
        /// The aggregate's id.
        aggregate_id: AggregateId,
        /// The position of the aggregate's last event.
        latest: i64,
        /// The pushing transaction's position.
        own: i64,
    },
    /// A unique value (a userName, a group name, ...) is already claimed; nothing was written.
    #[error("unique constraint {unique_type} is violated")]
    UniqueViolation {
        /// The kind of value, e.g. `user.username`.
        unique_type: String,
        /// The claimed value, as stored (usually lower-cased).
        value: String,
    },
    /// The store could not be reached or failed; whether the push was committed is unknown only
    /// if the connection broke during commit.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// True for [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
