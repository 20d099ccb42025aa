//! The intake: the `notifications` projection, which turns every `user.human.email.code.added`
//! event into one row of `notification.deliveries`.
//!
//! Running the intake as a projection gives it everything the framework proves for read models
//! (DESIGN.md guarantees 5 and 6): its own position in `projections.projection_states`, written in
//! the same transaction as the rows; catch-up from PostgreSQL on start, on a gap and periodically
//! (JetStream is only the doorbell); one writer per (projection, instance) under a lease, however
//! many notifier replicas run. The row is keyed by the event id and inserted with
//! `ON CONFLICT DO NOTHING`, so even a replay (a rebuild from zero) cannot make a second delivery.
//! Sending is the sender's job ([`crate::sender`]); the intake does no I/O beyond its insert.

use cairn_domain::user::{EmailCodeAdded, UserErased};
use cairn_domain::{EventPayload, EventType, InstanceId, StoredEvent, personal};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The projection's name in `projections.projection_states` and `projection_locks`.
pub const PROJECTION_NAME: &str = "notifications";

/// The Message-ID of every copy of the email for `event_id`: stable across attempts, senders and
/// restarts, so a receiving system can recognise a duplicate.
pub fn message_id(event_id: uuid::Uuid) -> String {
    format!("<{event_id}@notifier.cairn>")
}

/// The intake projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotificationsProjection;

impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn event_types(&self) -> Vec<EventType> {
        vec![EmailCodeAdded::event_type(), UserErased::event_type()]
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            if event.event_type == UserErased::event_type() {
                // The person's address and codes go with its data key; what was sent stays sent.
                sqlx::query("DELETE FROM notification.deliveries WHERE instance_id = $1 AND user_id = $2")
                    .bind(event.instance_id.as_uuid())
                    .bind(event.aggregate_id.as_uuid())
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            if event.event_type != EmailCodeAdded::event_type() || personal::is_erased(&event.payload) {
                // An erased user's code is never mailed (and a rebuild never records it).
                return Ok(());
            }
            let added: EmailCodeAdded = serde_json::from_value(event.payload.clone())
                .map_err(|e| ReduceError::Rejected(format!("malformed {}: {e}", event.event_type)))?;
            // A code returned to the caller is not mailed: the row records that it was skipped.
            let (status, code, error) = if added.return_code {
                ("skipped", None, Some("code returned to the caller; no email"))
            } else {
                ("pending", Some(added.code), None)
            };
            sqlx::query(
                "INSERT INTO notification.deliveries \
                   (event_id, instance_id, user_id, org_id, email, code, url_template, expires_at, \
                    event_position, event_offset, event_created_at, status, last_error, message_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event.id.as_uuid())
            .bind(event.instance_id.as_uuid())
            .bind(event.aggregate_id.as_uuid())
            .bind(event.resource_owner.as_uuid())
            .bind(added.email.as_str())
            .bind(code)
            .bind(added.url_template)
            .bind(added.expires_at)
            .bind(event.position.position)
            .bind(event.position.offset)
            .bind(event.created_at)
            .bind(status)
            .bind(error)
            .bind(message_id(event.id.as_uuid()))
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    /// Deliveries are never deleted: a rebuild replays the events and finds every row present,
    /// so nothing is sent twice.
    fn reset<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        _instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }

    /// The removed instance's delivery records (addresses, codes' hashes, message ids) go.
    fn remove_instance<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM notification.deliveries WHERE instance_id = $1")
                .bind(instance.as_uuid())
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    /// None: delivery rows change after intake (status, attempts), so they are not a pure function
    /// of the events and are left out of rebuild comparisons.
    fn tables(&self) -> Vec<&'static str> {
        Vec::new()
    }
}
