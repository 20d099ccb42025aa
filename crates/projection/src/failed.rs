//! Failed events, for operators: list them, retry one, skip one. Serves the operator console of
//! command-api (`/console/projections` and `/api/v1/admin/projections/failed-events`).
//!
//! A failed event is a row of `projections.projection_failed_events` (see [`crate::worker`]):
//! `retrying` while the worker keeps trying it (the projection waits behind it), `skipped` once it
//! ran out of attempts or an operator skipped it, `resolved` once it applied after failing.
//!
//! - **Retry** gives an event the worker has not passed yet a fresh attempt budget (attempts back to
//!   zero, so the backoff starts again at its shortest) and takes back an operator's skip that the
//!   worker has not acted on yet; the worker retries it at its next step. An event the projection
//!   has already moved past cannot be retried: applying it now, after later events of the same
//!   aggregate, could leave the read model different from a rebuild, so the way to apply it is a
//!   rebuild (`cairn projections reset`), which replays it in order.
//! - **Skip** marks a `retrying` event `skipped`; the worker's next batch passes over it without
//!   reducing it and moves its position past it. Skipping a skipped event changes nothing.
//!
//! Each action locks the row first (`FOR UPDATE`) and then reads the projection's position, in one
//! transaction; a worker's batch locks the failed-event rows of its range for its whole
//! transaction, so an action never interleaves with a batch that could pass or apply the event.

use cairn_domain::Position;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// One failed event, as operators see it (the event's payload is left out: it may hold personal
/// data or sealed secrets).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedEvent {
    /// The projection.
    pub projection: String,
    /// The instance.
    pub instance_id: Uuid,
    /// The event's global position, `"<position>.<offset>"`.
    pub position: String,
    /// The event's aggregate type.
    pub aggregate_type: String,
    /// The event's aggregate.
    pub aggregate_id: Uuid,
    /// The event's aggregate sequence.
    pub sequence: i64,
    /// The event's type.
    pub event_type: String,
    /// Failed attempts since the event was recorded or last retried by an operator.
    pub failure_count: i32,
    /// The latest failure's message.
    pub error: String,
    /// `retrying`, `skipped` or `resolved`.
    pub status: String,
    /// Whether the projection's position is at or past the event.
    pub passed: bool,
    /// The first failure.
    pub first_failed_at: DateTime<Utc>,
    /// The latest failure.
    pub last_failed_at: DateTime<Utc>,
}

/// Which failed events to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this instance's (callers scoped to a tenant always set it).
    pub instance: Option<Uuid>,
    /// Only this projection's.
    pub projection: Option<String>,
    /// Only events in this status.
    pub status: Option<FailedStatus>,
    /// At most this many, the most recently failed first.
    pub limit: i64,
}

/// The status of a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStatus {
    /// The worker keeps trying it; the projection waits behind it.
    Retrying,
    /// Out of attempts or skipped by an operator; passed over.
    Skipped,
    /// Applied after failing.
    Resolved,
}

impl FailedStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Skipped => "skipped",
            Self::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for FailedStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "retrying" => Ok(Self::Retrying),
            "skipped" => Ok(Self::Skipped),
            "resolved" => Ok(Self::Resolved),
            _ => Err(()),
        }
    }
}

/// Identifies one failed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEventKey {
    /// The projection.
    pub projection: String,
    /// The instance.
    pub instance_id: Uuid,
    /// The event's global position.
    pub position: Position,
}

/// Why an operator's action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No failed event has this key.
    #[error("no such failed event")]
    NotFound,
    /// The event applied after failing; there is nothing to retry or skip.
    #[error("the event was applied after failing; nothing to retry or skip")]
    Resolved,
    /// The projection has moved past the event.
    #[error(
        "the projection has already moved past this event; rebuild the projection (cairn projections reset) to apply it again"
    )]
    Passed,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str = "f.projection_name, f.instance_id, f.position, f.position_offset, f.aggregate_type, \
     f.aggregate_id, f.sequence, f.event_type, f.failure_count, f.error, f.status, f.first_failed_at, \
     f.last_failed_at, \
     EXISTS (SELECT 1 FROM projections.projection_states s \
              WHERE s.name = f.projection_name AND s.instance_id = f.instance_id \
                AND (s.position, s.position_offset) >= (f.position, f.position_offset)) AS passed";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<FailedEvent, sqlx::Error> {
    let position: i64 = row.try_get("position")?;
    let offset: i32 = row.try_get("position_offset")?;
    Ok(FailedEvent {
        projection: row.try_get("projection_name")?,
        instance_id: row.try_get("instance_id")?,
        position: Position::new(position, offset).to_string(),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        failure_count: row.try_get("failure_count")?,
        error: row.try_get("error")?,
        status: row.try_get("status")?,
        passed: row.try_get("passed")?,
        first_failed_at: row.try_get("first_failed_at")?,
        last_failed_at: row.try_get("last_failed_at")?,
    })
}

/// Failed events matching `filter`, the most recently failed first.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<FailedEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM projections.projection_failed_events f \
          WHERE ($1::uuid IS NULL OR f.instance_id = $1) AND ($2::text IS NULL OR f.projection_name = $2) \
            AND ($3::text IS NULL OR f.status = $3) \
          ORDER BY f.last_failed_at DESC, f.position DESC, f.position_offset DESC LIMIT $4"
    ))
    .bind(filter.instance)
    .bind(filter.projection.as_deref())
    .bind(filter.status.map(FailedStatus::as_str))
    .bind(filter.limit.max(0))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// One failed event.
pub async fn get(pool: &PgPool, key: &FailedEventKey) -> Result<Option<FailedEvent>, sqlx::Error> {
    get_in(&mut *pool.acquire().await?, key).await
}

async fn get_in(conn: &mut PgConnection, key: &FailedEventKey) -> Result<Option<FailedEvent>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM projections.projection_failed_events f \
          WHERE f.projection_name = $1 AND f.instance_id = $2 AND f.position = $3 AND f.position_offset = $4"
    ))
    .bind(&key.projection)
    .bind(key.instance_id)
    .bind(key.position.position)
    .bind(key.position.offset)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

enum Action {
    Retry,
    Skip,
}

/// Retries a failed event the projection has not passed: attempts back to zero, status
/// `retrying`; the worker tries it again at its next step.
pub async fn retry(pool: &PgPool, key: &FailedEventKey) -> Result<FailedEvent, ActionError> {
    act(pool, key, Action::Retry).await
}

/// Skips a failed event the projection has not passed: status `skipped`; the worker's next batch
/// passes over it without reducing it.
pub async fn skip(pool: &PgPool, key: &FailedEventKey) -> Result<FailedEvent, ActionError> {
    act(pool, key, Action::Skip).await
}

async fn act(pool: &PgPool, key: &FailedEventKey, action: Action) -> Result<FailedEvent, ActionError> {
    let mut tx = cairn_eventstore::begin(pool).await?;
    // The row lock first: it waits for a batch that holds the row, and holds off the next one.
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM projections.projection_failed_events \
          WHERE projection_name = $1 AND instance_id = $2 AND position = $3 AND position_offset = $4 \
          FOR UPDATE",
    )
    .bind(&key.projection)
    .bind(key.instance_id)
    .bind(key.position.position)
    .bind(key.position.offset)
    .fetch_optional(&mut *tx)
    .await?;
    let status = status.ok_or(ActionError::NotFound)?;
    // A fresh statement, so it sees a batch that committed while this one waited for the lock.
    let passed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projections.projection_states \
                         WHERE name = $1 AND instance_id = $2 AND (position, position_offset) >= ($3, $4))",
    )
    .bind(&key.projection)
    .bind(key.instance_id)
    .bind(key.position.position)
    .bind(key.position.offset)
    .fetch_one(&mut *tx)
    .await?;
    let update = match (action, status.as_str(), passed) {
        (_, "resolved", _) => return Err(ActionError::Resolved),
        (Action::Skip, "skipped", _) => None,
        (_, _, true) => return Err(ActionError::Passed),
        (Action::Retry, _, false) => {
            Some("UPDATE projections.projection_failed_events SET status = 'retrying', failure_count = 0")
        }
        (Action::Skip, _, false) => {
            Some("UPDATE projections.projection_failed_events SET status = 'skipped'")
        }
    };
    if let Some(update) = update {
        sqlx::query(&format!(
            "{update} WHERE projection_name = $1 AND instance_id = $2 AND position = $3 AND position_offset = $4"
        ))
        .bind(&key.projection)
        .bind(key.instance_id)
        .bind(key.position.position)
        .bind(key.position.offset)
        .execute(&mut *tx)
        .await?;
    }
    // Read inside the transaction: the answer is the state the action left, before a batch moves on.
    let row = get_in(&mut tx, key).await?.ok_or(ActionError::NotFound)?;
    tx.commit().await?;
    Ok(row)
}
