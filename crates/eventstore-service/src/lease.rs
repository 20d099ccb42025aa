//! The relay's lease and durable cursor, one row of `eventstore.relay_cursors` per stream. A lease
//! is taken with one upsert that only succeeds on a free or expired row or the holder's own; the
//! cursor advances only while the lease is valid (checked in the same statement), so a relay that
//! was paused past its lease cannot move the cursor. Expiry uses the database's clock, so replicas'
//! clocks need not agree.

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
    pub async fn acquire(&self) -> Result<Position, LeaseError> {
        let row = sqlx::query(
            "INSERT INTO eventstore.relay_cursors (stream, owner_id, lease_expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (stream) DO UPDATE \
               SET owner_id = EXCLUDED.owner_id, lease_expires_at = EXCLUDED.lease_expires_at \
             WHERE relay_cursors.owner_id = EXCLUDED.owner_id \
                OR relay_cursors.lease_expires_at IS NULL \
                OR relay_cursors.lease_expires_at < clock_timestamp() \
             RETURNING position, in_tx_order",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Position::new(row.try_get(0)?, row.try_get(1)?)),
            None => Err(LeaseError::NotHeld),
        }
    }

    /// Moves the cursor forward to `to` (never backwards), only while the lease is held.
    pub async fn advance(&self, to: Position) -> Result<(), LeaseError> {
        let updated = sqlx::query(
            "UPDATE eventstore.relay_cursors \
                SET position = $3, in_tx_order = $4, updated_at = clock_timestamp() \
              WHERE stream = $1 AND owner_id = $2 AND lease_expires_at > clock_timestamp() \
                AND (position, in_tx_order) <= ($3, $4)",
        )
        .bind(&self.stream)
        .bind(self.owner)
        .bind(to.position)
        .bind(to.offset)
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
