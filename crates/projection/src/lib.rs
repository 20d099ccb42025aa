//! The projection framework: turns the event log into read models, exactly once per event, with
//! at most one writer per (projection, instance).
//!
//! - [`Projection`]: what a read model declares — a name, the event types it needs, a `reduce`
//!   that applies one event inside the batch transaction, optionally a faster `reduce_many`.
//! - [`worker`]: one batch for one (projection, instance): read events after the stored position,
//!   apply them in one transaction (a savepoint per event when isolating a failure), write the new
//!   position in the same transaction, check the lease (fencing), commit, announce.
//! - [`lease`]: `projection_locks` rows, replica heartbeats and rendezvous hashing.
//! - [`projector`]: a replica: discovers instances, keeps its share of leases, runs a worker per
//!   held lease, wakes workers from JetStream and on a periodic head check.
//! - [`health`]: the data behind `GET /api/v1/admin/projections/health`.
//! - [`failed`]: failed events for operators: list, retry, skip (the operator console).
//! - [`wait`]: read-your-writes: [`wait::PositionWaiter`] waits until projections reach a
//!   position, woken by the commit announcements on [`PROJECTION_CHANNEL`].
//!
//! `docs/ARCHITECTURE.md` ("Projections") explains how this meets DESIGN.md guarantees 5 and 6.

pub mod failed;
pub mod health;
pub mod lease;
pub mod projector;
pub mod wait;
pub mod worker;

use cairn_domain::{EventType, InstanceId, StoredEvent};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The `NOTIFY` channel on which a committed projection batch is announced; the payload is
/// `<projection>:<instance>:<position>.<offset>`.
pub const PROJECTION_CHANNEL: &str = "cairn_projections";

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// The event cannot be applied (a malformed payload, a violated constraint, ...).
    #[error("{0}")]
    Rejected(String),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A read model.
pub trait Projection: Send + Sync + 'static {
    /// A stable name, stored in `projection_states.name`.
    fn name(&self) -> &'static str;

    /// The event types the projection applies; other events only move its position. An empty
    /// list means every event (`instance.removed` included).
    fn event_types(&self) -> Vec<EventType>;

    /// Applies one event within the batch transaction.
    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>>;

    /// Applies a run of events in order; must have the same effect as `reduce` on each. The
    /// default applies them one by one; projections override it with set-based SQL for catch-up
    /// speed.
    fn reduce_many<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            for event in events {
                self.reduce(conn, event).await?;
            }
            Ok(())
        })
    }

    /// Deletes the instance's rows, before a rebuild from position zero.
    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Deletes every row the projection keeps of a removed instance, in the batch that passes the
    /// instance's `instance.removed` event. The default is [`Projection::reset`]; a projection
    /// whose reset keeps rows (history a rebuild must not lose) drops them here.
    fn remove_instance<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        self.reset(conn, instance)
    }

    /// The tables the projection writes, schema-qualified, each with an `instance_id` column; used
    /// to compare a live read model with a rebuild.
    fn tables(&self) -> Vec<&'static str>;
}
