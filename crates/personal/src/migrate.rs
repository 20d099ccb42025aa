//! The one-off migration of data written before personal data was sealed (`cairn personal-data
//! seal`): user events with plain personal fields are sealed in place, plain user-name claims are
//! replaced by their blind index, and user snapshots of the old schema are dropped. Batches of its
//! own transactions, each idempotent, so it resumes where a stopped run left off.
//!
//! This is the one place where stored events are rewritten: their ids, types, sequences, positions
//! and readable fields stay as they were, and readers open the rewritten payload to exactly the
//! payload it replaced. Copies already published to the stream before the migration stay plain
//! until the stream's retention drops them (docs/ARCHITECTURE.md, "Personal data").

use crate::{Db, PersonalError, Vault, event_aad, rewrite_event, seal_fields};
use cairn_domain::personal::{self, ERASED, READABLE_USER_FIELDS, SEALED};
use cairn_domain::{AggregateId, InstanceId, UNIQUE_USERNAME};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// What [`seal_existing`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// User events whose personal fields it sealed.
    pub events_sealed: u64,
    /// Plain events of users erased before the migration, rewritten to their erased form.
    pub events_erased: u64,
    /// User-name claims replaced by their blind index.
    pub claims_blinded: u64,
    /// Plain claims dropped because their blind index was already claimed (the same name, claimed
    /// again after the upgrade).
    pub claims_conflicting: u64,
    /// Old user snapshots dropped.
    pub snapshots_dropped: u64,
}

/// Seals every user event still holding plain personal fields, `batch` events per transaction,
/// then blinds plain user-name claims and drops unsealed user snapshots. Run it once after the
/// upgrade, with command-api stopped (a user renamed meanwhile would keep a plain claim of its old
/// name); running it again finds nothing left to do.
pub async fn seal_existing(pool: &PgPool, vault: &Vault, batch: i64) -> Result<SealReport, PersonalError> {
    let mut report = SealReport::default();
    let readable: Vec<&str> = READABLE_USER_FIELDS.to_vec();
    loop {
        let mut tx = cairn_eventstore::begin(pool).await?;
        let rows: Vec<(Uuid, Uuid, i64, Uuid, Value)> = sqlx::query_as(
            "SELECT instance_id, aggregate_id, sequence, id, payload FROM eventstore.events \
              WHERE aggregate_type = $1 AND NOT payload ? $2 AND NOT payload ? $3 \
                AND EXISTS (SELECT 1 FROM jsonb_object_keys(payload) AS k WHERE k <> ALL($4)) \
              LIMIT $5 FOR UPDATE",
        )
        .bind(personal::PERSONAL_AGGREGATE)
        .bind(SEALED)
        .bind(ERASED)
        .bind(&readable)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for (instance, user, sequence, id, payload) in rows {
            let instance = InstanceId::from_uuid(instance);
            let user = AggregateId::from_uuid(user);
            let Some((readable, fields)) = personal::split(&payload) else {
                continue;
            };
            let rewritten = match vault
                .subject_key(&mut tx, instance, "user", user.as_uuid())
                .await?
            {
                Some(key) => {
                    report.events_sealed += 1;
                    seal_fields(&key, readable, fields, &event_aad(instance, user, id))?
                }
                None => {
                    // Erased before the migration ran: the values go, the field names stay.
                    report.events_erased += 1;
                    let mut payload = readable;
                    payload.extend(fields);
                    personal::erase_plain(&Value::Object(payload))
                        .ok_or_else(|| PersonalError::Malformed("no personal field to erase".into()))?
                }
            };
            rewrite_event(&mut tx, instance, user, sequence, &rewritten).await?;
        }
        tx.commit().await?;
    }

    loop {
        let mut tx = cairn_eventstore::begin(pool).await?;
        let claims: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT instance_id, unique_value FROM eventstore.unique_constraints \
              WHERE unique_type = $1 AND unique_value NOT LIKE 'b1:%' \
              ORDER BY instance_id, unique_value LIMIT $2 FOR UPDATE",
        )
        .bind(UNIQUE_USERNAME)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if claims.is_empty() {
            break;
        }
        for (instance, value) in claims {
            let blinded = vault
                .blind(
                    &mut Db::Conn(&mut tx),
                    InstanceId::from_uuid(instance),
                    UNIQUE_USERNAME,
                    &value,
                )
                .await?;
            let moved = sqlx::query(
                "UPDATE eventstore.unique_constraints SET unique_value = $4 \
                  WHERE instance_id = $1 AND unique_type = $2 AND unique_value = $3 \
                    AND NOT EXISTS (SELECT 1 FROM eventstore.unique_constraints \
                                     WHERE instance_id = $1 AND unique_type = $2 AND unique_value = $4)",
            )
            .bind(instance)
            .bind(UNIQUE_USERNAME)
            .bind(&value)
            .bind(&blinded)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                // The name was claimed again, blinded, after the upgrade: the plain claim is a
                // duplicate of it and goes.
                sqlx::query(
                    "DELETE FROM eventstore.unique_constraints \
                      WHERE instance_id = $1 AND unique_type = $2 AND unique_value = $3",
                )
                .bind(instance)
                .bind(UNIQUE_USERNAME)
                .bind(&value)
                .execute(&mut *tx)
                .await?;
                report.claims_conflicting += 1;
            } else {
                report.claims_blinded += 1;
            }
        }
        tx.commit().await?;
    }

    report.snapshots_dropped =
        sqlx::query("DELETE FROM eventstore.snapshots WHERE aggregate_type = $1 AND NOT state ? $2")
            .bind(personal::PERSONAL_AGGREGATE)
            .bind(SEALED)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(report)
}
