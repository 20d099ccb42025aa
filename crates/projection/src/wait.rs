//! Read-your-writes. Every command returns the position of its last event; a query that carries
//! it waits here until the projections it reads have reached that position for the instance.
//!
//! It lives in the projection framework because what it reads is the framework's: the positions
//! in `projections.projection_states` that [`crate::worker`] commits with each batch, and the
//! [`PROJECTION_CHANNEL`] announcement it sends at commit. Which projections a given read waits
//! for is the read models' knowledge (`cairn_readmodel::wait`).
//!
//! One [`PositionWaiter`] per process `LISTEN`s on the projectors' commit channel
//! (`cairn_projections`) and wakes waiters, which re-check `projection_states`: no waiter ever
//! sleeps a fixed time, and a timeout is a typed error the APIs turn into `DEADLINE_EXCEEDED` /
//! `503`. A notification is only a hint; the state table is the answer, so a lost notification
//! costs at most one re-check interval.

use crate::PROJECTION_CHANNEL;
use cairn_domain::{InstanceId, Position};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a wait ended without the position being reached.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The projections did not reach the position in time.
    #[error("projections {projections:?} did not reach position {position} within {timeout:?}")]
    Timeout {
        /// The projections waited for.
        projections: Vec<String>,
        /// The position waited for.
        position: Position,
        /// How long was waited.
        timeout: Duration,
    },
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Waits for projection positions, woken by projector commits.
#[derive(Clone, Debug)]
pub struct PositionWaiter {
    pool: PgPool,
    commits: watch::Receiver<u64>,
}

impl PositionWaiter {
    /// A waiter and the listener that wakes it. The caller runs the listener as one of its
    /// tasks (a service hands it to its runtime, so it is drained and stopped in order); until it
    /// runs, waiters only re-check on their slow timer.
    pub fn listening(pool: PgPool) -> (Self, CommitListener) {
        let (tx, rx) = watch::channel(0_u64);
        let listener = CommitListener {
            pool: pool.clone(),
            tx,
        };
        (Self { pool, commits: rx }, listener)
    }

    /// A waiter whose listener runs as a detached task until `shutdown` (tools and tests; services
    /// use [`PositionWaiter::listening`]).
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (waiter, listener) = Self::listening(pool);
        tokio::spawn(listener.run(shutdown));
        waiter
    }

    /// Returns once every projection in `projections` has reached `position` for `instance`, or
    /// [`WaitError::Timeout`] after `timeout`.
    pub async fn wait_for_position(
        &self,
        projections: &[&str],
        instance: InstanceId,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        if position.is_zero() || projections.is_empty() {
            return Ok(());
        }
        let mut commits = self.commits.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            commits.borrow_and_update();
            if self.reached(projections, instance, position).await? {
                return Ok(());
            }
            tokio::select! {
                _ = commits.changed() => {}
                // re-check on a slow timer too: a notification lost while reconnecting only delays
                _ = tokio::time::sleep(Duration::from_millis(250)) => {} // poll_interval
                _ = tokio::time::sleep_until(deadline) => {
                    if self.reached(projections, instance, position).await? {
                        return Ok(());
                    }
                    return Err(WaitError::Timeout {
                        projections: projections.iter().map(|p| (*p).to_owned()).collect(),
                        position,
                        timeout,
                    });
                }
            }
        }
    }

    async fn reached(
        &self,
        projections: &[&str],
        instance: InstanceId,
        position: Position,
    ) -> Result<bool, sqlx::Error> {
        let reached: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projections.projection_states \
             WHERE name = ANY($1) AND instance_id = $2 AND (position, position_offset) >= ($3, $4)",
        )
        .bind(projections)
        .bind(instance.as_uuid())
        .bind(position.position)
        .bind(position.offset)
        .fetch_one(&self.pool)
        .await?;
        Ok(reached == projections.len() as i64)
    }
}

/// The `LISTEN` on [`PROJECTION_CHANNEL`] that wakes a [`PositionWaiter`]'s waiters.
#[derive(Debug)]
pub struct CommitListener {
    pool: PgPool,
    tx: watch::Sender<u64>,
}

impl CommitListener {
    /// Listens (reconnecting with backoff) until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let Self { pool, tx } = self;
        // Every (re)connection counts as a change too: waiters re-check what they may have missed.
        cairn_eventstore::listen_forever(&pool, PROJECTION_CHANNEL, "projection commits", &stop, |_| {
            tx.send_modify(|n| *n += 1)
        })
        .await;
    }
}
