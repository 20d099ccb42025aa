//! The relay's lease and durable cursor, one row of `eventstore.relay_cursors` per stream. A lease
//! is taken with one upsert that only succeeds on a free or expired row or the holder's own; the
//! cursor advances only while the lease is valid (checked in the same statement), so a relay that
//! was paused past its lease cannot move the cursor. Expiry uses the database's clock, so replicas'
//! clocks need not agree.
//!
//! Beside the cursor's position the row records the JetStream stream sequence of the last message
//! the cursor has passed ([`Recorded`]); the relay fences its publishes with it and compares it with
//! the stream's own last sequence when it takes the lease.

use cairn_domain::Position;
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// A handle on one stream's lease row.
#[derive(Clone, Debug)]
pub struct Lease {
    pool: PgPool,
    stream: String,
    owner: Uuid,
    ttl: Duration,
}

/// The durable cursor as the row records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The last event known to be in the stream.
    pub position: Position,
    /// The stream sequence JetStream gave that event (0: none recorded yet).
    pub stream_sequence: u64,
}

/// What can go wrong with the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another relay holds the lease (or ours expired).
    #[error("the relay lease is held by another relay")]
    NotHeld,
    /// PostgreSQL failed.
    #[error("lease storage failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl Lease {
    /// A handle for `owner` on `stream`'s row.
    pub fn new(pool: PgPool, stream: String, owner: Uuid, ttl: Duration) -> Self {
        Self {
            pool,
            stream,
            owner,
            ttl,
        }
    }

    /// The owner id this relay uses.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Takes or renews the lease; returns the durable cursor when held.
    pub async fn acquire(&self) -> Result<Recorded, LeaseError> {
        let row = sqlx::query(
            "INSERT INTO eventstore.relay_cursors (stream, owner_id, lease_expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (stream) DO UPDATE \
               SET owner_id = EXCLUDED.owner_id, lease_expires_at = EXCLUDED.lease_expires_at \
             WHERE relay_cursors.owner_id = EXCLUDED.owner_id \
                OR relay_cursors.lease_expires_at IS NULL \
                OR relay_cursors.lease_expires_at < clock_timestamp() \
             RETURNING position, in_tx_order, stream_sequence",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Recorded {
                position: Position::new(row.try_get(0)?, row.try_get(1)?),
                // The column is checked non-negative.
                stream_sequence: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
            }),
            None => Err(LeaseError::NotHeld),
        }
    }

    /// Moves the cursor forward to `to` (never backwards), recording the stream sequence
    /// JetStream gave it, only while the lease is held.
    pub async fn advance(&self, to: Position, stream_sequence: u64) -> Result<(), LeaseError> {
        let updated = sqlx::query(
            "UPDATE eventstore.relay_cursors \
                SET position = $3, in_tx_order = $4, stream_sequence = $5, \
                    updated_at = clock_timestamp() \
              WHERE stream = $1 AND owner_id = $2 AND lease_expires_at > clock_timestamp() \
                AND (position, in_tx_order) <= ($3, $4)",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .bind(to.position)
        .bind(to.offset)
        .bind(as_column(stream_sequence))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(LeaseError::NotHeld)
        }
    }

    /// Records what reconciling with the stream found, only while the lease is held. Unlike
    /// [`Lease::advance`] this may move the cursor back: when the stream lost acknowledged
    /// messages, the cursor returns to the last event the stream still holds so that the lost
    /// ones are published again.
    pub async fn reconcile(&self, to: Recorded) -> Result<(), LeaseError> {
        let updated = sqlx::query(
            "UPDATE eventstore.relay_cursors \
                SET position = $3, in_tx_order = $4, stream_sequence = $5, \
                    updated_at = clock_timestamp() \
              WHERE stream = $1 AND owner_id = $2 AND lease_expires_at > clock_timestamp()",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .bind(to.position.position)
        .bind(to.position.offset)
        .bind(as_column(to.stream_sequence))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(LeaseError::NotHeld)
        }
    }

    /// Gives the lease up so a standby can take over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        sqlx::query(
            "UPDATE eventstore.relay_cursors SET lease_expires_at = NULL WHERE stream = $1 AND owner_id = $2",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A stream sequence as the `bigint` column holds it. JetStream's sequences are `u64` but stay far
/// below `i64::MAX` in practice; a larger one is stored as `i64::MAX` rather than wrapping.
fn as_column(stream_sequence: u64) -> i64 {
    i64::try_from(stream_sequence).unwrap_or(i64::MAX)
}
