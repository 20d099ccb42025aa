//! `projections.groups` and `projections.group_members`: a row per group and a row per membership,
//! so adding one member to a group of 100,000 touches two rows.

use super::{rejected, types};
use cairn_domain::{GroupEvent, InstanceId, StoredEvent};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The groups read model.
pub struct GroupsProjection;

async fn touch(conn: &mut PgConnection, event: &StoredEvent, member_delta: i64) -> Result<(), ReduceError> {
    sqlx::query(
        "UPDATE projections.groups SET member_count = member_count + $3, changed_at = $4, sequence = $5 \
         WHERE instance_id = $1 AND id = $2",
    )
    .bind(event.instance_id.as_uuid())
    .bind(event.aggregate_id.as_uuid())
    .bind(member_delta)
    .bind(event.created_at)
    .bind(event.sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Projection for GroupsProjection {
    fn name(&self) -> &'static str {
        "groups"
    }

    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        let mut names = GroupEvent::EVENT_TYPES.to_vec();
        names.push("user.removed");
        types(&names)
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            let instance = event.instance_id.as_uuid();
            let group = event.aggregate_id.as_uuid();
            if event.event_type.as_str() == "user.removed" {
                // A removed user is no member of anything, even where no member.removed was written.
                sqlx::query(
                    "WITH gone AS (DELETE FROM projections.group_members WHERE instance_id = $1 AND user_id = $2 \
                                   RETURNING group_id) \
                     UPDATE projections.groups g SET member_count = g.member_count - 1 \
                       FROM gone WHERE g.instance_id = $1 AND g.id = gone.group_id",
                )
                .bind(instance)
                .bind(group)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            match GroupEvent::decode(event).map_err(rejected)? {
                GroupEvent::Added(e) => {
                    sqlx::query(
                        "INSERT INTO projections.groups (instance_id, id, org_id, display_name, external_id, \
                           description, member_count, created_at, changed_at, sequence) \
                         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, $8)",
                    )
                    .bind(instance)
                    .bind(group)
                    .bind(e.org_id.as_uuid())
                    .bind(e.display_name.to_string())
                    .bind(e.external_id)
                    .bind(e.description)
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                GroupEvent::Changed(e) => {
                    sqlx::query(
                        "UPDATE projections.groups SET display_name = coalesce($3, display_name), \
                           external_id = CASE WHEN $4 THEN $5 ELSE external_id END, \
                           description = CASE WHEN $6 THEN $7 ELSE description END, \
                           changed_at = $8, sequence = $9 \
                         WHERE instance_id = $1 AND id = $2",
                    )
                    .bind(instance)
                    .bind(group)
                    .bind(e.display_name.map(|d| d.to_string()))
                    .bind(e.external_id.is_some())
                    .bind(e.external_id.flatten())
                    .bind(e.description.is_some())
                    .bind(e.description.flatten())
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                GroupEvent::MemberAdded(e) => {
                    let added = sqlx::query(
                        "INSERT INTO projections.group_members (instance_id, group_id, user_id, added_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(instance)
                    .bind(group)
                    .bind(e.user_id.as_uuid())
                    .bind(event.created_at)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    touch(conn, event, added as i64).await?;
                }
                GroupEvent::MemberRemoved(e) => {
                    let removed = sqlx::query(
                        "DELETE FROM projections.group_members WHERE instance_id = $1 AND group_id = $2 AND user_id = $3",
                    )
                    .bind(instance)
                    .bind(group)
                    .bind(e.user_id.as_uuid())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    touch(conn, event, -(removed as i64)).await?;
                }
                GroupEvent::Removed(_) => {
                    sqlx::query(
                        "DELETE FROM projections.group_members WHERE instance_id = $1 AND group_id = $2",
                    )
                    .bind(instance)
                    .bind(group)
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query("DELETE FROM projections.groups WHERE instance_id = $1 AND id = $2")
                        .bind(instance)
                        .bind(group)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for table in ["projections.group_members", "projections.groups"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                    .bind(instance.as_uuid())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["projections.groups", "projections.group_members"]
    }
}
