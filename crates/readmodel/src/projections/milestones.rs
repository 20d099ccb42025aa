//! `projections.milestones`: the first time an instance reached each milestone (instance created,
//! first organisation, first user, first verified email, first group).

use super::types;
use cairn_domain::{InstanceId, StoredEvent};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The milestones read model.
pub struct MilestonesProjection;

const MILESTONES: &[(&str, &str)] = &[
    ("instance.added", "instance_created"),
    ("org.added", "org_created"),
    ("user.human.added", "user_created"),
    ("user.machine.added", "machine_user_created"),
    ("user.human.email.verified", "email_verified"),
    ("group.added", "group_created"),
];

impl Projection for MilestonesProjection {
    fn name(&self) -> &'static str {
        "milestones"
    }

    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        types(&MILESTONES.iter().map(|(event, _)| *event).collect::<Vec<_>>())
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            let Some((_, milestone)) = MILESTONES.iter().find(|(t, _)| *t == event.event_type.as_str())
            else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO projections.milestones (instance_id, milestone, reached_at, position, position_offset) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(event.instance_id.as_uuid())
            .bind(*milestone)
            .bind(event.created_at)
            .bind(event.position.position)
            .bind(event.position.offset)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM projections.milestones WHERE instance_id = $1")
                .bind(instance.as_uuid())
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["projections.milestones"]
    }
}
