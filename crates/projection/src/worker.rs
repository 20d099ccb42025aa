//! One batch of one (projection, instance).
//!
//! A step reads the stored position and, outside any transaction, the instance's head and the next
//! events. Then, in one short transaction: the events are applied (all at once with
//! `reduce_many` inside a savepoint; if that fails, one by one, each in its own savepoint, so a
//! failing event is rolled back alone), the position is written with a compare-and-set on the old
//! one, the lease is checked (fencing: an expired or foreign lease rolls everything back), and the
//! commit is announced on [`crate::PROJECTION_CHANNEL`]. Reads happen before the transaction and
//! the transaction commits without waiting for its WAL flush (`synchronous_commit = off`: a
//! projection that loses its last batch in a crash replays it from the events), so each batch
//! holds the event store's visibility horizon for as short a time as possible.
//!
//! A failed event is recorded in `projection_failed_events` and the batch stops before it; the
//! next step retries it after a backoff, and after `max_attempts` failures it is marked skipped and
//! the position moves past it. An event that fails and later applies is marked `resolved`.
//!
//! Operators act on failed events through [`crate::failed`]: a retry gives an event the worker has
//! not passed yet a fresh attempt budget, and a skip marks it `skipped`. At the start of its
//! transaction a batch locks the failed-event rows of the range it read (`FOR UPDATE`), so an
//! operator's action waits for the batch or the batch for the action, never both at once: events
//! marked `skipped` in the range are passed over without being reduced and the position moves past
//! them like past any other event of the batch.

use crate::{PROJECTION_CHANNEL, Projection};
use cairn_domain::instance::InstanceRemoved;
use cairn_domain::{EventPayload, InstanceId, Position, StoredEvent};
use cairn_eventstore::{EventFilter, EventStore, PgEventStore, StoreError};
use sqlx::{PgConnection, PgPool, Row};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Settings of every worker of a projector.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The replica id that must hold the lease.
    pub owner: Uuid,
    /// Events per batch.
    pub batch: u32,
    /// Attempts before a failing event is skipped.
    pub max_attempts: i32,
    /// Test hook: every n-th batch is abandoned after its reduce and before its commit, as if the
    /// process had died there.
    pub crash_every: Option<u64>,
    /// Opens sealed personal data before the projection sees it. Without one, a batch that holds
    /// sealed data fails (and is retried) rather than hand the projection ciphertext.
    pub vault: Option<cairn_personal::Vault>,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The projection is at the instance's head.
    Idle,
    /// Events were applied (or skipped over) and the position moved.
    Progressed {
        /// Events read in this batch.
        events: usize,
        /// The new position.
        position: Position,
    },
    /// An event failed and will be retried after the given pause.
    Retrying(Duration),
    /// A rebuild was requested and performed: the read model was reset to position zero.
    Reset,
}

/// Why a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// This replica does not (or no longer) hold the lease; nothing was committed.
    #[error("the lease is not held")]
    LeaseLost,
    /// Another writer moved the position concurrently; nothing was committed.
    #[error("the projection state moved concurrently")]
    Concurrent,
    /// The test hook abandoned the batch.
    #[error("batch abandoned by the crash hook")]
    Crashed,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Reading events failed.
    #[error("event store error: {0}")]
    Store(#[from] StoreError),
    /// Sealed personal data could not be opened.
    #[error("personal data: {0}")]
    Personal(#[from] cairn_personal::PersonalError),
    /// The batch holds sealed personal data and the replica has no keys to open it.
    #[error("the events hold sealed personal data and this replica has no keyring (CAIRN_KEYS)")]
    NoKeys,
}

#[derive(Debug, Clone)]
struct Stored {
    exists: bool,
    position: Position,
    rebuild_requested: bool,
    removed: bool,
}

async fn load_state(pool: &PgPool, name: &str, instance: InstanceId) -> Result<Stored, sqlx::Error> {
    let row = sqlx::query(
        "SELECT position, position_offset, rebuild_requested, status = 'removed' FROM projections.projection_states \
         WHERE name = $1 AND instance_id = $2",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Stored {
            exists: false,
            position: Position::ZERO,
            rebuild_requested: false,
            removed: false,
        },
        Some(row) => Stored {
            exists: true,
            position: Position::new(row.try_get(0)?, row.try_get(1)?),
            rebuild_requested: row.try_get(2)?,
            removed: row.try_get(3)?,
        },
    })
}

/// Runs one step for `projection` on `instance`. `batches` counts steps for the crash hook.
pub async fn step(
    pool: &PgPool,
    store: &PgEventStore,
    projection: &dyn Projection,
    instance: InstanceId,
    config: &WorkerConfig,
    batches: &mut u64,
) -> Result<Step, WorkerError> {
    let name = projection.name();
    let state = load_state(pool, name, instance).await?;
    if state.rebuild_requested {
        reset(pool, projection, instance, config, &state).await?;
        return Ok(Step::Reset);
    }
    if state.removed {
        // The instance was removed and this projection has dropped its rows; nothing follows.
        return Ok(Step::Idle);
    }
    let head = store.head_position(Some(instance)).await?;
    if state.exists && state.position >= head {
        return Ok(Step::Idle);
    }
    // After `instance.removed` an instance has nothing left in any read model.
    let removed_type = InstanceRemoved::event_type();
    let mut event_types = projection.event_types();
    // An empty list asks for every event, the removal included.
    let reduces_removal = event_types.is_empty() || event_types.contains(&removed_type);
    if !reduces_removal {
        event_types.push(removed_type.clone());
    }
    let filter = EventFilter {
        instance_id: Some(instance),
        event_types,
        after: state.position,
        up_to: Some(head),
        limit: config.batch,
        ..EventFilter::default()
    };
    let mut events = store.filter(&filter).await?;
    // The instance's removal ends its history: the events before it are applied as usual, then
    // every row of the instance is dropped (the projection's own reset) with its failed events,
    // and the state says `removed`, which the projector reads to let the lease go.
    let removal = match events.iter().position(|e| e.event_type == removed_type) {
        Some(at) => {
            let removal = events[at].clone();
            events.truncate(if reduces_removal { at + 1 } else { at });
            Some(removal)
        }
        None => None,
    };
    // One span per event that carries a trace context, in the trace of the request that wrote it;
    // they end with this step, after its commit (or its failure).
    let _spans: Vec<tracing::Span> = events
        .iter()
        .filter_map(|event| {
            let traceparent = event.trace_context.as_deref()?;
            let span = tracing::info_span!(
                "projection.apply",
                otel.kind = "consumer",
                projection = name,
                position = %event.position,
                event_type = %event.event_type,
            );
            cairn_telemetry::propagation::set_parent(&span, Some(traceparent));
            Some(span)
        })
        .collect();
    // Every event up to `head` was visible to this read, so a page that is not full covers them
    // all: the position may move to the head even past events the projection does not need.
    let covered_to = if let Some(removal) = &removal {
        removal.position
    } else if events.len() < config.batch as usize {
        head
    } else {
        events.last().map_or(head, |e| e.position)
    };

    let mut tx = cairn_eventstore::begin(pool).await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    // Personal data opens here, with the keys as of this transaction: a user erased meanwhile
    // reads as erased, the same as a rebuild after the erasure reads it. What is kept of an event
    // (a failure's record) keeps it as stored, sealed.
    let sealed: HashMap<Position, serde_json::Value> = events
        .iter()
        .filter(|e| cairn_domain::personal::is_sealed(&e.payload))
        .map(|e| (e.position, e.payload.clone()))
        .collect();
    match &config.vault {
        Some(vault) => vault.open(&mut tx, &mut events).await?,
        None if events
            .iter()
            .any(|e| cairn_domain::personal::is_sealed(&e.payload)) =>
        {
            return Err(WorkerError::NoKeys);
        }
        None => {}
    }

    let marks = if events.is_empty() {
        Marks::default()
    } else {
        lock_failed(&mut tx, name, instance, state.position, covered_to).await?
    };
    let applied = apply(
        &mut tx,
        projection,
        instance,
        &events,
        &sealed,
        &marks.skipped,
        config,
    )
    .await?;
    let removed = matches!(applied, Applied::All) && removal.is_some();
    if removed {
        projection.remove_instance(&mut tx, instance).await?;
        sqlx::query("DELETE FROM projections.projection_failed_events WHERE projection_name = $1 AND instance_id = $2")
            .bind(name)
            .bind(instance.as_uuid())
            .execute(&mut *tx)
            .await?;
    }
    let (new_position, last_applied, outcome) = match applied {
        Applied::All if removed => (covered_to, removal.as_ref(), None),
        Applied::All => (covered_to, events.last(), None),
        Applied::StoppedBefore { index, pause } => {
            let position = if index == 0 {
                state.position
            } else {
                events[index - 1].position
            };
            (
                position,
                index.checked_sub(1).and_then(|i| events.get(i)),
                Some(pause),
            )
        }
    };

    *batches += 1;
    if config
        .crash_every
        .is_some_and(|n| n > 0 && (*batches).is_multiple_of(n))
    {
        // Dropping the transaction rolls back the read-model rows and the position together.
        return Err(WorkerError::Crashed);
    }

    if marks.retrying && new_position > state.position {
        resolve(&mut tx, name, instance, state.position, new_position).await?;
    }

    let status = match outcome {
        None if removed => "removed",
        Some(_) => "retrying",
        None if new_position >= head => "active",
        None => "catching_up",
    };
    write_state(
        &mut tx,
        name,
        instance,
        &state,
        new_position,
        last_applied,
        status,
    )
    .await?;
    fence(&mut tx, name, instance, config.owner).await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PROJECTION_CHANNEL)
        .bind(format!("{name}:{instance}:{new_position}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    Ok(match outcome {
        Some(pause) if new_position == state.position => Step::Retrying(pause),
        _ => Step::Progressed {
            events: events.len(),
            position: new_position,
        },
    })
}

enum Applied {
    All,
    /// The event at `index` failed and will be retried; everything before it was applied.
    StoppedBefore {
        index: usize,
        pause: Duration,
    },
}

/// The failed-event rows of a batch's range, locked for the batch's transaction.
#[derive(Default)]
struct Marks {
    /// Events an operator (or an earlier run of this range) marked skipped: passed over unreduced.
    skipped: Vec<Position>,
    /// Whether an event of the range is still being retried.
    retrying: bool,
}

/// Locks the failed-event rows in `(after, up_to]` until commit and reads their status.
async fn lock_failed(
    tx: &mut PgConnection,
    name: &str,
    instance: InstanceId,
    after: Position,
    up_to: Position,
) -> Result<Marks, sqlx::Error> {
    let rows: Vec<(i64, i32, String)> = sqlx::query_as(
        "SELECT position, position_offset, status FROM projections.projection_failed_events \
         WHERE projection_name = $1 AND instance_id = $2 \
           AND (position, position_offset) > ($3, $4) AND (position, position_offset) <= ($5, $6) \
         ORDER BY position, position_offset FOR UPDATE",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .bind(after.position)
    .bind(after.offset)
    .bind(up_to.position)
    .bind(up_to.offset)
    .fetch_all(&mut *tx)
    .await?;
    let mut marks = Marks::default();
    for (position, offset, status) in rows {
        match status.as_str() {
            "skipped" => marks.skipped.push(Position::new(position, offset)),
            "retrying" => marks.retrying = true,
            _ => {}
        }
    }
    Ok(marks)
}

/// Marks the events of `(after, up_to]` that were being retried and have now been applied.
async fn resolve(
    tx: &mut PgConnection,
    name: &str,
    instance: InstanceId,
    after: Position,
    up_to: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projections.projection_failed_events SET status = 'resolved' \
         WHERE projection_name = $1 AND instance_id = $2 AND status = 'retrying' \
           AND (position, position_offset) > ($3, $4) AND (position, position_offset) <= ($5, $6)",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .bind(after.position)
    .bind(after.offset)
    .bind(up_to.position)
    .bind(up_to.offset)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    instance: InstanceId,
    events: &[StoredEvent],
    sealed: &HashMap<Position, serde_json::Value>,
    skipped: &[Position],
    config: &WorkerConfig,
) -> Result<Applied, WorkerError> {
    let wanted: Cow<'_, [StoredEvent]> = if skipped.is_empty() {
        Cow::Borrowed(events)
    } else {
        for event in events.iter().filter(|e| skipped.contains(&e.position)) {
            tracing::info!(
                projection = projection.name(),
                %instance,
                position = %event.position,
                event_type = %event.event_type,
                "passing over a skipped event"
            );
        }
        Cow::Owned(
            events
                .iter()
                .filter(|e| !skipped.contains(&e.position))
                .cloned()
                .collect(),
        )
    };
    if wanted.is_empty() {
        return Ok(Applied::All);
    }
    sqlx::query("SAVEPOINT batch").execute(&mut *tx).await?;
    match projection.reduce_many(&mut *tx, &wanted).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT batch").execute(&mut *tx).await?;
            return Ok(Applied::All);
        }
        Err(error) => {
            tracing::debug!(projection = projection.name(), %error, "batch failed; isolating the failing event");
            sqlx::query("ROLLBACK TO SAVEPOINT batch")
                .execute(&mut *tx)
                .await?;
        }
    }
    for (index, event) in events.iter().enumerate() {
        if skipped.contains(&event.position) {
            continue;
        }
        sqlx::query("SAVEPOINT event").execute(&mut *tx).await?;
        match projection.reduce(&mut *tx, event).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT event").execute(&mut *tx).await?;
            }
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT event")
                    .execute(&mut *tx)
                    .await?;
                let mut as_stored = Cow::Borrowed(event);
                if let Some(payload) = sealed.get(&event.position) {
                    as_stored.to_mut().payload = payload.clone();
                }
                let attempts = record_failure(
                    tx,
                    projection.name(),
                    instance,
                    &as_stored,
                    &error.to_string(),
                    config,
                )
                .await?;
                tracing::warn!(
                    projection = projection.name(),
                    %instance,
                    position = %event.position,
                    event_type = %event.event_type,
                    attempts,
                    %error,
                    "reduce failed"
                );
                if attempts < config.max_attempts {
                    let pause = Duration::from_millis(100 * 2_u64.pow(attempts.clamp(0, 6) as u32));
                    return Ok(Applied::StoppedBefore { index, pause });
                }
                // Out of attempts: skipped (recorded), and the batch goes on.
            }
        }
    }
    Ok(Applied::All)
}

async fn record_failure(
    tx: &mut PgConnection,
    name: &str,
    instance: InstanceId,
    event: &StoredEvent,
    error: &str,
    config: &WorkerConfig,
) -> Result<i32, sqlx::Error> {
    let data = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    sqlx::query_scalar(
        "INSERT INTO projections.projection_failed_events \
           (projection_name, instance_id, position, position_offset, aggregate_type, aggregate_id, sequence, \
            event_type, failure_count, error, event_data, status, first_failed_at, last_failed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, \
                 CASE WHEN $11 <= 1 THEN 'skipped' ELSE 'retrying' END, clock_timestamp(), clock_timestamp()) \
         ON CONFLICT (projection_name, instance_id, position, position_offset) DO UPDATE \
           SET failure_count = projection_failed_events.failure_count + 1, error = EXCLUDED.error, \
               last_failed_at = clock_timestamp(), \
               status = CASE WHEN projection_failed_events.failure_count + 1 >= $11 THEN 'skipped' ELSE 'retrying' END \
         RETURNING failure_count",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .bind(event.position.position)
    .bind(event.position.offset)
    .bind(event.aggregate_type.as_str())
    .bind(event.aggregate_id.as_uuid())
    .bind(event.sequence)
    .bind(event.event_type.as_str())
    .bind(error)
    .bind(data)
    .bind(config.max_attempts)
    .fetch_one(&mut *tx)
    .await
}

async fn write_state(
    tx: &mut PgConnection,
    name: &str,
    instance: InstanceId,
    old: &Stored,
    position: Position,
    last: Option<&StoredEvent>,
    status: &str,
) -> Result<(), WorkerError> {
    // A rebuild shows as `rebuilding` until it has caught up.
    let status_update = "status = CASE WHEN $9 = 'catching_up' AND status = 'rebuilding' THEN 'rebuilding' \
                                       WHEN $9 = 'catching_up' THEN 'active' ELSE $9 END";
    let error_update = "error_count = (SELECT count(*) FROM projections.projection_failed_events f \
                          WHERE f.projection_name = $1 AND f.instance_id = $2 AND f.status <> 'resolved'), \
                        last_error = (SELECT f.error FROM projections.projection_failed_events f \
                          WHERE f.projection_name = $1 AND f.instance_id = $2 ORDER BY f.last_failed_at DESC LIMIT 1)";
    let error_select = "(SELECT count(*) FROM projections.projection_failed_events f \
                          WHERE f.projection_name = $1 AND f.instance_id = $2 AND f.status <> 'resolved'), \
                        (SELECT f.error FROM projections.projection_failed_events f \
                          WHERE f.projection_name = $1 AND f.instance_id = $2 ORDER BY f.last_failed_at DESC LIMIT 1)";
    let sql = if old.exists {
        format!(
            "UPDATE projections.projection_states SET position = $3, position_offset = $4, \
               aggregate_type = coalesce($5, aggregate_type), aggregate_id = coalesce($6, aggregate_id), \
               sequence = coalesce($7, sequence), event_timestamp = coalesce($8, event_timestamp), \
               last_processed_at = clock_timestamp(), {status_update}, {error_update} \
             WHERE name = $1 AND instance_id = $2 AND position = $10 AND position_offset = $11 \
               AND NOT rebuild_requested"
        )
    } else {
        format!(
            "INSERT INTO projections.projection_states (name, instance_id, position, position_offset, \
               aggregate_type, aggregate_id, sequence, event_timestamp, last_processed_at, status, \
               error_count, last_error) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp(), \
                    CASE WHEN $9 IN ('retrying', 'removed') THEN $9 ELSE 'active' END, {error_select} \
             WHERE $10::bigint = 0 AND $11::int = 0 \
             ON CONFLICT (name, instance_id) DO NOTHING"
        )
    };
    let written = sqlx::query(&sql)
        .bind(name)
        .bind(instance.as_uuid())
        .bind(position.position)
        .bind(position.offset)
        .bind(last.map(|e| e.aggregate_type.to_string()))
        .bind(last.map(|e| e.aggregate_id.as_uuid()))
        .bind(last.map(|e| e.sequence))
        .bind(last.map(|e| e.created_at))
        .bind(status)
        .bind(old.position.position)
        .bind(old.position.offset)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if written == 1 {
        Ok(())
    } else {
        Err(WorkerError::Concurrent)
    }
}

/// Fencing: the lease must still be ours, by the database's clock, at the end of the batch. The
/// row lock this takes is held until commit, so nobody can take the lease in between.
async fn fence(
    tx: &mut PgConnection,
    name: &str,
    instance: InstanceId,
    owner: Uuid,
) -> Result<(), WorkerError> {
    let held = sqlx::query(
        "UPDATE projection_locks SET expires_at = expires_at \
         WHERE projection_name = $1 AND instance_id = $2 AND owner_id = $3 AND expires_at > clock_timestamp()",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .bind(owner)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if held == 1 {
        Ok(())
    } else {
        Err(WorkerError::LeaseLost)
    }
}

/// Performs a requested rebuild: deletes the instance's read-model rows and moves the position back
/// to zero, in one fenced transaction; the following steps replay from the beginning.
async fn reset(
    pool: &PgPool,
    projection: &dyn Projection,
    instance: InstanceId,
    config: &WorkerConfig,
    state: &Stored,
) -> Result<(), WorkerError> {
    let name = projection.name();
    let mut tx = cairn_eventstore::begin(pool).await?;
    projection.reset(&mut tx, instance).await?;
    sqlx::query(
        "UPDATE projections.projection_states SET position = 0, position_offset = 0, aggregate_type = NULL, \
           aggregate_id = NULL, sequence = NULL, event_timestamp = NULL, status = 'rebuilding', \
           rebuild_requested = false, rebuild_target = NULL, last_processed_at = clock_timestamp() \
         WHERE name = $1 AND instance_id = $2",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM projections.projection_failed_events WHERE projection_name = $1 AND instance_id = $2",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .execute(&mut *tx)
    .await?;
    fence(&mut tx, name, instance, config.owner).await?;
    tx.commit().await?;
    tracing::info!(projection = name, %instance, from = %state.position, "projection reset for a rebuild");
    Ok(())
}
