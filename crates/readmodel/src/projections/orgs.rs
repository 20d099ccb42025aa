//! `projections.instances`, `projections.orgs` and `projections.org_domains`.

use super::{rejected, types};
use cairn_domain::{InstanceEvent, InstanceId, OrgEvent, StoredEvent};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The instances read model.
pub struct InstancesProjection;

impl Projection for InstancesProjection {
    fn name(&self) -> &'static str {
        "instances"
    }

    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        types(InstanceEvent::EVENT_TYPES)
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            let instance = event.instance_id.as_uuid();
            match InstanceEvent::decode(event).map_err(rejected)? {
                InstanceEvent::Added(e) => {
                    sqlx::query(
                        "INSERT INTO projections.instances (instance_id, name, default_org_id, created_at, changed_at, sequence) \
                         VALUES ($1, $2, $3, $4, $4, $5)",
                    )
                    .bind(instance)
                    .bind(e.name.to_string())
                    .bind(e.default_org_id.map(|o| o.as_uuid()))
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                InstanceEvent::Changed(e) => {
                    sqlx::query(
                        "UPDATE projections.instances SET name = coalesce($2, name), \
                           default_org_id = coalesce($3, default_org_id), changed_at = $4, sequence = $5 \
                         WHERE instance_id = $1",
                    )
                    .bind(instance)
                    .bind(e.name.map(|n| n.to_string()))
                    .bind(e.default_org_id.map(|o| o.as_uuid()))
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                InstanceEvent::Removed(_) => {
                    sqlx::query("DELETE FROM projections.instances WHERE instance_id = $1")
                        .bind(instance)
                        .execute(&mut *conn)
                        .await?;
                }
                // The registry (`api.instances`) holds state and domains; this model does not.
                InstanceEvent::Deactivated(_)
                | InstanceEvent::Reactivated(_)
                | InstanceEvent::DomainAdded(_)
                | InstanceEvent::DomainRemoved(_) => {}
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
            sqlx::query("DELETE FROM projections.instances WHERE instance_id = $1")
                .bind(instance.as_uuid())
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["projections.instances"]
    }
}

/// The organisations read model, with domains.
pub struct OrgsProjection;

impl Projection for OrgsProjection {
    fn name(&self) -> &'static str {
        "orgs"
    }

    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        types(OrgEvent::EVENT_TYPES)
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            let instance = event.instance_id.as_uuid();
            let org = event.aggregate_id.as_uuid();
            let set_state = |state: &'static str| {
                sqlx::query(
                    "UPDATE projections.orgs SET state = $3, changed_at = $4, sequence = $5 WHERE instance_id = $1 AND id = $2",
                )
                .bind(instance)
                .bind(org)
                .bind(state)
                .bind(event.created_at)
                .bind(event.sequence)
            };
            let touch = || {
                sqlx::query("UPDATE projections.orgs SET changed_at = $3, sequence = $4 WHERE instance_id = $1 AND id = $2")
                    .bind(instance)
                    .bind(org)
                    .bind(event.created_at)
                    .bind(event.sequence)
            };
            match OrgEvent::decode(event).map_err(rejected)? {
                OrgEvent::Added(e) => {
                    sqlx::query(
                        "INSERT INTO projections.orgs (instance_id, id, name, state, created_at, changed_at, sequence) \
                         VALUES ($1, $2, $3, 'active', $4, $4, $5)",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.name.to_string())
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                OrgEvent::Changed(e) => {
                    sqlx::query(
                        "UPDATE projections.orgs SET name = $3, changed_at = $4, sequence = $5 WHERE instance_id = $1 AND id = $2",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.name.to_string())
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                OrgEvent::Deactivated(_) => {
                    set_state("inactive").execute(&mut *conn).await?;
                }
                OrgEvent::Reactivated(_) => {
                    set_state("active").execute(&mut *conn).await?;
                }
                OrgEvent::Removed(_) => {
                    for sql in [
                        "DELETE FROM projections.org_domains WHERE instance_id = $1 AND org_id = $2",
                        "DELETE FROM projections.orgs WHERE instance_id = $1 AND id = $2",
                    ] {
                        sqlx::query(sql)
                            .bind(instance)
                            .bind(org)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                OrgEvent::DomainAdded(e) => {
                    sqlx::query(
                        "INSERT INTO projections.org_domains (instance_id, org_id, domain) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.domain.to_string())
                    .execute(&mut *conn)
                    .await?;
                    touch().execute(&mut *conn).await?;
                }
                OrgEvent::DomainVerified(e) => {
                    sqlx::query(
                        "UPDATE projections.org_domains SET verified = true WHERE instance_id = $1 AND org_id = $2 AND domain = $3",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.domain.to_string())
                    .execute(&mut *conn)
                    .await?;
                    touch().execute(&mut *conn).await?;
                }
                OrgEvent::DomainPrimarySet(e) => {
                    sqlx::query(
                        "UPDATE projections.org_domains SET is_primary = (domain = $3) WHERE instance_id = $1 AND org_id = $2",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.domain.to_string())
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "UPDATE projections.orgs SET primary_domain = $3, changed_at = $4, sequence = $5 \
                         WHERE instance_id = $1 AND id = $2",
                    )
                    .bind(instance)
                    .bind(org)
                    .bind(e.domain.to_string())
                    .bind(event.created_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                OrgEvent::DomainRemoved(e) => {
                    sqlx::query("DELETE FROM projections.org_domains WHERE instance_id = $1 AND org_id = $2 AND domain = $3")
                        .bind(instance)
                        .bind(org)
                        .bind(e.domain.to_string())
                        .execute(&mut *conn)
                        .await?;
                    touch().execute(&mut *conn).await?;
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
            for table in ["projections.org_domains", "projections.orgs"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                    .bind(instance.as_uuid())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["projections.orgs", "projections.org_domains"]
    }
}
