//! `notification.deliveries`: the queue senders claim from and the record of what happened to
//! each verification email. Every statement of the notifier on this table lives here.
//!
//! States: `pending` (due at `next_attempt_at`) → `sending` (claimed by one sender until
//! `claim_expires_at`) → `sent` | `failed` | `skipped`, or back to `pending` after a transient
//! failure. A claim counts as an attempt. A live sender renews its claim while it talks to the
//! SMTP server ([`renew_claim`]); a claim that expires (its sender died or cannot reach the
//! database) makes the row claimable again. How a message can still be sent twice is stated in
//! `docs/ARCHITECTURE.md` ("Guarantee 10").
//!
//! Times are PostgreSQL's (`clock_timestamp()`), so replicas need not agree on the time.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// A delivery a sender has claimed.
#[derive(Clone)]
pub struct Claimed {
    /// The `user.human.email.code.added` event.
    pub event_id: Uuid,
    /// Its instance.
    pub instance_id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// The user's organisation.
    pub org_id: Uuid,
    /// The recipient.
    pub email: String,
    /// The sealed code.
    pub code: Option<serde_json::Value>,
    /// The link template.
    pub url_template: Option<String>,
    /// When the code expires.
    pub expires_at: DateTime<Utc>,
    /// When the event was committed (for the event-to-accept latency).
    pub event_created_at: DateTime<Utc>,
    /// This claim's attempt number (1 for the first).
    pub attempts: i32,
    /// The Message-ID header.
    pub message_id: String,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("event_id", &self.event_id)
            .field("instance_id", &self.instance_id)
            .field("user_id", &self.user_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A delivery as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The event id (the record's key).
    pub event_id: Uuid,
    /// The instance.
    pub instance_id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// The recipient.
    pub email: String,
    /// The message language, once rendered.
    pub language: Option<String>,
    /// `pending`, `sending`, `sent`, `failed` or `skipped`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the next attempt is due (pending rows).
    pub next_attempt_at: DateTime<Utc>,
    /// The last error, or why the row was skipped.
    pub last_error: Option<String>,
    /// The SMTP server's last reply.
    pub smtp_reply: Option<String>,
    /// The Message-ID header.
    pub message_id: String,
    /// When the row was made.
    pub created_at: DateTime<Utc>,
    /// When the SMTP server accepted the message.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Claims up to `limit` due deliveries for `owner`: pending rows whose time has come and rows
/// whose claim expired (those first), oldest due first. `FOR UPDATE SKIP LOCKED` keeps two
/// senders off one row.
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    limit: i64,
    claim_ttl: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH expired AS ( \
           SELECT event_id FROM notification.deliveries \
            WHERE status = 'sending' AND claim_expires_at < clock_timestamp() \
            ORDER BY claim_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         due AS ( \
           SELECT event_id FROM notification.deliveries \
            WHERE status = 'pending' AND next_attempt_at <= clock_timestamp() \
            ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         picked AS (SELECT event_id FROM expired UNION ALL SELECT event_id FROM due LIMIT $2) \
         UPDATE notification.deliveries d \
            SET status = 'sending', claimed_by = $1, attempts = d.attempts + 1, \
                claim_expires_at = clock_timestamp() + make_interval(secs => $3), updated_at = clock_timestamp() \
           FROM picked WHERE d.event_id = picked.event_id \
         RETURNING d.event_id, d.instance_id, d.user_id, d.org_id, d.email, d.code, d.url_template, \
                   d.expires_at, d.event_created_at, d.attempts, d.message_id",
    )
    .bind(owner)
    .bind(limit)
    .bind(claim_ttl.as_secs_f64())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                event_id: row.try_get(0)?,
                instance_id: row.try_get(1)?,
                user_id: row.try_get(2)?,
                org_id: row.try_get(3)?,
                email: row.try_get(4)?,
                code: row.try_get(5)?,
                url_template: row.try_get(6)?,
                expires_at: row.try_get(7)?,
                event_created_at: row.try_get(8)?,
                attempts: row.try_get(9)?,
                message_id: row.try_get(10)?,
            })
        })
        .collect()
}

/// Extends `owner`'s claim to `claim_ttl` from now, if it is still `owner`'s: false when another
/// sender has taken the delivery over (possible only after the claim expired) or it is no longer
/// being sent. A claim that expired but was not taken over is still `owner`'s and is renewed: no
/// one else can be sending it, since taking a claim over rewrites `claimed_by` under the row lock.
pub async fn renew_claim(
    pool: &PgPool,
    event_id: Uuid,
    owner: Uuid,
    claim_ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notification.deliveries \
            SET claim_expires_at = clock_timestamp() + make_interval(secs => $3), updated_at = clock_timestamp() \
          WHERE event_id = $1 AND status = 'sending' AND claimed_by = $2",
    )
    .bind(event_id)
    .bind(owner)
    .bind(claim_ttl.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Records that the SMTP server accepted the message. Recorded whoever holds the claim now (a
/// message that went out is a fact); false when the row was already final.
pub async fn mark_sent(
    pool: &PgPool,
    event_id: Uuid,
    language: &str,
    smtp_reply: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notification.deliveries SET status = 'sent', language = $2, smtp_reply = $3, \
           sent_at = clock_timestamp(), updated_at = clock_timestamp(), code = NULL, \
           claimed_by = NULL, claim_expires_at = NULL, last_error = NULL \
         WHERE event_id = $1 AND status IN ('pending', 'sending')",
    )
    .bind(event_id)
    .bind(language)
    .bind(smtp_reply)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Records a transient failure and when to try again; only while `owner` still holds the claim.
pub async fn mark_retry(
    pool: &PgPool,
    event_id: Uuid,
    owner: Uuid,
    delay: Duration,
    error: &str,
    smtp_reply: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notification.deliveries SET status = 'pending', \
           next_attempt_at = clock_timestamp() + make_interval(secs => $3), last_error = $4, \
           smtp_reply = coalesce($5, smtp_reply), claimed_by = NULL, claim_expires_at = NULL, \
           updated_at = clock_timestamp() \
         WHERE event_id = $1 AND status = 'sending' AND claimed_by = $2",
    )
    .bind(event_id)
    .bind(owner)
    .bind(delay.as_secs_f64())
    .bind(error)
    .bind(smtp_reply)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Records a final outcome other than sent (`failed` or `skipped`) with its reason; only while
/// `owner` still holds the claim. The sealed code is cleared.
pub async fn mark_final(
    pool: &PgPool,
    event_id: Uuid,
    owner: Uuid,
    status: FinalStatus,
    reason: &str,
    smtp_reply: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notification.deliveries SET status = $3, last_error = $4, \
           smtp_reply = coalesce($5, smtp_reply), code = NULL, claimed_by = NULL, \
           claim_expires_at = NULL, updated_at = clock_timestamp() \
         WHERE event_id = $1 AND status = 'sending' AND claimed_by = $2",
    )
    .bind(event_id)
    .bind(owner)
    .bind(status.as_str())
    .bind(reason)
    .bind(smtp_reply)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Gives a claim back untouched (shutdown before sending): due again at once, and the attempt it
/// counted is returned.
pub async fn release(pool: &PgPool, event_id: Uuid, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notification.deliveries SET status = 'pending', attempts = greatest(attempts - 1, 0), \
           claimed_by = NULL, claim_expires_at = NULL, updated_at = clock_timestamp() \
         WHERE event_id = $1 AND status = 'sending' AND claimed_by = $2",
    )
    .bind(event_id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// A final status other than sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    /// Gave up: a permanent SMTP failure or attempts exhausted.
    Failed,
    /// Nothing to send: the code was superseded, verified, expired, or the user is gone.
    Skipped,
}

impl FinalStatus {
    /// `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// How long until the next pending delivery is due (`None`: nothing pending or claimed).
pub async fn next_due_in(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT greatest(0, extract(epoch FROM (min(at) - clock_timestamp())))::float8 FROM ( \
           (SELECT min(next_attempt_at) AS at FROM notification.deliveries WHERE status = 'pending') \
           UNION ALL \
           (SELECT min(claim_expires_at) FROM notification.deliveries WHERE status = 'sending')) t",
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.map(Duration::from_secs_f64))
}

/// Deliveries not yet final (pending or being sent), for the queue-depth gauge.
pub async fn queue_depth(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM notification.deliveries WHERE status = 'pending') + \
                (SELECT count(*) FROM notification.deliveries WHERE status = 'sending')",
    )
    .fetch_one(pool)
    .await
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this user's deliveries.
    pub user_id: Option<Uuid>,
    /// Only deliveries in this status.
    pub status: Option<String>,
    /// Only deliveries made before this time (paging, newest first).
    pub before: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// An instance's deliveries, newest first.
pub async fn list(pool: &PgPool, instance: Uuid, filter: &ListFilter) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, instance_id, user_id, email, language, status, attempts, next_attempt_at, \
                last_error, smtp_reply, message_id, created_at, sent_at \
           FROM notification.deliveries \
          WHERE instance_id = $1 AND ($2::uuid IS NULL OR user_id = $2) \
            AND ($3::text IS NULL OR status = $3) AND ($4::timestamptz IS NULL OR created_at < $4) \
          ORDER BY created_at DESC, event_id DESC LIMIT $5",
    )
    .bind(instance)
    .bind(filter.user_id)
    .bind(filter.status.as_deref())
    .bind(filter.before)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery).collect()
}

/// One delivery of an instance.
pub async fn get(pool: &PgPool, instance: Uuid, event_id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT event_id, instance_id, user_id, email, language, status, attempts, next_attempt_at, \
                last_error, smtp_reply, message_id, created_at, sent_at \
           FROM notification.deliveries WHERE instance_id = $1 AND event_id = $2",
    )
    .bind(instance)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(delivery).transpose()
}

/// Makes a failed delivery due again now, with a fresh attempt budget; only failed rows qualify
/// (a sent message is never sent again, a skipped code is no longer valid). Returns the row as it
/// is right after, or `None` when it did not qualify.
pub async fn retry_failed(
    pool: &PgPool,
    instance: Uuid,
    event_id: Uuid,
) -> Result<Option<Delivery>, sqlx::Error> {
    // The code was cleared when the row failed; the event still holds it.
    let row = sqlx::query(
        "UPDATE notification.deliveries d SET status = 'pending', attempts = 0, \
           next_attempt_at = clock_timestamp(), updated_at = clock_timestamp(), \
           code = (SELECT e.payload -> 'code' FROM eventstore.events e \
                    WHERE e.instance_id = d.instance_id AND e.position = d.event_position \
                      AND e.in_tx_order = d.event_offset AND e.id = d.event_id) \
         WHERE d.instance_id = $1 AND d.event_id = $2 AND d.status = 'failed' \
         RETURNING event_id, instance_id, user_id, email, language, status, attempts, next_attempt_at, \
                   last_error, smtp_reply, message_id, created_at, sent_at",
    )
    .bind(instance)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(delivery).transpose()
}

fn delivery(row: &sqlx::postgres::PgRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        event_id: row.try_get(0)?,
        instance_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        email: row.try_get(3)?,
        language: row.try_get(4)?,
        status: row.try_get(5)?,
        attempts: row.try_get(6)?,
        next_attempt_at: row.try_get(7)?,
        last_error: row.try_get(8)?,
        smtp_reply: row.try_get(9)?,
        message_id: row.try_get(10)?,
        created_at: row.try_get(11)?,
        sent_at: row.try_get(12)?,
    })
}
