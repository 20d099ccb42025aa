//! The PostgreSQL event store.
//!
//! A push is one call of the `eventstore.push` SQL function (`migrations/0001_eventstore.sql`), a
//! single statement: one round trip and, outside a caller's transaction, one autocommit
//! transaction, with the sequence checks, the unique-constraint claims and the inserts inside. Every event's position is the id of its transaction (`pg_current_xact_id()`), and
//! readers only return events whose transaction id is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below that horizon has finished,
//! so nothing can later commit behind a position a reader has passed. `docs/ARCHITECTURE.md` has
//! the argument and its cost.
//!
//! After each commit the store announces the new position on the `NOTIFY` channel
//! [`NOTIFY_CHANNEL`] from a background task that coalesces the commits of each two milliseconds into one
//! notification, so listeners (the relay) wake without polling, and commits neither serialise on
//! PostgreSQL's notification lock (held through the commit's WAL flush when the pushing transaction
//! itself notifies) nor pay a second round trip each.

use crate::{EventFilter, EventStore, ExpectedSequence, Push, Snapshot, StoreError, UniqueOp};
use cairn_domain::{AggregateId, AggregateType, EventType, InstanceId, Position, StoredEvent};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgDatabaseError, PgRow};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder, Row};
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

/// The `LISTEN`/`NOTIFY` channel on which the store announces committed pushes; the payload is the
/// transaction position as decimal text.
pub const NOTIFY_CHANNEL: &str = "cairn_events";

const EVENT_COLUMNS: &str = "id, instance_id, aggregate_type, aggregate_id, sequence, event_type, revision, \
     payload, creator, resource_owner, created_at, position, in_tx_order, trace_context";

/// The part of a query that hides events a still-running transaction could precede: positions at
/// or above the oldest running transaction's id (plus the position base, see
/// `migrations/0009_position_base.sql`).
const VISIBLE: &str = "position < eventstore.visible_below()";

/// How long a service's session may sit idle inside a transaction before PostgreSQL ends it, unless
/// the service has a lease that bounds it tighter.
pub const IDLE_IN_TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connection settings for a service's pool: `url` with `idle_in_transaction_session_timeout` set
/// to `idle_in_transaction`. A process that stops inside a transaction (frozen, paused, cut off
/// from the network) must not keep holding its row locks and the event store's visibility horizon
/// (every reader stops below the oldest running transaction): PostgreSQL ends such a session,
/// rolling its work back, and the leases and fencing take it from there.
pub fn connect_options(
    url: &str,
    idle_in_transaction: std::time::Duration,
) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
    let millis = idle_in_transaction.as_millis().max(1).to_string();
    Ok(url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([("idle_in_transaction_session_timeout", millis)]))
}

/// Begins a transaction on a connection from `pool`; every transaction in Cairn starts here.
///
/// sqlx's own `begin` is not safe to cancel: dropped between sending `BEGIN` and reading its
/// answer (a request cancelled by its client's deadline, an aborted task), it returns the
/// connection to the pool inside an open transaction, because its rollback guard only covers a
/// transaction it has counted, and it counts one only after the answer. The next user of that
/// connection, often an autocommit push, then runs inside that transaction: acknowledged, never
/// committed, and every reader stalls below it until the session ends. Here the begin runs to its
/// end in a task of its own; when the caller is gone by then, the finished transaction is dropped
/// in that task and rolled back as any dropped transaction is. Cost: one task spawn.
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place that may call it, see above
    let begun = tokio::spawn(async move { pool.begin().await }).await;
    begun.map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?
}

/// The PostgreSQL [`EventStore`].
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pool: PgPool,
    announcer: Arc<watch::Sender<i64>>,
}

impl PgEventStore {
    /// A store over `pool`. Spawns the task that announces commits; it ends when the last clone of
    /// the store is dropped. Must be called within a Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        let (tx, rx) = watch::channel(0_i64);
        tokio::spawn(announce_commits(pool.clone(), rx));
        Self {
            pool,
            announcer: Arc::new(tx),
        }
    }

    /// The connection pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Pushes within the caller's transaction, for writers that must commit other rows atomically
    /// with their events. The events become visible when the caller commits; the caller then calls
    /// [`PgEventStore::announce`] with the returned position to wake listeners promptly.
    ///
    /// [`StoreError::TransactionTooOld`] means the caller's transaction must be rolled back and run
    /// again from its start: it took its position before another transaction appended to one of
    /// the pushed aggregates and committed.
    pub async fn push_in(&self, conn: &mut PgConnection, push: Push) -> Result<Vec<StoredEvent>, StoreError> {
        push.validate()?;
        let pushed = call_push(conn, &push, true).await?;
        Ok(stored_events(push, pushed))
    }

    /// [`EventStore::head_position`] of each of `instances` in one statement (one index probe
    /// each); an instance without visible events is left out.
    pub async fn head_positions(
        &self,
        instances: &[InstanceId],
    ) -> Result<std::collections::HashMap<InstanceId, Position>, StoreError> {
        let ids: Vec<Uuid> = instances.iter().map(|i| i.as_uuid()).collect();
        let rows: Vec<(Uuid, i64, i32)> = sqlx::query_as(&format!(
            "SELECT i, h.position, h.in_tx_order FROM unnest($1::uuid[]) AS i \
               JOIN LATERAL (SELECT position, in_tx_order FROM eventstore.events \
                              WHERE instance_id = i AND {VISIBLE} \
                              ORDER BY position DESC, in_tx_order DESC LIMIT 1) h ON true"
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(i, p, o)| (InstanceId::from_uuid(i), Position::new(p, o)))
            .collect())
    }

    /// [`EventStore::load_aggregate`] on the caller's connection: for a caller that holds a
    /// transaction (and a lock in it) and must not wait for a second connection from the pool while
    /// it does, which under contention would leave the pool's connections all waiting on each other.
    pub async fn load_aggregate_in(
        &self,
        conn: &mut PgConnection,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        load_aggregate_with(conn, instance, aggregate_type, aggregate_id, after_sequence).await
    }

    /// [`EventStore::load_snapshot`] on the caller's connection (see
    /// [`PgEventStore::load_aggregate_in`]).
    pub async fn load_snapshot_in(
        &self,
        conn: &mut PgConnection,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        schema_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        load_snapshot_with(conn, instance, aggregate_type, aggregate_id, schema_version).await
    }

    /// Wakes listeners of [`NOTIFY_CHANNEL`] after a commit (coalesced with other commits).
    pub fn announce(&self, position: Position) {
        self.announcer.send_if_modified(|latest| {
            if position.position > *latest {
                *latest = position.position;
                true
            } else {
                false
            }
        });
    }
}

/// How often an autocommit push is sent again after it met a newer transaction's event on one of
/// its aggregates (`StoreError::TransactionTooOld`).
const AUTOCOMMIT_ORDER_RETRIES: u32 = 8;

/// At most one announcement per this interval: under load one `NOTIFY` covers many commits, and a
/// listener is woken at most this much later than the commit.
const ANNOUNCE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

async fn announce_commits(pool: PgPool, mut rx: watch::Receiver<i64>) {
    while rx.changed().await.is_ok() {
        // pacing: let commits that land meanwhile share this announcement
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
        let position = *rx.borrow_and_update();
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(position.to_string())
            .execute(&pool)
            .await
        {
            // Listeners also poll, so a lost notification only delays them.
            tracing::warn!(%error, "could not announce a commit");
        }
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("stored event is malformed: {what}").into())
}

struct PushArrays {
    a_instance: Vec<Uuid>,
    a_type: Vec<String>,
    a_id: Vec<Uuid>,
    a_expected: Vec<Option<i64>>,
    e_agg: Vec<i32>,
    e_nth: Vec<i32>,
    e_id: Vec<Uuid>,
    e_type: Vec<String>,
    e_revision: Vec<i16>,
    e_payload: Vec<serde_json::Value>,
    e_creator: Vec<String>,
    e_owner: Vec<Uuid>,
    e_trace: Vec<Option<String>>,
    u_op: Vec<&'static str>,
    u_instance: Vec<Uuid>,
    u_type: Vec<String>,
    u_value: Vec<String>,
}

impl PushArrays {
    fn from_push(push: &Push) -> Self {
        let n = push.event_count();
        let mut arrays = PushArrays {
            a_instance: Vec::with_capacity(push.aggregates.len()),
            a_type: Vec::with_capacity(push.aggregates.len()),
            a_id: Vec::with_capacity(push.aggregates.len()),
            a_expected: Vec::with_capacity(push.aggregates.len()),
            e_agg: Vec::with_capacity(n),
            e_nth: Vec::with_capacity(n),
            e_id: Vec::with_capacity(n),
            e_type: Vec::with_capacity(n),
            e_revision: Vec::with_capacity(n),
            e_payload: Vec::with_capacity(n),
            e_creator: Vec::with_capacity(n),
            e_owner: Vec::with_capacity(n),
            e_trace: Vec::with_capacity(n),
            u_op: Vec::new(),
            u_instance: Vec::new(),
            u_type: Vec::new(),
            u_value: Vec::new(),
        };
        for (i, aggregate) in push.aggregates.iter().enumerate() {
            arrays.a_instance.push(aggregate.instance_id.as_uuid());
            arrays.a_type.push(aggregate.aggregate_type.to_string());
            arrays.a_id.push(aggregate.aggregate_id.as_uuid());
            arrays.a_expected.push(match aggregate.expected {
                ExpectedSequence::Any => None,
                ExpectedSequence::Exact(n) => Some(n),
            });
            for (nth, event) in aggregate.events.iter().enumerate() {
                arrays.e_agg.push(i as i32 + 1);
                arrays.e_nth.push(nth as i32 + 1);
                arrays.e_id.push(event.id.as_uuid());
                arrays.e_type.push(event.event_type.to_string());
                arrays.e_revision.push(event.revision);
                arrays.e_payload.push(event.payload.clone());
                arrays.e_creator.push(event.creator.clone());
                arrays.e_owner.push(event.resource_owner.as_uuid());
                arrays.e_trace.push(event.trace_context.clone());
            }
        }
        for op in &push.unique_ops {
            let (name, instance, unique_type, value) = match op {
                UniqueOp::Add {
                    instance_id,
                    unique_type,
                    value,
                } => ("add", instance_id, unique_type, value),
                UniqueOp::Remove {
                    instance_id,
                    unique_type,
                    value,
                } => ("remove", instance_id, unique_type, value),
            };
            arrays.u_op.push(name);
            arrays.u_instance.push(instance.as_uuid());
            arrays.u_type.push(unique_type.clone());
            arrays.u_value.push(value.clone());
        }
        arrays
    }
}

/// The call of the push function (`migrations/0001_eventstore.sql`, body in `0009`).
const PUSH_SQL: &str = "SELECT out_position, out_first_offset, out_created_at, out_sequences, out_inserted \
     FROM eventstore.push($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

/// What the push function returned.
struct Pushed {
    position: i64,
    first_offset: i32,
    created_at: DateTime<Utc>,
    before: Vec<i64>,
}

async fn call_push<'e, E: PgExecutor<'e>>(
    executor: E,
    push: &Push,
    in_transaction: bool,
) -> Result<Pushed, StoreError> {
    let arrays = PushArrays::from_push(push);
    // New data keys are inserted by the same statement (a data-modifying WITH runs exactly once,
    // whether the main query reads it or not), so they commit or fail with the events.
    let sql = if push.data_keys.is_empty() {
        PUSH_SQL.to_owned()
    } else {
        format!(
            "WITH keys AS (INSERT INTO eventstore.data_keys (instance_id, purpose, subject_id, key_id, nonce, ciphertext) \
               SELECT * FROM unnest($19::uuid[], $20::text[], $21::uuid[], $22::text[], $23::text[], $24::text[])) \
             {PUSH_SQL}"
        )
    };
    let keys = &push.data_keys;
    let query = sqlx::query(&sql)
        .bind(&arrays.a_instance)
        .bind(&arrays.a_type)
        .bind(&arrays.a_id)
        .bind(&arrays.a_expected)
        .bind(&arrays.e_agg)
        .bind(&arrays.e_nth)
        .bind(&arrays.e_id)
        .bind(&arrays.e_type)
        .bind(&arrays.e_revision)
        .bind(&arrays.e_payload)
        .bind(&arrays.e_creator)
        .bind(&arrays.e_owner)
        .bind(&arrays.e_trace)
        .bind(&arrays.u_op)
        .bind(&arrays.u_instance)
        .bind(&arrays.u_type)
        .bind(&arrays.u_value)
        .bind(in_transaction);
    let query = if keys.is_empty() {
        query
    } else {
        query
            .bind(keys.iter().map(|k| k.instance_id.as_uuid()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.purpose.clone()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.subject_id.as_uuid()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.nonce.clone()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.ciphertext.clone()).collect::<Vec<_>>())
    };
    let row = query
        .fetch_one(executor)
        .await
        .map_err(|error| push_error(error, push))?;
    drop(arrays);

    let pushed = Pushed {
        position: row.try_get(0).map_err(unavailable)?,
        first_offset: row.try_get(1).map_err(unavailable)?,
        created_at: row.try_get(2).map_err(unavailable)?,
        before: row.try_get(3).map_err(unavailable)?,
    };
    let inserted: i64 = row.try_get(4).map_err(unavailable)?;
    if pushed.before.len() != push.aggregates.len() || inserted != push.event_count() as i64 {
        return Err(corrupt(
            "push stored a different number of events than it was given",
        ));
    }
    Ok(pushed)
}

/// The stored events of a push that the push function committed as `pushed`.
fn stored_events(push: Push, pushed: Pushed) -> Vec<StoredEvent> {
    let mut stored = Vec::with_capacity(push.event_count());
    let mut offset = pushed.first_offset;
    for (aggregate, before) in push.aggregates.into_iter().zip(pushed.before) {
        for (nth, draft) in aggregate.events.into_iter().enumerate() {
            stored.push(StoredEvent {
                id: draft.id,
                instance_id: aggregate.instance_id,
                aggregate_type: aggregate.aggregate_type.clone(),
                aggregate_id: aggregate.aggregate_id,
                sequence: before + nth as i64 + 1,
                event_type: draft.event_type,
                revision: draft.revision,
                payload: draft.payload,
                creator: draft.creator,
                resource_owner: draft.resource_owner,
                created_at: pushed.created_at,
                position: Position::new(pushed.position, offset),
                trace_context: draft.trace_context,
            });
            offset += 1;
        }
    }
    stored
}

/// One aggregate's events after `after_sequence`, in sequence order, read through `executor`.
async fn load_aggregate_with<'e, E: PgExecutor<'e>>(
    executor: E,
    instance: InstanceId,
    aggregate_type: &AggregateType,
    aggregate_id: AggregateId,
    after_sequence: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM eventstore.events \
         WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence > $4 \
         ORDER BY sequence"
    ))
    .bind(instance.as_uuid())
    .bind(aggregate_type.as_str())
    .bind(aggregate_id.as_uuid())
    .bind(after_sequence)
    .fetch_all(executor)
    .await
    .map_err(unavailable)?;
    rows.iter().map(event_from_row).collect()
}

/// The aggregate's snapshot of `schema_version`, read through `executor`.
async fn load_snapshot_with<'e, E: PgExecutor<'e>>(
    executor: E,
    instance: InstanceId,
    aggregate_type: &AggregateType,
    aggregate_id: AggregateId,
    schema_version: i32,
) -> Result<Option<Snapshot>, StoreError> {
    let row = sqlx::query(
        "SELECT sequence, state FROM eventstore.snapshots \
         WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND schema_version = $4",
    )
    .bind(instance.as_uuid())
    .bind(aggregate_type.as_str())
    .bind(aggregate_id.as_uuid())
    .bind(schema_version)
    .fetch_optional(executor)
    .await
    .map_err(unavailable)?;
    row.map(|row| {
        Ok(Snapshot {
            instance_id: instance,
            aggregate_type: aggregate_type.clone(),
            aggregate_id,
            sequence: row.try_get(0).map_err(unavailable)?,
            schema_version,
            state: row.try_get(1).map_err(unavailable)?,
        })
    })
    .transpose()
}

/// Maps the push function's errors to typed store errors.
fn push_error(error: sqlx::Error, push: &Push) -> StoreError {
    let Some(db) = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
    else {
        return unavailable(error);
    };
    match db.code() {
        "CA409" => {
            // DETAIL: <1-based aggregate index>/<expected>/<actual>
            let mut parts = db.detail().unwrap_or_default().split('/');
            let index: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1);
            let expected = parts.next().and_then(|s| s.parse().ok());
            let actual = parts.next().and_then(|s| s.parse().ok());
            conflict(push, index.saturating_sub(1), expected, actual)
        }
        "CA40R" => {
            // DETAIL: <1-based aggregate index>/<last position>/<own position>
            let mut parts = db.detail().unwrap_or_default().split('/');
            let index: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1);
            let latest = parts.next().and_then(|s| s.parse().ok()).unwrap_or_default();
            let own = parts.next().and_then(|s| s.parse().ok()).unwrap_or_default();
            match push
                .aggregates
                .get(index.saturating_sub(1))
                .or(push.aggregates.first())
            {
                Some(a) => StoreError::TransactionTooOld {
                    instance_id: a.instance_id,
                    aggregate_type: a.aggregate_type.clone(),
                    aggregate_id: a.aggregate_id,
                    latest,
                    own,
                },
                None => unavailable(error),
            }
        }
        "CA423" => StoreError::UniqueViolation {
            unique_type: db.detail().unwrap_or_default().to_owned(),
            value: db.hint().unwrap_or_default().to_owned(),
        },
        "23505" if db.constraint() == Some("data_keys_pkey") => {
            // A key for a subject that was new to the writer: its first events were pushed (and
            // the key made) concurrently, or it was erased; either way its aggregate exists.
            conflict(push, aggregate_named(push, db.detail()), Some(0), None)
        }
        "23505" if db.constraint() == Some("events_aggregate_sequence") => {
            // A concurrent writer appended the same sequence first. The key in the detail names the
            // aggregate.
            let index = aggregate_named(push, db.detail());
            let expected = push.aggregates.get(index).and_then(|a| match a.expected {
                ExpectedSequence::Exact(n) => Some(n),
                ExpectedSequence::Any => None,
            });
            conflict(push, index, expected, None)
        }
        _ => unavailable(error),
    }
}

/// The index of the push's aggregate whose id a unique violation's detail names (the first when
/// none does).
fn aggregate_named(push: &Push, detail: Option<&str>) -> usize {
    let detail = detail.unwrap_or_default();
    push.aggregates
        .iter()
        .position(|a| detail.contains(&a.aggregate_id.to_string()))
        .unwrap_or(0)
}

fn conflict(push: &Push, index: usize, expected: Option<i64>, actual: Option<i64>) -> StoreError {
    match push.aggregates.get(index).or(push.aggregates.first()) {
        Some(a) => StoreError::Conflict {
            instance_id: a.instance_id,
            aggregate_type: a.aggregate_type.clone(),
            aggregate_id: a.aggregate_id,
            expected,
            actual,
        },
        None => StoreError::invalid("aggregates", "a push needs at least one event"),
    }
}

/// Decodes one row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let aggregate_type: String = row.try_get("aggregate_type").map_err(unavailable)?;
    let event_type: String = row.try_get("event_type").map_err(unavailable)?;
    Ok(StoredEvent {
        id: row.try_get::<Uuid, _>("id").map_err(unavailable)?.into(),
        instance_id: row.try_get::<Uuid, _>("instance_id").map_err(unavailable)?.into(),
        aggregate_type: AggregateType::parse(aggregate_type).map_err(corrupt)?,
        aggregate_id: row
            .try_get::<Uuid, _>("aggregate_id")
            .map_err(unavailable)?
            .into(),
        sequence: row.try_get("sequence").map_err(unavailable)?,
        event_type: EventType::parse(event_type).map_err(corrupt)?,
        revision: row.try_get("revision").map_err(unavailable)?,
        payload: row.try_get("payload").map_err(unavailable)?,
        creator: row.try_get("creator").map_err(unavailable)?,
        resource_owner: row
            .try_get::<Uuid, _>("resource_owner")
            .map_err(unavailable)?
            .into(),
        created_at: row.try_get("created_at").map_err(unavailable)?,
        position: Position::new(
            row.try_get("position").map_err(unavailable)?,
            row.try_get("in_tx_order").map_err(unavailable)?,
        ),
        trace_context: row.try_get("trace_context").map_err(unavailable)?,
    })
}

fn filter_query(filter: &EventFilter) -> QueryBuilder<'_, Postgres> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM eventstore.events WHERE {VISIBLE}"
    ));
    q.push(" AND (position, in_tx_order) > (")
        .push_bind(filter.after.position)
        .push(", ")
        .push_bind(filter.after.offset)
        .push(")");
    if let Some(up_to) = filter.up_to {
        q.push(" AND (position, in_tx_order) <= (")
            .push_bind(up_to.position)
            .push(", ")
            .push_bind(up_to.offset)
            .push(")");
    }
    if let Some(instance) = filter.instance_id {
        q.push(" AND instance_id = ").push_bind(instance.as_uuid());
    }
    if !filter.aggregate_types.is_empty() {
        let types: Vec<&str> = filter.aggregate_types.iter().map(|t| t.as_str()).collect();
        q.push(" AND aggregate_type = ANY(").push_bind(types).push(")");
    }
    if !filter.aggregate_ids.is_empty() {
        let ids: Vec<Uuid> = filter.aggregate_ids.iter().map(|id| id.as_uuid()).collect();
        q.push(" AND aggregate_id = ANY(").push_bind(ids).push(")");
    }
    if !filter.event_types.is_empty() {
        let types: Vec<&str> = filter.event_types.iter().map(|t| t.as_str()).collect();
        q.push(" AND event_type = ANY(").push_bind(types).push(")");
    }
    q.push(" ORDER BY position, in_tx_order LIMIT ")
        .push_bind(i64::from(filter.limit));
    q
}

impl EventStore for PgEventStore {
    async fn push(&self, push: Push) -> Result<Vec<StoredEvent>, StoreError> {
        push.validate()?;
        // An autocommit push is its own transaction: when a transaction that started after it
        // appended to one of its aggregates first (between this push taking its id and reading the
        // aggregate), the same push as a new statement gets a new, higher id. Bounded: each round
        // needs yet another newer writer of the same aggregate to commit inside a few microseconds.
        let mut attempt = 0;
        let stored = loop {
            match call_push(&self.pool, &push, false).await {
                Err(StoreError::TransactionTooOld { .. }) if attempt < AUTOCOMMIT_ORDER_RETRIES => {
                    attempt += 1;
                }
                other => break stored_events(push, other?),
            }
        };
        if let Some(last) = stored.last() {
            self.announce(last.position);
        }
        Ok(stored)
    }

    async fn filter(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        filter.validate()?;
        let rows = filter_query(filter)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head_position(&self, instance: Option<InstanceId>) -> Result<Position, StoreError> {
        let row = match instance {
            Some(instance) => sqlx::query(&format!(
                "SELECT position, in_tx_order FROM eventstore.events WHERE instance_id = $1 AND {VISIBLE} \
                 ORDER BY position DESC, in_tx_order DESC LIMIT 1"
            ))
            .bind(instance.as_uuid())
            .fetch_optional(&self.pool)
            .await,
            None => {
                sqlx::query(&format!(
                    "SELECT position, in_tx_order FROM eventstore.events WHERE {VISIBLE} \
                 ORDER BY position DESC, in_tx_order DESC LIMIT 1"
                ))
                .fetch_optional(&self.pool)
                .await
            }
        }
        .map_err(unavailable)?;
        match row {
            None => Ok(Position::ZERO),
            Some(row) => Ok(Position::new(
                row.try_get(0).map_err(unavailable)?,
                row.try_get(1).map_err(unavailable)?,
            )),
        }
    }

    async fn load_aggregate(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        after_sequence: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        load_aggregate_with(&self.pool, instance, aggregate_type, aggregate_id, after_sequence).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO eventstore.snapshots \
               (instance_id, aggregate_type, aggregate_id, sequence, schema_version, state) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (instance_id, aggregate_type, aggregate_id) DO UPDATE \
               SET sequence = EXCLUDED.sequence, schema_version = EXCLUDED.schema_version, \
                   state = EXCLUDED.state, created_at = statement_timestamp() \
             WHERE eventstore.snapshots.sequence <= EXCLUDED.sequence",
        )
        .bind(snapshot.instance_id.as_uuid())
        .bind(snapshot.aggregate_type.as_str())
        .bind(snapshot.aggregate_id.as_uuid())
        .bind(snapshot.sequence)
        .bind(snapshot.schema_version)
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        instance: InstanceId,
        aggregate_type: &AggregateType,
        aggregate_id: AggregateId,
        schema_version: i32,
    ) -> Result<Option<Snapshot>, StoreError> {
        load_snapshot_with(&self.pool, instance, aggregate_type, aggregate_id, schema_version).await
    }
}

impl PgEventStore {
    /// The events at `positions` (an instance's, by their global position), in position order;
    /// positions with no event are left out. For readers that keep references to events (the
    /// actions service's deliveries) rather than copies.
    pub async fn events_at(
        &self,
        instance: InstanceId,
        positions: &[Position],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (pos, off): (Vec<i64>, Vec<i32>) = positions.iter().map(|p| (p.position, p.offset)).unzip();
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM eventstore.events \
              WHERE instance_id = $1 AND (position, in_tx_order) IN (SELECT * FROM unnest($2::bigint[], $3::int[])) \
              ORDER BY position, in_tx_order"
        ))
        .bind(instance.as_uuid())
        .bind(pos)
        .bind(off)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(event_from_row).collect()
    }

    /// The position of the instance's latest committed event, including events that a tailing
    /// reader cannot see yet because an older transaction is still open. Projections reach it once
    /// that transaction ends; a reader that must see everything committed before it asked (SCIM's
    /// read-after-write) waits for this position.
    pub async fn latest_committed(&self, instance: InstanceId) -> Result<Position, StoreError> {
        let row: Option<(i64, i32)> = sqlx::query_as(
            "SELECT position, in_tx_order FROM eventstore.events WHERE instance_id = $1 \
             ORDER BY position DESC, in_tx_order DESC LIMIT 1",
        )
        .bind(instance.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map_or(Position::ZERO, |(p, o)| Position::new(p, o)))
    }

    /// How many events lie after `after` (counting at most `cap`), and when the oldest of them was
    /// committed; for lag metrics. Counts events above the visibility horizon too.
    pub async fn backlog(
        &self,
        after: Position,
        cap: i64,
    ) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM eventstore.events \
                      WHERE (position, in_tx_order) > ($1, $2) LIMIT $3) t), \
                    (SELECT created_at FROM eventstore.events WHERE (position, in_tx_order) > ($1, $2) \
                      ORDER BY position, in_tx_order LIMIT 1)",
        )
        .bind(after.position)
        .bind(after.offset)
        .bind(cap)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok((
            row.try_get(0).map_err(unavailable)?,
            row.try_get(1).map_err(unavailable)?,
        ))
    }
}

/// Applies all migrations; used by the `migrate` subcommands and at service start.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    cairn_migrations::run(pool).await
}
