//! Every statement on `actions.deliveries`, `actions.attempts` and `actions.target_health`.
//!
//! ## Order
//! A delivery is *open* while it is `pending` or `delivering`. Of a target's open deliveries of
//! one aggregate (of all of the target's open deliveries, for a strict-order target) only the
//! earliest by event position — the *head* — may be due; the others wait with
//! `next_attempt_at = infinity`, out of the due index, so a target that is down with a million
//! waiting events costs the claim query nothing. When a head ends (delivered or failed) the next
//! one is woken ([`finish`]).
//!
//! The intake (inserting rows, deciding which are heads) and a dispatcher (ending a head, waking
//! the next) could each miss the other's uncommitted row, leaving a row parked behind nothing.
//! They are serialised per target instead: the intake takes the target's advisory lock
//! exclusively for its transaction, a dispatcher's outcome takes it shared (outcomes of one target
//! do not wait for each other), so each statement that decides about heads sees the other's
//! committed work.

use cairn_domain::{Position, StoredEvent};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// The advisory lock key of a target (two targets may share one; that only serialises them).
const LOCK_KEY: &str = "hashtextextended('cairn.actions.' || $1::text, 0)";

/// The strict-order checks say `e.event_offset >= 0` (true of every row) so that they, and only
/// they, can use `deliveries_open_target` (see `migrations/0014_actions_open_target.sql`): the
/// per-aggregate checks must use `deliveries_open_aggregate` whatever the statistics say.
///
/// True when `d` is its key's head: no earlier open delivery of its key exists, and none of its
/// key is being delivered (a replayed earlier event waits for a later one in flight, so two of one
/// key are never on the wire together); `t` is `d`'s target.
const NO_EARLIER_OPEN: &str = "NOT (CASE WHEN t.strict_order THEN EXISTS ( \
       SELECT 1 FROM actions.deliveries e WHERE e.target_id = d.target_id AND e.event_offset >= 0 \
          AND (e.state = 'delivering' OR (e.state = 'pending' \
               AND (e.event_position, e.event_offset) < (d.event_position, d.event_offset)))) \
     ELSE EXISTS ( \
       SELECT 1 FROM actions.deliveries e WHERE e.target_id = d.target_id \
          AND e.aggregate_type = d.aggregate_type AND e.aggregate_id = d.aggregate_id \
          AND (e.state = 'delivering' OR (e.state = 'pending' \
               AND (e.event_position, e.event_offset) < (d.event_position, d.event_offset)))) END)";

/// True when an earlier open delivery of `d`'s key exists (`t` is `d`'s target): `d` must wait.
const EARLIER_OPEN: &str = "(CASE WHEN t.strict_order THEN EXISTS ( \
       SELECT 1 FROM actions.deliveries e WHERE e.target_id = d.target_id AND e.event_offset >= 0 \
          AND e.state IN ('pending', 'delivering') \
          AND (e.event_position, e.event_offset) < (d.event_position, d.event_offset)) \
     ELSE EXISTS ( \
       SELECT 1 FROM actions.deliveries e WHERE e.target_id = d.target_id \
          AND e.aggregate_type = d.aggregate_type AND e.aggregate_id = d.aggregate_id \
          AND e.state IN ('pending', 'delivering') \
          AND (e.event_position, e.event_offset) < (d.event_position, d.event_offset)) END)";

/// Rows to insert, column by column.
#[derive(Default, Debug)]
pub struct NewDeliveries {
    instance: Vec<Uuid>,
    target: Vec<Uuid>,
    event: Vec<Uuid>,
    event_type: Vec<String>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<Uuid>,
    sequence: Vec<i64>,
    position: Vec<i64>,
    offset: Vec<i32>,
    created: Vec<DateTime<Utc>>,
}

impl NewDeliveries {
    /// One delivery of `event` to `target`.
    pub fn push(&mut self, target: Uuid, event: &StoredEvent) {
        self.instance.push(event.instance_id.as_uuid());
        self.target.push(target);
        self.event.push(event.id.as_uuid());
        self.event_type.push(event.event_type.as_str().to_owned());
        self.aggregate_type.push(event.aggregate_type.as_str().to_owned());
        self.aggregate_id.push(event.aggregate_id.as_uuid());
        self.sequence.push(event.sequence);
        self.position.push(event.position.position);
        self.offset.push(event.position.offset);
        self.created.push(event.created_at);
    }

    /// Whether there is nothing to insert.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }
}

/// Takes the advisory locks of `targets` exclusively until the transaction ends, in a fixed order.
pub async fn lock_targets(conn: &mut PgConnection, targets: &[Uuid]) -> Result<(), sqlx::Error> {
    let mut targets = targets.to_vec();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        sqlx::query(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"))
            .bind(target)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts the rows that do not exist yet (a second read of an event changes nothing) and makes
/// those that are heads of an active target due now. Returns how many were inserted.
pub async fn insert(conn: &mut PgConnection, rows: &NewDeliveries) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    lock_targets(&mut *conn, &rows.target).await?;
    let inserted = sqlx::query(
        "INSERT INTO actions.deliveries (instance_id, target_id, event_id, event_type, aggregate_type, aggregate_id, \
           sequence, event_position, event_offset, event_created_at, state, next_attempt_at) \
         SELECT i, t, e, et, at, a, s, p, o, c, 'pending', 'infinity' \
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::bigint[], \
                       $8::bigint[], $9::int[], $10::timestamptz[]) AS r(i, t, e, et, at, a, s, p, o, c) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&rows.instance)
    .bind(&rows.target)
    .bind(&rows.event)
    .bind(&rows.event_type)
    .bind(&rows.aggregate_type)
    .bind(&rows.aggregate_id)
    .bind(&rows.sequence)
    .bind(&rows.position)
    .bind(&rows.offset)
    .bind(&rows.created)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(&wake_new_heads_sql())
        .bind(&rows.target)
        .bind(&rows.event)
        .execute(&mut *conn)
        .await?;
    Ok(inserted)
}

/// Makes the heads among the rows just inserted (targets `$1`, events `$2`) due now.
fn wake_new_heads_sql() -> String {
    format!(
        "UPDATE actions.deliveries d SET next_attempt_at = clock_timestamp() FROM actions.targets t \
          WHERE (d.target_id, d.event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[])) \
            AND d.state = 'pending' AND d.next_attempt_at = 'infinity' \
            AND t.instance_id = d.instance_id AND t.id = d.target_id AND t.state = 'active' \
            AND {NO_EARLIER_OPEN}"
    )
}

/// Makes the waiting heads of target `$1` due now.
fn wake_waiting_heads_sql() -> String {
    format!(
        "UPDATE actions.deliveries d SET next_attempt_at = clock_timestamp() FROM actions.targets t \
          WHERE d.target_id = $1 AND d.state = 'pending' AND d.next_attempt_at = 'infinity' \
            AND t.instance_id = d.instance_id AND t.id = d.target_id AND t.state = 'active' \
            AND {NO_EARLIER_OPEN}"
    )
}

/// Makes every waiting head of `target` due now (after it was enabled, its order rule changed,
/// or deliveries were made pending again), after parking every due delivery that is no longer its
/// key's head (an earlier event was made pending again, or the order became strict). The caller
/// holds the target's lock.
pub async fn wake_heads(conn: &mut PgConnection, target: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE actions.deliveries d SET next_attempt_at = 'infinity' FROM actions.targets t \
          WHERE d.target_id = $1 AND d.state = 'pending' AND d.next_attempt_at <> 'infinity' \
            AND t.instance_id = d.instance_id AND t.id = d.target_id AND {EARLIER_OPEN}"
    ))
    .bind(target)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query(&wake_waiting_heads_sql())
        .bind(target)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// A claimed delivery, with what its attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The tenant.
    pub instance_id: Uuid,
    /// The target.
    pub target_id: Uuid,
    /// The event (and `webhook-id`).
    pub event_id: Uuid,
    /// Its aggregate.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: Uuid,
    /// Its position.
    pub position: Position,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// The target's endpoint.
    pub endpoint: String,
    /// `webhook`, `call` or `async`.
    pub kind: String,
    /// The call's time limit.
    pub timeout: Duration,
    /// Whether the target takes every event in global order.
    pub strict_order: bool,
    /// The sealed signing secret.
    pub secret: serde_json::Value,
    /// The previous one, while its grace period lasts.
    pub previous_secret: Option<serde_json::Value>,
    /// The target's version (secrets are cached by it).
    pub target_sequence: i64,
    /// This attempt's number in the current retry schedule, from 1 (a retry or replay starts a
    /// new schedule; [`Claimed::attempt`] keeps counting).
    pub round_attempt: i32,
}

/// The claim statement (see [`claim`]).
const CLAIM_SQL: &str = "WITH RECURSIVE expired AS ( \
           SELECT target_id, event_id FROM actions.deliveries \
            WHERE state = 'delivering' AND claim_expires_at < clock_timestamp() \
            ORDER BY claim_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         scheduled(target_id) AS ( \
           (SELECT target_id FROM actions.deliveries \
             WHERE state = 'pending' AND next_attempt_at < 'infinity' \
             ORDER BY target_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT d.target_id FROM actions.deliveries d \
                    WHERE d.state = 'pending' AND d.next_attempt_at < 'infinity' AND d.target_id > s.target_id \
                    ORDER BY d.target_id LIMIT 1) \
             FROM scheduled s WHERE s.target_id IS NOT NULL), \
         due AS ( \
           SELECT c.target_id, c.event_id \
             FROM scheduled s \
             CROSS JOIN LATERAL ( \
               SELECT d.target_id, d.event_id FROM actions.deliveries d \
                WHERE d.target_id = s.target_id AND d.state = 'pending' \
                  AND d.next_attempt_at < 'infinity' AND d.next_attempt_at <= statement_timestamp() \
                ORDER BY d.next_attempt_at \
                LIMIT COALESCE((SELECT r.left_ FROM unnest($5::uuid[], $6::int[]) AS r(t, left_) \
                                 WHERE r.t = s.target_id), $7) \
                FOR UPDATE SKIP LOCKED) AS c \
            WHERE s.target_id IS NOT NULL AND s.target_id <> ALL($3)), \
         picked AS ( \
           SELECT target_id, event_id FROM expired \
           UNION ALL \
           SELECT target_id, event_id FROM due \
           LIMIT $2) \
         UPDATE actions.deliveries d \
            SET state = 'delivering', claimed_by = $1, attempts = d.attempts + 1, \
                claim_expires_at = clock_timestamp() + make_interval(secs => $4) \
           FROM picked, actions.targets t \
          WHERE d.target_id = picked.target_id AND d.event_id = picked.event_id \
            AND t.instance_id = d.instance_id AND t.id = d.target_id AND t.state = 'active' \
         RETURNING d.instance_id, d.target_id, d.event_id, d.aggregate_type, d.aggregate_id, d.event_position, \
                   d.event_offset, d.attempts, t.endpoint, t.kind, t.timeout_ms, t.strict_order, t.secret, \
                   CASE WHEN t.previous_expires_at > clock_timestamp() THEN t.previous_secret END, t.sequence, \
                   d.attempts - d.schedule_from";

/// Claims up to `limit` deliveries for `owner`: deliveries whose claim expired (their replica
/// died mid-call) first, then due heads, per target the oldest due first, leaving out
/// `saturated` targets. `FOR UPDATE SKIP LOCKED` keeps two dispatchers off one row; only active
/// targets' rows are taken.
///
/// The targets with scheduled deliveries are found by skipping from one to the next in
/// `deliveries_scheduled` (target, due time), and each one's due rows read from there up to its
/// room: `room` is the calls each target with calls in flight may still take and `per_target`
/// the room of every other target. So a claim costs one index probe per target with scheduled
/// deliveries plus the rows it takes, however many rows a busy or saturated target has due
/// (a claim over the due index in time order read past all of them).
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    limit: i64,
    saturated: &[Uuid],
    room: &[(Uuid, i32)],
    per_target: i32,
    claim_ttl: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let (room_targets, room_left): (Vec<Uuid>, Vec<i32>) = room.iter().copied().unzip();
    let rows = sqlx::query(CLAIM_SQL)
        .bind(owner)
        .bind(limit)
        .bind(saturated)
        .bind(claim_ttl.as_secs_f64())
        .bind(&room_targets)
        .bind(&room_left)
        .bind(per_target)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let timeout_ms: i32 = row.try_get(10)?;
            Ok(Claimed {
                instance_id: row.try_get(0)?,
                target_id: row.try_get(1)?,
                event_id: row.try_get(2)?,
                aggregate_type: row.try_get(3)?,
                aggregate_id: row.try_get(4)?,
                position: Position {
                    position: row.try_get(5)?,
                    offset: row.try_get(6)?,
                },
                attempt: row.try_get(7)?,
                endpoint: row.try_get(8)?,
                kind: row.try_get(9)?,
                timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(1)),
                strict_order: row.try_get(11)?,
                secret: row.try_get(12)?,
                previous_secret: row.try_get(13)?,
                target_sequence: row.try_get(14)?,
                round_attempt: row.try_get(15)?,
            })
        })
        .collect()
}

/// Gives claimed deliveries back untried (over the per-target cap): pending, due as before.
pub async fn release(pool: &PgPool, owner: Uuid, rows: &[&Claimed]) -> Result<(), sqlx::Error> {
    let (targets, events): (Vec<Uuid>, Vec<Uuid>) = rows.iter().map(|c| (c.target_id, c.event_id)).unzip();
    sqlx::query(
        "UPDATE actions.deliveries SET state = 'pending', claimed_by = NULL, claim_expires_at = NULL, \
           attempts = attempts - 1 \
         WHERE (target_id, event_id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[])) AND claimed_by = $1 \
           AND state = 'delivering'",
    )
    .bind(owner)
    .bind(&targets)
    .bind(&events)
    .execute(pool)
    .await?;
    Ok(())
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// When it began (the service's clock).
    pub started_at: DateTime<Utc>,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// The first 2 KiB of the answer's body.
    pub response: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Delivered (a 2xx answer).
    Delivered,
    /// Tried again after the delay.
    Retry(Duration),
    /// Waits without a time (its target is being disabled; enabling wakes it).
    Hold,
    /// Given up: its attempts are used up while the target answers other deliveries.
    Failed,
}

/// The target's health after an attempt.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// Since when every call failed (none after a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// The last success.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// Records an attempt and the target's health after it (the health's times come from the
/// service's clock, so the failure period can be tested with an injected one).
pub async fn record_attempt(
    pool: &PgPool,
    claimed: &Claimed,
    attempted: &Attempted,
    now: DateTime<Utc>,
) -> Result<Health, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let status = attempted.status.map(i32::from);
    sqlx::query(
        "INSERT INTO actions.attempts (instance_id, target_id, event_id, attempt, started_at, status, latency_ms, \
           response, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(claimed.instance_id)
    .bind(claimed.target_id)
    .bind(claimed.event_id)
    .bind(claimed.attempt)
    .bind(attempted.started_at)
    .bind(status)
    .bind(attempted.latency.as_secs_f64() * 1000.0)
    .bind(&attempted.response)
    .bind(&attempted.error)
    .execute(&mut *conn)
    .await?;
    let succeeded = attempted.error.is_none();
    let row = sqlx::query(
        "INSERT INTO actions.target_health AS h (instance_id, target_id, failing_since, last_success_at, \
           last_failure_at, last_error) \
         VALUES ($1, $2, CASE WHEN $3 THEN NULL ELSE $4 END, CASE WHEN $3 THEN $4 END, \
                 CASE WHEN $3 THEN NULL ELSE $4 END, $5) \
         ON CONFLICT (instance_id, target_id) DO UPDATE SET \
           failing_since = CASE WHEN $3 THEN NULL ELSE COALESCE(h.failing_since, $4) END, \
           last_success_at = CASE WHEN $3 THEN $4 ELSE h.last_success_at END, \
           last_failure_at = CASE WHEN $3 THEN h.last_failure_at ELSE $4 END, \
           last_error = CASE WHEN $3 THEN h.last_error ELSE $5 END \
         RETURNING failing_since, last_success_at",
    )
    .bind(claimed.instance_id)
    .bind(claimed.target_id)
    .bind(succeeded)
    .bind(now)
    .bind(&attempted.error)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Health {
        failing_since: row.try_get(0)?,
        last_success_at: row.try_get(1)?,
    })
}

/// Ends `owner`'s attempt of a delivery as `next` says and, when the delivery is over, wakes the
/// next delivery of its aggregate (of its target, for a strict-order target). False when the
/// claim was lost.
pub async fn finish(
    pool: &PgPool,
    owner: Uuid,
    claimed: &Claimed,
    attempted: &Attempted,
    next: Next,
) -> Result<bool, sqlx::Error> {
    let mut tx = cairn_eventstore::begin(pool).await?;
    sqlx::query(&format!("SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"))
        .bind(claimed.target_id)
        .execute(&mut *tx)
        .await?;
    let (state, delay): (&str, Option<f64>) = match next {
        Next::Delivered => ("delivered", None),
        Next::Failed => ("failed", None),
        Next::Retry(delay) => ("pending", Some(delay.as_secs_f64())),
        Next::Hold => ("pending", None),
    };
    let updated = sqlx::query(
        "UPDATE actions.deliveries d SET state = $4, claimed_by = NULL, claim_expires_at = NULL, \
           last_status = $5, last_error = $6, \
           delivered_at = CASE WHEN $4 = 'delivered' THEN clock_timestamp() ELSE d.delivered_at END, \
           next_attempt_at = CASE \
             WHEN $4 <> 'pending' THEN d.next_attempt_at \
             WHEN $7::float8 IS NULL THEN 'infinity' \
             WHEN (SELECT state FROM actions.targets t WHERE t.instance_id = d.instance_id AND t.id = d.target_id) \
                  = 'active' THEN clock_timestamp() + make_interval(secs => $7) \
             ELSE 'infinity' END \
         WHERE d.target_id = $1 AND d.event_id = $2 AND d.claimed_by = $3 AND d.state = 'delivering'",
    )
    .bind(claimed.target_id)
    .bind(claimed.event_id)
    .bind(owner)
    .bind(state)
    .bind(attempted.status.map(i32::from))
    .bind(&attempted.error)
    .bind(delay)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if matches!(next, Next::Delivered | Next::Failed) {
        let key = if claimed.strict_order {
            "e.target_id = $1 AND e.event_offset >= 0"
        } else {
            "e.target_id = $1 AND e.aggregate_type = $2 AND e.aggregate_id = $3"
        };
        sqlx::query(&format!(
            "UPDATE actions.deliveries d SET next_attempt_at = clock_timestamp() FROM actions.targets t \
              WHERE d.target_id = $1 AND d.event_id = ( \
                      SELECT e.event_id FROM actions.deliveries e WHERE {key} \
                         AND e.state IN ('pending', 'delivering') \
                       ORDER BY e.event_position, e.event_offset LIMIT 1) \
                AND d.state = 'pending' AND d.next_attempt_at = 'infinity' \
                AND t.instance_id = d.instance_id AND t.id = d.target_id AND t.state = 'active'"
        ))
        .bind(claimed.target_id)
        .bind(&claimed.aggregate_type)
        .bind(claimed.aggregate_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Ends a batch of one target's deliveries as delivered (see [`finish_delivered`]).
const FINISH_DELIVERED_SQL: &str = "UPDATE actions.deliveries d SET state = 'delivered', claimed_by = NULL, claim_expires_at = NULL, \
           last_status = f.status, last_error = NULL, delivered_at = clock_timestamp() \
           FROM unnest($3::uuid[], $4::int4[]) AS f(event_id, status) \
         WHERE d.target_id = $1 AND d.event_id = f.event_id AND d.claimed_by = $2 AND d.state = 'delivering' \
         RETURNING d.event_id, d.aggregate_type, d.aggregate_id";

/// Records successful attempts of one target's deliveries and ends them as delivered, waking the
/// next delivery of each key, in one transaction (one commit for the lot instead of three per
/// delivery): the attempts, the target's health (a success clears `failing_since`), the
/// deliveries still claimed by `owner`, the wake-ups. Every item must be of `target` and have
/// succeeded; what comes back says, per item, whether its claim was still `owner`'s.
pub async fn finish_delivered(
    pool: &PgPool,
    owner: Uuid,
    target: Uuid,
    items: &[(&Claimed, &Attempted)],
    now: DateTime<Utc>,
) -> Result<Vec<bool>, sqlx::Error> {
    let Some((first, _)) = items.first() else {
        return Ok(Vec::new());
    };
    let mut tx = cairn_eventstore::begin(pool).await?;
    sqlx::query(&format!("SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"))
        .bind(target)
        .execute(&mut *tx)
        .await?;
    let events: Vec<Uuid> = items.iter().map(|(c, _)| c.event_id).collect();
    let numbers: Vec<i32> = items.iter().map(|(c, _)| c.attempt).collect();
    let started: Vec<DateTime<Utc>> = items.iter().map(|(_, a)| a.started_at).collect();
    let statuses: Vec<Option<i32>> = items.iter().map(|(_, a)| a.status.map(i32::from)).collect();
    let latencies: Vec<f64> = items
        .iter()
        .map(|(_, a)| a.latency.as_secs_f64() * 1000.0)
        .collect();
    let responses: Vec<Option<String>> = items.iter().map(|(_, a)| a.response.clone()).collect();
    sqlx::query(
        "INSERT INTO actions.attempts (instance_id, target_id, event_id, attempt, started_at, status, latency_ms, response) \
         SELECT $1, $2, a.event_id, a.attempt, a.started_at, a.status, a.latency_ms, a.response \
           FROM unnest($3::uuid[], $4::int4[], $5::timestamptz[], $6::int4[], $7::float8[], $8::text[]) \
                AS a(event_id, attempt, started_at, status, latency_ms, response) \
         ON CONFLICT DO NOTHING",
    )
    .bind(first.instance_id)
    .bind(target)
    .bind(&events)
    .bind(&numbers)
    .bind(&started)
    .bind(&statuses)
    .bind(&latencies)
    .bind(&responses)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO actions.target_health AS h (instance_id, target_id, last_success_at) VALUES ($1, $2, $3) \
         ON CONFLICT (instance_id, target_id) DO UPDATE SET failing_since = NULL, last_success_at = $3",
    )
    .bind(first.instance_id)
    .bind(target)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let finished: Vec<(Uuid, String, Uuid)> = sqlx::query_as(FINISH_DELIVERED_SQL)
        .bind(target)
        .bind(owner)
        .bind(&events)
        .bind(&statuses)
        .fetch_all(&mut *tx)
        .await?;
    if !finished.is_empty() {
        // The next open delivery of each key whose head ended (of the target, if strict).
        let (types, ids): (Vec<String>, Vec<Uuid>) = if first.strict_order {
            (vec![String::new()], vec![Uuid::nil()])
        } else {
            let mut keys: Vec<(String, Uuid)> = finished.iter().map(|(_, t, a)| (t.clone(), *a)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.into_iter().unzip()
        };
        let key = if first.strict_order {
            "e.target_id = $1 AND e.event_offset >= 0"
        } else {
            "e.target_id = $1 AND e.aggregate_type = k.aggregate_type AND e.aggregate_id = k.aggregate_id"
        };
        sqlx::query(&format!(
            "UPDATE actions.deliveries d SET next_attempt_at = clock_timestamp() FROM actions.targets t \
              WHERE d.target_id = $1 AND d.event_id IN ( \
                      SELECT (SELECT e.event_id FROM actions.deliveries e WHERE {key} \
                                 AND e.state IN ('pending', 'delivering') \
                               ORDER BY e.event_position, e.event_offset LIMIT 1) \
                        FROM unnest($2::text[], $3::uuid[]) AS k(aggregate_type, aggregate_id)) \
                AND d.state = 'pending' AND d.next_attempt_at = 'infinity' \
                AND t.instance_id = d.instance_id AND t.id = d.target_id AND t.state = 'active'"
        ))
        .bind(target)
        .bind(&types)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let finished: std::collections::HashSet<Uuid> = finished.into_iter().map(|(e, _, _)| e).collect();
    Ok(items
        .iter()
        .map(|(c, _)| finished.contains(&c.event_id))
        .collect())
}

/// How long until the next delivery becomes due, if one waits for a time. Rows due already and
/// not claimed belong to targets at their cap (a call ending wakes the claim) or are another
/// replica's; counting them would make an idle claim loop spin.
pub async fn next_due_in(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (min(next_attempt_at) - clock_timestamp()))::float8 \
           FROM actions.deliveries WHERE state = 'pending' AND next_attempt_at < 'infinity' \
            AND next_attempt_at > statement_timestamp()",
    )
    .fetch_one(pool)
    .await?;
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Open deliveries (the queue-depth gauge).
pub async fn queue_depth(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM actions.deliveries WHERE state IN ('pending', 'delivering')")
        .fetch_one(pool)
        .await
}

/// One row of the delivery log.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The target.
    pub target_id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its aggregate type.
    pub aggregate_type: String,
    /// Its aggregate.
    pub aggregate_id: Uuid,
    /// Its sequence.
    pub sequence: i64,
    /// Its position.
    pub position: Position,
    /// `pending`, `delivering`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next one is due (`None`: waiting for an earlier delivery or an enable).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status of the last attempt.
    pub last_status: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When the row was made.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "target_id, event_id, event_type, aggregate_type, aggregate_id, sequence, \
     event_position, event_offset, state, attempts, \
     CASE WHEN next_attempt_at = 'infinity' THEN NULL ELSE next_attempt_at END, last_status, last_error, \
     created_at, delivered_at";

fn delivery(row: &sqlx::postgres::PgRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        target_id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        aggregate_type: row.try_get(3)?,
        aggregate_id: row.try_get(4)?,
        sequence: row.try_get(5)?,
        position: Position {
            position: row.try_get(6)?,
            offset: row.try_get(7)?,
        },
        state: row.try_get(8)?,
        attempts: row.try_get(9)?,
        next_attempt_at: row.try_get(10)?,
        last_status: row.try_get(11)?,
        last_error: row.try_get(12)?,
        created_at: row.try_get(13)?,
        delivered_at: row.try_get(14)?,
    })
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this target's.
    pub target_id: Option<Uuid>,
    /// Only this event's.
    pub event_id: Option<Uuid>,
    /// Only in this state.
    pub state: Option<&'static str>,
    /// Made at or after.
    pub since: Option<DateTime<Utc>>,
    /// Made before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// The instance's deliveries matching `filter`, newest first.
pub async fn list(pool: &PgPool, instance: Uuid, filter: &ListFilter) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM actions.deliveries WHERE instance_id = $1 \
           AND ($2::uuid IS NULL OR target_id = $2) AND ($3::uuid IS NULL OR event_id = $3) \
           AND ($4::text IS NULL OR state = $4) AND ($5::timestamptz IS NULL OR created_at >= $5) \
           AND ($6::timestamptz IS NULL OR created_at < $6) \
         ORDER BY created_at DESC, event_position DESC, event_offset DESC LIMIT $7"
    ))
    .bind(instance)
    .bind(filter.target_id)
    .bind(filter.event_id)
    .bind(filter.state)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery).collect()
}

/// One delivery of the instance.
pub async fn get(
    pool: &PgPool,
    instance: Uuid,
    target: Uuid,
    event: Uuid,
) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM actions.deliveries WHERE instance_id = $1 AND target_id = $2 AND event_id = $3"
    ))
    .bind(instance)
    .bind(target)
    .bind(event)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(delivery)
    .transpose()
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Its number.
    pub attempt: i32,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// HTTP status.
    pub status: Option<i32>,
    /// Latency in milliseconds.
    pub latency_ms: f64,
    /// The first 2 KiB of the answer.
    pub response: Option<String>,
    /// The error.
    pub error: Option<String>,
}

/// The attempts of one delivery, oldest first.
pub async fn attempts(
    pool: &PgPool,
    instance: Uuid,
    target: Uuid,
    event: Uuid,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT attempt, started_at, status, latency_ms, response, error FROM actions.attempts \
          WHERE instance_id = $1 AND target_id = $2 AND event_id = $3 ORDER BY attempt",
    )
    .bind(instance)
    .bind(target)
    .bind(event)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptRow {
                attempt: row.try_get(0)?,
                started_at: row.try_get(1)?,
                status: row.try_get(2)?,
                latency_ms: row.try_get(3)?,
                response: row.try_get(4)?,
                error: row.try_get(5)?,
            })
        })
        .collect()
}

/// Makes one delivery pending again and due now if it is its key's head (a `failed` one starts
/// its schedule again; a `delivered` one is sent again). `None`: no such delivery; `Some(false)`:
/// it is being delivered right now.
pub async fn retry(
    pool: &PgPool,
    instance: Uuid,
    target: Uuid,
    event: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    let mut tx = cairn_eventstore::begin(pool).await?;
    lock_targets(&mut tx, &[target]).await?;
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM actions.deliveries WHERE instance_id = $1 AND target_id = $2 AND event_id = $3 FOR UPDATE",
    )
    .bind(instance)
    .bind(target)
    .bind(event)
    .fetch_optional(&mut *tx)
    .await?;
    match state.as_deref() {
        None => return Ok(None),
        Some("delivering") => return Ok(Some(false)),
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE actions.deliveries SET state = 'pending', next_attempt_at = 'infinity', \
           schedule_from = CASE WHEN state = 'pending' THEN schedule_from ELSE attempts END, \
           replays = replays + CASE WHEN state = 'delivered' THEN 1 ELSE 0 END \
         WHERE target_id = $1 AND event_id = $2",
    )
    .bind(target)
    .bind(event)
    .execute(&mut *tx)
    .await?;
    wake_heads(&mut tx, target).await?;
    tx.commit().await?;
    Ok(Some(true))
}

/// Makes deliveries of `events` to `target` pending again (inserting those that never existed),
/// in order, and wakes the heads. Returns how many were made pending. Rows being delivered right
/// now are left to finish.
pub async fn replay(pool: &PgPool, target: Uuid, events: &[StoredEvent]) -> Result<u64, sqlx::Error> {
    let mut tx = cairn_eventstore::begin(pool).await?;
    let mut rows = NewDeliveries::default();
    for event in events {
        rows.push(target, event);
    }
    lock_targets(&mut tx, &[target]).await?;
    let inserted = insert(&mut tx, &rows).await?;
    let reopened = sqlx::query(
        "UPDATE actions.deliveries SET state = 'pending', next_attempt_at = 'infinity', schedule_from = attempts, \
           replays = replays + 1 \
         WHERE target_id = $1 AND event_id = ANY($2) AND state IN ('delivered', 'failed')",
    )
    .bind(target)
    .bind(&rows.event)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    wake_heads(&mut tx, target).await?;
    tx.commit().await?;
    Ok(inserted + reopened)
}

/// Counts of a target's open and failed deliveries.
pub async fn target_counts(pool: &PgPool, target: Uuid) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state IN ('pending', 'delivering')), count(*) FILTER (WHERE state = 'failed') \
           FROM actions.deliveries WHERE target_id = $1",
    )
    .bind(target)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    type Explain<'q> = sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>;

    /// The plan of an `EXPLAIN` query, as text.
    async fn plan(pool: &PgPool, explain: Explain<'_>) -> String {
        explain.fetch_all(pool).await.unwrap().join("\n")
    }

    /// An active webhook target.
    async fn add_target(pool: &PgPool, instance: Uuid, target: Uuid, name: &str) {
        sqlx::query(
            "INSERT INTO actions.targets (instance_id, id, name, endpoint, kind, timeout_ms, interrupt_on_error, \
               strict_order, secret, state, created_at, changed_at, sequence) \
             VALUES ($1, $2, $3, 'https://example.com/hook', 'webhook', 1000, false, false, '{}', 'active', now(), now(), 1)",
        )
        .bind(instance)
        .bind(target)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    }

    /// Deliveries of `target` at positions `from..=to` (`n`), one aggregate each, with the state
    /// and due time the SQL expressions give.
    async fn add_deliveries(
        pool: &PgPool,
        instance: Uuid,
        target: Uuid,
        (from, to): (i64, i64),
        state: &str,
        due: &str,
    ) {
        sqlx::query(&format!(
            "INSERT INTO actions.deliveries (instance_id, target_id, event_id, event_type, aggregate_type, \
               aggregate_id, sequence, event_position, event_offset, event_created_at, state, next_attempt_at) \
             SELECT $1, $2, gen_random_uuid(), 'user.human.added', 'user', gen_random_uuid(), 1, n, 0, now(), \
                    {state}, {due} FROM generate_series($3::bigint, $4::bigint) AS n"
        ))
        .bind(instance)
        .bind(target)
        .bind(from)
        .bind(to)
        .execute(pool)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_head_check_looks_up_an_aggregate_by_its_index_without_statistics() {
        // Never analysed (as with autovacuum off): a target with 5,000 open deliveries of as many
        // aggregates. Checking whether a new row is its aggregate's head must read that aggregate's
        // open rows, not every open row of the target (that made the intake quadratic in the
        // backlog of a target that is down).
        let db = cairn_testkit::TestDb::new(2).await.unwrap();
        let (instance, target) = (Uuid::new_v4(), Uuid::new_v4());
        add_target(&db.pool, instance, target, "down").await;
        add_deliveries(&db.pool, instance, target, (1, 5000), "'pending'", "now()").await;
        let events: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM actions.deliveries ORDER BY event_position LIMIT 100")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let targets = vec![target; events.len()];
        let (new_heads, waiting_heads) = (
            format!("EXPLAIN {}", wake_new_heads_sql()),
            format!("EXPLAIN {}", wake_waiting_heads_sql()),
        );
        for (what, explain) in [
            (
                "the heads among new rows",
                sqlx::query_scalar(&new_heads).bind(&targets).bind(&events),
            ),
            (
                "the heads of a target",
                sqlx::query_scalar(&waiting_heads).bind(target),
            ),
        ] {
            let plan = plan(&db.pool, explain).await;
            // The per-aggregate branch (the second subplan, listed last) must search by aggregate.
            let (_, aggregate_branch) = plan
                .rsplit_once("SubPlan 2")
                .unwrap_or_else(|| panic!("{what}: no second subplan:\n{plan}"));
            assert!(
                aggregate_branch.contains("deliveries_open_aggregate"),
                "{what}: the per-aggregate check does not use the aggregate index:\n{plan}"
            );
        }
        db.drop_db().await.unwrap();
    }

    #[tokio::test]
    async fn a_claim_reads_each_target_from_its_own_due_rows_without_statistics() {
        // Never analysed: target A has 20,000 due deliveries (and as many delivered and 5,000
        // parked), target B 5 due, target C 100 due in an hour. A claim with A at its cap must
        // still find B's at once, by probing each target, not by reading past A's due rows.
        let db = cairn_testkit::TestDb::new(2).await.unwrap();
        let instance = Uuid::new_v4();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for (target, name) in [(a, "a"), (b, "b"), (c, "c")] {
            add_target(&db.pool, instance, target, name).await;
        }
        let add = |target, range, state, due| add_deliveries(&db.pool, instance, target, range, state, due);
        add(a, (1, 20_000), "'pending'", "now() - interval '1 minute'").await;
        add(a, (20_001, 25_000), "'pending'", "'infinity'").await;
        add(a, (25_001, 45_000), "'delivered'", "now()").await;
        add(b, (100_001, 100_005), "'pending'", "now() - interval '1 second'").await;
        add(c, (200_001, 200_100), "'pending'", "now() + interval '1 hour'").await;

        let explain = format!("EXPLAIN {CLAIM_SQL}");
        let plan = plan(
            &db.pool,
            sqlx::query_scalar(&explain)
                .bind(Uuid::new_v4())
                .bind(64_i64)
                .bind(vec![a])
                .bind(90.0_f64)
                .bind(Vec::<Uuid>::new())
                .bind(Vec::<i32>::new())
                .bind(16_i32),
        )
        .await;
        let (_, due) = plan
            .split_once("CTE due")
            .unwrap_or_else(|| panic!("no due CTE:\n{plan}"));
        let (scheduled, _) = plan.split_once("CTE due").unwrap();
        assert!(
            scheduled.contains("deliveries_scheduled") && due.contains("deliveries_scheduled"),
            "the claim does not probe targets through deliveries_scheduled:\n{plan}"
        );
        assert!(
            !due.contains("deliveries_due"),
            "the claim reads the due rows in time order:\n{plan}"
        );

        let owner = Uuid::new_v4();
        let ttl = Duration::from_secs(90);
        let claimed = claim(&db.pool, owner, 64, &[a], &[], 16, ttl).await.unwrap();
        assert_eq!(claimed.len(), 5, "only B's, A being at its cap: {claimed:?}");
        assert!(claimed.iter().all(|c| c.target_id == b));
        let claimed = claim(&db.pool, owner, 64, &[], &[(a, 3)], 16, ttl).await.unwrap();
        assert_eq!(claimed.len(), 3, "A's room: {claimed:?}");
        assert!(claimed.iter().all(|c| c.target_id == a));
        let positions: Vec<i64> = claimed.iter().map(|c| c.position.position).collect();
        assert_eq!(positions.len(), 3);
        db.drop_db().await.unwrap();
    }

    #[tokio::test]
    async fn ending_deliveries_reads_only_the_targets_calls_in_flight_without_statistics() {
        // Never analysed: a target with 20,000 open deliveries, 16 of them in flight. Ending a
        // batch of them must not read the target's other open rows (it did, through the open
        // rows' index, on every batch: the dispatch rate fell as the backlog grew).
        let db = cairn_testkit::TestDb::new(2).await.unwrap();
        let (instance, target) = (Uuid::new_v4(), Uuid::new_v4());
        let in_flight_first = "CASE WHEN n <= 16 THEN 'delivering' ELSE 'pending' END";
        add_deliveries(&db.pool, instance, target, (1, 20_000), in_flight_first, "now()").await;
        let events: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM actions.deliveries WHERE state = 'delivering'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let statuses = vec![200_i32; events.len()];
        let explain = format!("EXPLAIN {FINISH_DELIVERED_SQL}");
        let plan = plan(
            &db.pool,
            sqlx::query_scalar(&explain)
                .bind(target)
                .bind(Uuid::new_v4())
                .bind(&events)
                .bind(&statuses),
        )
        .await;
        assert!(
            plan.contains("deliveries_in_flight") || plan.contains("deliveries_pkey"),
            "ending deliveries does not look them up by key among the calls in flight:\n{plan}"
        );
        assert!(
            !plan.contains("deliveries_open_aggregate") && !plan.contains("Seq Scan on deliveries"),
            "ending deliveries reads the target's open rows:\n{plan}"
        );
        db.drop_db().await.unwrap();
    }
}
