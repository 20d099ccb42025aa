//! The intake: the `actions` projection. It reads every event of an instance, in position order,
//! under the projection framework's lease (DESIGN.md guarantees 5 and 6), and in the batch's
//! transaction
//!
//! - keeps `actions.targets` and `actions.executions` as the `action.target.*` and
//!   `action.execution.*` events say, and
//! - makes one `actions.deliveries` row per (event, target) for every event that an execution
//!   matches, against the executions as they stood at that event (the same projection applies
//!   both, in order, so a configuration change and the events around it cannot race).
//!
//! A row is keyed by (target, event) and inserted with `ON CONFLICT DO NOTHING`, so a second read
//! of a batch, a crash before commit or a rebuild from zero never makes a second delivery; the
//! position is written in the same transaction, so no event is passed over either. New rows wait
//! (`next_attempt_at = infinity`) unless they are the first open delivery of their aggregate (of
//! their target, for a strict-order target) to an active target; the dispatcher wakes the next
//! one when a delivery ends ([`crate::deliveries::wake_after`]).

use crate::deliveries;
use cairn_domain::action::{Condition, ExecutionEvent, Executions, Target, TargetEvent, most_specific_event};
use cairn_domain::{Aggregate, InstanceId, StoredEvent};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use uuid::Uuid;

/// The projection's name in `projections.projection_states` and `projection_locks`.
pub const PROJECTION_NAME: &str = "actions";

/// The intake projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActionsProjection;

/// The instance's configuration as the batch goes.
struct Config {
    /// Targets that exist (active or disabled).
    targets: HashMap<Uuid, bool>,
    executions: Vec<(Condition, Vec<Uuid>)>,
}

async fn load_config(conn: &mut PgConnection, instance: InstanceId) -> Result<Config, ReduceError> {
    let targets = sqlx::query("SELECT id, state = 'active' FROM actions.targets WHERE instance_id = $1")
        .bind(instance.as_uuid())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut executions = Vec::new();
    for row in sqlx::query("SELECT condition, targets FROM actions.executions WHERE instance_id = $1")
        .bind(instance.as_uuid())
        .fetch_all(&mut *conn)
        .await?
    {
        let condition: String = row.try_get(0)?;
        let condition = Condition::parse(&condition).map_err(|e| ReduceError::Rejected(e.to_string()))?;
        executions.push((condition, row.try_get(1)?));
    }
    Ok(Config { targets, executions })
}

fn rejected(event: &StoredEvent, error: impl std::fmt::Display) -> ReduceError {
    ReduceError::Rejected(format!("{} at {}: {error}", event.event_type, event.position))
}

async fn apply_target(
    conn: &mut PgConnection,
    config: &mut Config,
    event: &StoredEvent,
) -> Result<(), ReduceError> {
    let instance = event.instance_id.as_uuid();
    let id = event.aggregate_id.as_uuid();
    match TargetEvent::decode(event).map_err(|e| rejected(event, e))? {
        TargetEvent::Added(e) => {
            let s = &e.settings;
            sqlx::query(
                "INSERT INTO actions.targets (instance_id, id, name, endpoint, kind, timeout_ms, interrupt_on_error, \
                   strict_order, secret, state, created_at, changed_at, sequence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10, $11) ON CONFLICT DO NOTHING",
            )
            .bind(instance)
            .bind(id)
            .bind(&s.name)
            .bind(&s.endpoint)
            .bind(s.kind.as_str())
            .bind(i32::try_from(s.timeout_ms).unwrap_or(i32::MAX))
            .bind(s.interrupt_on_error)
            .bind(s.strict_order)
            .bind(&e.secret)
            .bind(event.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            config.targets.insert(id, true);
        }
        TargetEvent::Changed(e) => {
            let s = &e.settings;
            sqlx::query(
                "UPDATE actions.targets SET name = $3, endpoint = $4, kind = $5, timeout_ms = $6, \
                   interrupt_on_error = $7, strict_order = $8, changed_at = $9, sequence = $10 \
                 WHERE instance_id = $1 AND id = $2",
            )
            .bind(instance)
            .bind(id)
            .bind(&s.name)
            .bind(&s.endpoint)
            .bind(s.kind.as_str())
            .bind(i32::try_from(s.timeout_ms).unwrap_or(i32::MAX))
            .bind(s.interrupt_on_error)
            .bind(s.strict_order)
            .bind(event.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            // The order rule may have changed: a per-aggregate target has more heads than a
            // strict one.
            deliveries::lock_targets(&mut *conn, &[id]).await?;
            deliveries::wake_heads(&mut *conn, id).await?;
        }
        TargetEvent::SecretRotated(e) => {
            sqlx::query(
                "UPDATE actions.targets SET previous_secret = secret, secret = $3, previous_expires_at = $4, \
                   changed_at = $5, sequence = $6 WHERE instance_id = $1 AND id = $2",
            )
            .bind(instance)
            .bind(id)
            .bind(&e.secret)
            .bind(e.previous_expires_at)
            .bind(event.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
        }
        TargetEvent::Disabled(e) => {
            sqlx::query(
                "UPDATE actions.targets SET state = 'disabled', disabled_reason = $3, changed_at = $4, sequence = $5 \
                 WHERE instance_id = $1 AND id = $2",
            )
            .bind(instance)
            .bind(id)
            .bind(&e.reason)
            .bind(event.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            // Its deliveries wait, out of the dispatchers' way, until it is enabled.
            deliveries::lock_targets(&mut *conn, &[id]).await?;
            sqlx::query(
                "UPDATE actions.deliveries SET next_attempt_at = 'infinity' WHERE target_id = $1 AND state = 'pending'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            config.targets.insert(id, false);
        }
        TargetEvent::Enabled(_) => {
            sqlx::query(
                "UPDATE actions.targets SET state = 'active', disabled_reason = NULL, changed_at = $3, sequence = $4 \
                 WHERE instance_id = $1 AND id = $2",
            )
            .bind(instance)
            .bind(id)
            .bind(event.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            // A fresh start: the failure period counts from the next failure.
            sqlx::query("DELETE FROM actions.target_health WHERE instance_id = $1 AND target_id = $2")
                .bind(instance)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            deliveries::lock_targets(&mut *conn, &[id]).await?;
            deliveries::wake_heads(&mut *conn, id).await?;
            config.targets.insert(id, true);
        }
        TargetEvent::Removed(_) => {
            sqlx::query("DELETE FROM actions.targets WHERE instance_id = $1 AND id = $2")
                .bind(instance)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            // What was delivered stays in the log; what waited goes with the target.
            sqlx::query(
                "DELETE FROM actions.deliveries WHERE target_id = $1 AND state IN ('pending', 'delivering')",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM actions.target_health WHERE instance_id = $1 AND target_id = $2")
                .bind(instance)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            config.targets.remove(&id);
        }
    }
    Ok(())
}

async fn apply_execution(
    conn: &mut PgConnection,
    config: &mut Config,
    event: &StoredEvent,
) -> Result<(), ReduceError> {
    let instance = event.instance_id.as_uuid();
    match ExecutionEvent::decode(event).map_err(|e| rejected(event, e))? {
        ExecutionEvent::Set(e) => {
            let condition = Condition::parse(&e.condition).map_err(|err| rejected(event, err))?;
            let targets: Vec<Uuid> = e.targets.iter().map(|t| t.as_uuid()).collect();
            sqlx::query(
                "INSERT INTO actions.executions (instance_id, condition, targets, changed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (instance_id, condition) DO UPDATE SET targets = excluded.targets, changed_at = excluded.changed_at",
            )
            .bind(instance)
            .bind(&e.condition)
            .bind(&targets)
            .bind(event.created_at)
            .execute(&mut *conn)
            .await?;
            config.executions.retain(|(c, _)| *c != condition);
            config.executions.push((condition, targets));
        }
        ExecutionEvent::Removed(e) => {
            sqlx::query("DELETE FROM actions.executions WHERE instance_id = $1 AND condition = $2")
                .bind(instance)
                .bind(&e.condition)
                .execute(&mut *conn)
                .await?;
            let condition = Condition::parse(&e.condition).map_err(|err| rejected(event, err))?;
            config.executions.retain(|(c, _)| *c != condition);
        }
    }
    Ok(())
}

async fn apply(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ReduceError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let mut config = load_config(&mut *conn, first.instance_id).await?;
    let mut rows = deliveries::NewDeliveries::default();
    let mut changed = Vec::new();
    for event in events {
        if event.aggregate_type.as_str() == Target::TYPE {
            apply_target(&mut *conn, &mut config, event).await?;
            changed.push(event.instance_id.as_uuid());
        } else if event.aggregate_type.as_str() == Executions::TYPE {
            apply_execution(&mut *conn, &mut config, event).await?;
            changed.push(event.instance_id.as_uuid());
        }
        let matched = most_specific_event(
            config
                .executions
                .iter()
                .filter(|(c, _)| !c.is_request())
                .map(|(c, targets)| (c, targets)),
            event.event_type.as_str(),
        );
        if let Some(targets) = matched {
            for target in targets.iter().filter(|t| config.targets.contains_key(t)) {
                rows.push(*target, event);
            }
        }
    }
    deliveries::insert(&mut *conn, &rows).await?;
    // command-api's request conditions cache these tables: the notification goes out when this
    // transaction commits, so no one reads the change before it is there.
    changed.dedup();
    for instance in changed {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(cairn_webhooks::CONFIG_CHANNEL)
            .bind(instance.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Projection for ActionsProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    /// Every event: any of them may match an execution.
    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        Vec::new()
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(apply(conn, std::slice::from_ref(event)))
    }

    fn reduce_many<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(apply(conn, events))
    }

    /// Drops the configuration tables (rebuilt from the events); deliveries and attempts are
    /// history and stay, and a replay finds every delivery present, so nothing is sent twice.
    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for table in ["actions.targets", "actions.executions"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                    .bind(instance.as_uuid())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }

    /// Everything of a removed instance goes: configuration, health, deliveries, attempts.
    fn remove_instance<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for table in [
                "actions.targets",
                "actions.executions",
                "actions.target_health",
                "actions.deliveries",
                "actions.attempts",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                    .bind(instance.as_uuid())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["actions.targets", "actions.executions"]
    }
}
