//! Projection health: per projection and instance, where it stands, how far behind the event log it
//! is, whether it is failing, and which replica holds its lease. Serves
//! `GET /api/v1/admin/projections/health` (command-api) and `cairn projections status`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// One (projection, instance).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProjectionHealth {
    /// The projection.
    pub projection: String,
    /// The instance.
    pub instance_id: Uuid,
    /// The stored position, as the consistency token `"<position>.<offset>"`.
    pub position: String,
    /// Events of the instance after the position (capped at 1,000,000).
    pub lag_events: i64,
    /// Age of the oldest event not yet processed, in seconds.
    pub lag_seconds: f64,
    /// `active`, `retrying` or `rebuilding`.
    pub status: String,
    /// Failed events recorded (retrying or skipped).
    pub error_count: i64,
    /// The latest failure's message.
    pub last_error: Option<String>,
    /// Events currently skipped after exhausting their attempts.
    pub skipped_events: i64,
    /// The replica holding the lease, if any.
    pub lease_owner: Option<Uuid>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the last batch committed.
    pub last_processed_at: Option<DateTime<Utc>>,
}

/// Health of every known (projection, instance), optionally of one instance only.
pub async fn report(pool: &PgPool, instance: Option<Uuid>) -> Result<Vec<ProjectionHealth>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.name, s.instance_id, s.position, s.position_offset, s.status, s.error_count, s.last_error, \
                s.last_processed_at, l.owner_id, l.expires_at, \
                (SELECT count(*) FROM (SELECT 1 FROM eventstore.events e \
                   WHERE e.instance_id = s.instance_id AND (e.position, e.in_tx_order) > (s.position, s.position_offset) \
                   LIMIT 1000000) t) AS lag_events, \
                (SELECT extract(epoch FROM clock_timestamp() - min(e.created_at))::float8 FROM \
                   (SELECT created_at FROM eventstore.events e \
                     WHERE e.instance_id = s.instance_id AND (e.position, e.in_tx_order) > (s.position, s.position_offset) \
                     ORDER BY e.position, e.in_tx_order LIMIT 1) e) AS lag_seconds, \
                (SELECT count(*) FROM projections.projection_failed_events f \
                  WHERE f.projection_name = s.name AND f.instance_id = s.instance_id AND f.status = 'skipped') AS skipped \
           FROM projections.projection_states s \
           LEFT JOIN projection_locks l ON l.projection_name = s.name AND l.instance_id = s.instance_id \
          WHERE $1::uuid IS NULL OR s.instance_id = $1 \
          ORDER BY s.name, s.instance_id",
    )
    .bind(instance)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let position: i64 = row.try_get("position")?;
            let offset: i32 = row.try_get("position_offset")?;
            Ok(ProjectionHealth {
                projection: row.try_get("name")?,
                instance_id: row.try_get("instance_id")?,
                position: format!("{position}.{offset}"),
                lag_events: row.try_get("lag_events")?,
                lag_seconds: row
                    .try_get::<Option<f64>, _>("lag_seconds")?
                    .unwrap_or(0.0)
                    .max(0.0),
                status: row.try_get("status")?,
                error_count: row.try_get("error_count")?,
                last_error: row.try_get("last_error")?,
                skipped_events: row.try_get("skipped")?,
                lease_owner: row.try_get("owner_id")?,
                lease_expires_at: row.try_get("expires_at")?,
                last_processed_at: row.try_get("last_processed_at")?,
            })
        })
        .collect()
}

/// Asks the lease holder to rebuild `projection` (for one instance, or all) from position zero; it
/// does so at its next step. Returns how many (projection, instance) pairs were marked.
pub async fn request_rebuild(
    pool: &PgPool,
    projection: &str,
    instance: Option<Uuid>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE projections.projection_states SET rebuild_requested = true \
         WHERE name = $1 AND ($2::uuid IS NULL OR instance_id = $2)",
    )
    .bind(projection)
    .bind(instance)
    .execute(pool)
    .await?
    .rows_affected())
}

/// How many (projection, instance) pairs of `projection` (for one instance, or all) still wait for
/// a requested rebuild to start: the progress behind `cairn projections reset`.
pub async fn rebuilds_pending(
    pool: &PgPool,
    projection: &str,
    instance: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM projections.projection_states \
         WHERE name = $1 AND ($2::uuid IS NULL OR instance_id = $2) AND rebuild_requested",
    )
    .bind(projection)
    .bind(instance)
    .fetch_one(pool)
    .await
}
