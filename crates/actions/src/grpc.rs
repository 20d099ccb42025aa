//! `cairn.action.v1.ActionService`: targets, executions and the delivery log. Callers present the
//! same bearer tokens as for command-api and need the instance administrator's permission;
//! everything is scoped to the token's instance, so another tenant's target is `NOT_FOUND`.
//! Writes answer with their event's position; reads with `min_position` wait until the `actions`
//! projection has applied it.

use crate::commands::{self, domain_error};
use crate::deliveries::{self, Delivery, ListFilter};
use crate::intake::PROJECTION_NAME;
use cairn_auth::{Authenticator, Caller, Permission};
use cairn_domain::action::{Condition, Executions, Target, TargetKind, TargetSettings};
use cairn_domain::{AggregateId, Clock, Position, StoredEvent};
use cairn_error::{Code, Error, Violation};
use cairn_eventstore::{EventFilter, EventStore, PgEventStore};
use cairn_projection::wait::PositionWaiter;
use cairn_proto::action::v1 as pb;
use cairn_proto::time::{from_timestamp, timestamp};
use cairn_webhooks::guard::{Endpoint, Guard};
use cairn_webhooks::secret::SigningSecret;
use pb::action_service_server::ActionService;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// How long a read waits for `min_position`.
const WAIT: Duration = Duration::from_secs(10);

/// The longest grace period of a rotated secret.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The service.
#[derive(Clone)]
pub struct Actions {
    pool: PgPool,
    store: PgEventStore,
    auth: Authenticator,
    keys: cairn_secrets::Keyring,
    guard: Guard,
    waiter: PositionWaiter,
    clock: Arc<dyn Clock>,
}

impl Actions {
    /// Over `pool`; secrets sealed with `keys`, endpoints checked by `guard`.
    pub fn new(
        pool: PgPool,
        keys: cairn_secrets::Keyring,
        guard: Guard,
        waiter: PositionWaiter,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            auth: Authenticator::new(pool.clone()),
            store: PgEventStore::new(pool.clone()),
            pool,
            keys,
            guard,
            waiter,
            clock,
        }
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.auth.authenticate(header, self.clock.now()).await?;
        caller.authorize(Permission::AdministerInstance)?;
        Ok(caller)
    }

    async fn wait(&self, caller: &Caller, min_position: &str) -> Result<(), Error> {
        if min_position.is_empty() {
            return Ok(());
        }
        let position: Position = min_position
            .parse()
            .map_err(|_| Error::invalid_field("min_position", "must be a position such as 1234.0"))?;
        self.waiter
            .wait_for_position(&[PROJECTION_NAME], caller.instance_id, position, WAIT)
            .await
            .map_err(|e| Error::new(Code::DeadlineExceeded, e.to_string()))
    }

    /// Validated settings, the endpoint checked against the guard (every address it resolves to).
    async fn settings(&self, settings: Option<pb::TargetSettings>) -> Result<TargetSettings, Error> {
        let s = settings.ok_or_else(|| Error::invalid_field("settings", "is required"))?;
        let kind = match pb::TargetKind::try_from(s.kind).unwrap_or_default() {
            pb::TargetKind::Webhook | pb::TargetKind::Unspecified => TargetKind::Webhook,
            pb::TargetKind::Call => TargetKind::Call,
            pb::TargetKind::Async => TargetKind::Async,
        };
        let settings = TargetSettings {
            name: s.name,
            endpoint: s.endpoint,
            kind,
            timeout_ms: if s.timeout_ms == 0 { 10_000 } else { s.timeout_ms },
            interrupt_on_error: s.interrupt_on_error,
            strict_order: s.strict_order,
        };
        let mut violations = Vec::new();
        if let Err(cairn_domain::DomainError::Invalid(found)) = settings.validate() {
            violations.extend(found.into_iter().map(|v| Violation {
                field: format!(
                    "settings.{}",
                    if v.field == "timeout" {
                        "timeout_ms"
                    } else {
                        &v.field
                    }
                ),
                description: v.description,
            }));
        }
        let endpoint_error = match Endpoint::parse(&settings.endpoint) {
            Ok(endpoint) => self.guard.resolve(&endpoint).await.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(description) = endpoint_error {
            violations.push(Violation {
                field: "settings.endpoint".into(),
                description,
            });
        }
        if violations.is_empty() {
            Ok(settings)
        } else {
            Err(Error::invalid(violations))
        }
    }

    fn seal(&self, secret: &SigningSecret, instance: Uuid, target: Uuid) -> Result<serde_json::Value, Error> {
        let sealed = secret
            .seal(&self.keys, &instance.into_bytes(), &target.into_bytes())
            .map_err(Error::internal)?;
        serde_json::to_value(sealed).map_err(Error::internal)
    }

    async fn target_command(
        &self,
        caller: &Caller,
        id: &str,
        decide: impl Fn(&Target) -> Result<cairn_domain::Decision, Error>,
    ) -> Result<pb::TargetResponse, Error> {
        let id = parse_id("id", id)?;
        let (state, events) = commands::execute::<Target>(
            &self.store,
            caller.instance_id,
            AggregateId::from_uuid(id),
            &caller.creator(),
            decide,
        )
        .await?;
        Ok(pb::TargetResponse {
            id: id.to_string(),
            position: written_position(&events, &state),
        })
    }

    async fn target_row(&self, instance: Uuid, id: Uuid) -> Result<Option<pb::Target>, Error> {
        let row = sqlx::query(&format!("{TARGET_SELECT} WHERE t.instance_id = $1 AND t.id = $2"))
            .bind(instance)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::unavailable)?;
        row.as_ref()
            .map(target_from_row)
            .transpose()
            .map_err(Error::unavailable)
    }
}

const TARGET_SELECT: &str = "SELECT t.id, t.name, t.endpoint, t.kind, t.timeout_ms, t.interrupt_on_error, \
       t.strict_order, t.state, t.disabled_reason, h.failing_since, h.last_success_at, h.last_failure_at, \
       h.last_error, \
       (SELECT count(*) FROM actions.deliveries d WHERE d.target_id = t.id AND d.state IN ('pending', 'delivering')), \
       (SELECT count(*) FROM actions.deliveries d WHERE d.target_id = t.id AND d.state = 'failed'), \
       CASE WHEN t.previous_expires_at > clock_timestamp() THEN t.previous_expires_at END, t.created_at, t.changed_at \
     FROM actions.targets t LEFT JOIN actions.target_health h ON h.instance_id = t.instance_id AND h.target_id = t.id";

fn target_from_row(row: &sqlx::postgres::PgRow) -> Result<pb::Target, sqlx::Error> {
    let id: Uuid = row.try_get(0)?;
    let kind: String = row.try_get(3)?;
    let timeout_ms: i32 = row.try_get(4)?;
    let state: String = row.try_get(7)?;
    let ts = |i: usize| -> Result<Option<prost_types::Timestamp>, sqlx::Error> {
        Ok(row
            .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?
            .map(timestamp))
    };
    Ok(pb::Target {
        id: id.to_string(),
        settings: Some(pb::TargetSettings {
            name: row.try_get(1)?,
            endpoint: row.try_get(2)?,
            kind: match kind.as_str() {
                "call" => pb::TargetKind::Call,
                "async" => pb::TargetKind::Async,
                _ => pb::TargetKind::Webhook,
            } as i32,
            timeout_ms: u32::try_from(timeout_ms).unwrap_or(0),
            interrupt_on_error: row.try_get(5)?,
            strict_order: row.try_get(6)?,
        }),
        state: if state == "active" {
            pb::TargetState::Active
        } else {
            pb::TargetState::Disabled
        } as i32,
        disabled_reason: row.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
        failing_since: ts(9)?,
        last_success_at: ts(10)?,
        last_failure_at: ts(11)?,
        last_error: row.try_get::<Option<String>, _>(12)?.unwrap_or_default(),
        open_deliveries: row.try_get(13)?,
        failed_deliveries: row.try_get(14)?,
        previous_secret_expires_at: ts(15)?,
        created_at: ts(16)?,
        changed_at: ts(17)?,
    })
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid_field(field, "must be a UUID"))
}

fn parse_position(field: &str, value: &str) -> Result<Position, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid_field(field, "must be a position such as 1234.0"))
}

/// The position of the last written event, or (nothing changed) empty.
fn written_position<A>(events: &[StoredEvent], _state: &A) -> String {
    events.last().map(|e| e.position.to_string()).unwrap_or_default()
}

fn state_to_pb(state: &str) -> pb::DeliveryState {
    match state {
        "pending" => pb::DeliveryState::Pending,
        "delivering" => pb::DeliveryState::Delivering,
        "delivered" => pb::DeliveryState::Delivered,
        "failed" => pb::DeliveryState::Failed,
        _ => pb::DeliveryState::Unspecified,
    }
}

fn state_from_pb(state: i32) -> Option<&'static str> {
    match pb::DeliveryState::try_from(state).unwrap_or_default() {
        pb::DeliveryState::Pending => Some("pending"),
        pb::DeliveryState::Delivering => Some("delivering"),
        pb::DeliveryState::Delivered => Some("delivered"),
        pb::DeliveryState::Failed => Some("failed"),
        pb::DeliveryState::Unspecified => None,
    }
}

fn delivery_to_pb(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        target_id: d.target_id.to_string(),
        event_id: d.event_id.to_string(),
        event_type: d.event_type,
        aggregate_type: d.aggregate_type,
        aggregate_id: d.aggregate_id.to_string(),
        sequence: d.sequence,
        position: d.position.to_string(),
        state: state_to_pb(&d.state) as i32,
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at.map(timestamp),
        last_status: d.last_status.unwrap_or(0),
        last_error: d.last_error.unwrap_or_default(),
        created_at: Some(timestamp(d.created_at)),
        delivered_at: d.delivered_at.map(timestamp),
    }
}

fn condition(value: &str) -> Result<Condition, Error> {
    Condition::parse(value).map_err(|e| match domain_error(e) {
        error if error.code == Code::InvalidArgument => Error::invalid_field(
            "condition",
            "must be event:*, event:<group>.*, event:<type>, request:*, request:<service> or request:/<service>/<method>",
        ),
        error => error,
    })
}

#[tonic::async_trait]
impl ActionService for Actions {
    async fn create_target(
        &self,
        request: Request<pb::CreateTargetRequest>,
    ) -> Result<Response<pb::CreateTargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let settings = self.settings(request.into_inner().settings).await?;
        let id = Uuid::now_v7();
        let secret = SigningSecret::generate();
        let sealed = self.seal(&secret, caller.instance_id.as_uuid(), id)?;
        let (_, events) = commands::execute::<Target>(
            &self.store,
            caller.instance_id,
            AggregateId::from_uuid(id),
            &caller.creator(),
            |target| target.add(settings.clone(), sealed.clone()).map_err(domain_error),
        )
        .await?;
        tracing::info!(target_id = %id, instance_id = %caller.instance_id, "target created");
        Ok(Response::new(pb::CreateTargetResponse {
            id: id.to_string(),
            signing_secret: secret.reveal().to_string(),
            position: events.last().map(|e| e.position.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_target(
        &self,
        request: Request<pb::UpdateTargetRequest>,
    ) -> Result<Response<pb::TargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let settings = self.settings(req.settings).await?;
        let answer = self
            .target_command(&caller, &req.id, |t| {
                t.change(settings.clone()).map_err(domain_error)
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn delete_target(
        &self,
        request: Request<pb::TargetIdRequest>,
    ) -> Result<Response<pb::TargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let answer = self
            .target_command(&caller, &id, |t| t.remove().map_err(domain_error))
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_target(
        &self,
        request: Request<pb::GetTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        self.wait(&caller, &req.min_position).await?;
        let target = self
            .target_row(caller.instance_id.as_uuid(), id)
            .await?
            .ok_or_else(|| Error::not_found("target"))?;
        Ok(Response::new(target))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let caller = self.admin(&request).await?;
        self.wait(&caller, &request.into_inner().min_position).await?;
        let rows = sqlx::query(&format!(
            "{TARGET_SELECT} WHERE t.instance_id = $1 ORDER BY lower(t.name)"
        ))
        .bind(caller.instance_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::unavailable)?;
        let targets = rows
            .iter()
            .map(target_from_row)
            .collect::<Result<_, _>>()
            .map_err(Error::unavailable)?;
        Ok(Response::new(pb::ListTargetsResponse { targets }))
    }

    async fn rotate_target_secret(
        &self,
        request: Request<pb::RotateTargetSecretRequest>,
    ) -> Result<Response<pb::CreateTargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let grace = if req.grace_seconds == 0 {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(u64::from(req.grace_seconds))
        };
        if grace > MAX_GRACE {
            return Err(Error::invalid_field("grace_seconds", "must be at most 30 days (2592000)").into());
        }
        let secret = SigningSecret::generate();
        let sealed = self.seal(&secret, caller.instance_id.as_uuid(), id)?;
        let expires = self.clock.now() + chrono::Duration::from_std(grace).map_err(Error::internal)?;
        let answer = self
            .target_command(&caller, &req.id, |t| {
                t.rotate_secret(sealed.clone(), expires).map_err(domain_error)
            })
            .await?;
        tracing::info!(target_id = %id, instance_id = %caller.instance_id, "target secret rotated");
        Ok(Response::new(pb::CreateTargetResponse {
            id: answer.id,
            signing_secret: secret.reveal().to_string(),
            position: answer.position,
        }))
    }

    async fn disable_target(
        &self,
        request: Request<pb::TargetIdRequest>,
    ) -> Result<Response<pb::TargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let reason = format!("disabled by {}", caller.creator());
        let answer = self
            .target_command(&caller, &id, |t| t.disable(&reason).map_err(domain_error))
            .await?;
        Ok(Response::new(answer))
    }

    async fn enable_target(
        &self,
        request: Request<pb::TargetIdRequest>,
    ) -> Result<Response<pb::TargetResponse>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let answer = self
            .target_command(&caller, &id, |t| t.enable().map_err(domain_error))
            .await?;
        Ok(Response::new(answer))
    }

    async fn set_execution(
        &self,
        request: Request<pb::SetExecutionRequest>,
    ) -> Result<Response<pb::ExecutionResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let condition = condition(&req.condition)?;
        let mut targets = Vec::new();
        for (i, id) in req.target_ids.iter().enumerate() {
            let field = format!("target_ids[{i}]");
            let uuid = parse_id(&field, id)?;
            let target: Target =
                commands::load(&self.store, caller.instance_id, AggregateId::from_uuid(uuid)).await?;
            if target.settings().is_none() {
                return Err(Error::invalid_field(field, "no such target").into());
            }
            targets.push(AggregateId::from_uuid(uuid));
        }
        let (state, events) = commands::execute::<Executions>(
            &self.store,
            caller.instance_id,
            AggregateId::from_uuid(caller.instance_id.as_uuid()),
            &caller.creator(),
            |executions| executions.set(&condition, targets.clone()).map_err(domain_error),
        )
        .await?;
        Ok(Response::new(pb::ExecutionResponse {
            position: written_position(&events, &state),
        }))
    }

    async fn remove_execution(
        &self,
        request: Request<pb::RemoveExecutionRequest>,
    ) -> Result<Response<pb::ExecutionResponse>, Status> {
        let caller = self.admin(&request).await?;
        let condition = condition(&request.into_inner().condition)?;
        let (state, events) = commands::execute::<Executions>(
            &self.store,
            caller.instance_id,
            AggregateId::from_uuid(caller.instance_id.as_uuid()),
            &caller.creator(),
            |executions| {
                executions.remove(&condition).map_err(|e| match e {
                    cairn_domain::DomainError::NotFound => Error::not_found("execution"),
                    other => domain_error(other),
                })
            },
        )
        .await?;
        Ok(Response::new(pb::ExecutionResponse {
            position: written_position(&events, &state),
        }))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let caller = self.admin(&request).await?;
        self.wait(&caller, &request.into_inner().min_position).await?;
        let rows: Vec<(String, Vec<Uuid>)> = sqlx::query_as(
            "SELECT condition, targets FROM actions.executions WHERE instance_id = $1 ORDER BY condition",
        )
        .bind(caller.instance_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::unavailable)?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: rows
                .into_iter()
                .map(|(condition, targets)| pb::Execution {
                    condition,
                    target_ids: targets.iter().map(Uuid::to_string).collect(),
                })
                .collect(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let filter = ListFilter {
            target_id: non_empty(&req.target_id)
                .map(|v| parse_id("target_id", v))
                .transpose()?,
            event_id: non_empty(&req.event_id)
                .map(|v| parse_id("event_id", v))
                .transpose()?,
            state: state_from_pb(req.state),
            since: req.since.as_ref().and_then(from_timestamp),
            until: req.until.as_ref().and_then(from_timestamp),
            limit: if req.limit == 0 {
                100
            } else {
                i64::from(req.limit.min(1000))
            },
        };
        let rows = deliveries::list(&self.pool, caller.instance_id.as_uuid(), &filter)
            .await
            .map_err(Error::unavailable)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery_to_pb).collect(),
        }))
    }

    async fn list_attempts(
        &self,
        request: Request<pb::ListAttemptsRequest>,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let target = parse_id("target_id", &req.target_id)?;
        let event = parse_id("event_id", &req.event_id)?;
        let rows = deliveries::attempts(&self.pool, caller.instance_id.as_uuid(), target, event)
            .await
            .map_err(Error::unavailable)?;
        Ok(Response::new(pb::ListAttemptsResponse {
            attempts: rows
                .into_iter()
                .map(|a| pb::Attempt {
                    attempt: a.attempt,
                    started_at: Some(timestamp(a.started_at)),
                    status: a.status.unwrap_or(0),
                    latency_ms: a.latency_ms,
                    response: a.response.unwrap_or_default(),
                    error: a.error.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let instance = caller.instance_id.as_uuid();
        let target = parse_id("target_id", &req.target_id)?;
        let event = parse_id("event_id", &req.event_id)?;
        match deliveries::retry(&self.pool, instance, target, event)
            .await
            .map_err(Error::unavailable)?
        {
            None => return Err(Error::not_found("delivery").into()),
            Some(false) => {
                return Err(Error::new(
                    Code::FailedPrecondition,
                    "the delivery is being attempted right now; retry when the attempt is over",
                )
                .into());
            }
            Some(true) => {}
        }
        let delivery = deliveries::get(&self.pool, instance, target, event)
            .await
            .map_err(Error::unavailable)?
            .ok_or_else(|| Error::not_found("delivery"))?;
        Ok(Response::new(delivery_to_pb(delivery)))
    }

    async fn replay_deliveries(
        &self,
        request: Request<pb::ReplayDeliveriesRequest>,
    ) -> Result<Response<pb::ReplayDeliveriesResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let target = parse_id("target_id", &req.target_id)?;
        let from = parse_position("from_position", &req.from_position)?;
        let to = parse_position("to_position", &req.to_position)?;
        if to < from {
            return Err(Error::invalid_field("to_position", "must not be before from_position").into());
        }
        self.target_row(caller.instance_id.as_uuid(), target)
            .await?
            .ok_or_else(|| Error::not_found("target"))?;
        // The event types whose most specific execution calls the target now.
        let executions: Vec<(String, Vec<Uuid>)> =
            sqlx::query_as("SELECT condition, targets FROM actions.executions WHERE instance_id = $1")
                .bind(caller.instance_id.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(Error::unavailable)?;
        let conditions: Vec<(Condition, Vec<Uuid>)> = executions
            .into_iter()
            .filter_map(|(c, t)| Condition::parse(&c).ok().map(|c| (c, t)))
            .filter(|(c, _)| !c.is_request())
            .collect();
        let mut after = Position {
            position: from.position,
            offset: from.offset - 1,
        };
        if from.offset == 0 {
            after = Position {
                position: from.position - 1,
                offset: i32::MAX,
            };
        }
        let mut total = 0_u64;
        loop {
            let events = self
                .store
                .filter(&EventFilter {
                    instance_id: Some(caller.instance_id),
                    after,
                    up_to: Some(to),
                    limit: 1000,
                    ..EventFilter::default()
                })
                .await
                .map_err(commands::store_error)?;
            let Some(last) = events.last() else { break };
            after = last.position;
            let matched: Vec<StoredEvent> = events
                .into_iter()
                .filter(|e| {
                    cairn_domain::action::most_specific_event(
                        conditions.iter().map(|(c, t)| (c, t)),
                        e.event_type.as_str(),
                    )
                    .is_some_and(|targets| targets.contains(&target))
                })
                .collect();
            total += deliveries::replay(&self.pool, target, &matched)
                .await
                .map_err(Error::unavailable)?;
        }
        tracing::info!(target_id = %target, instance_id = %caller.instance_id, %from, %to, deliveries = total, "deliveries replayed");
        Ok(Response::new(pb::ReplayDeliveriesResponse {
            deliveries: i64::try_from(total).unwrap_or(i64::MAX),
        }))
    }
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}
