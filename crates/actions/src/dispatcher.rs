//! The dispatcher: claims due deliveries, calls their targets and records what came of it.
//!
//! One attempt of a claimed delivery:
//! 1. the event is read from the store (deliveries keep a reference, not a copy) and its personal
//!    fields opened with the keyring (an erased user's events go out in their erased form);
//! 2. the body `{type, timestamp, data}` is signed to the Standard Webhooks spec with the target's
//!    secret, and with the previous one too during a rotation's grace period; `webhook-id` is the
//!    event id, the same on every attempt and every replica, so receivers de-duplicate by it;
//! 3. the target is called through [`cairn_webhooks::Client`], whose guard checks every address
//!    it connects to;
//! 4. the outcome: a 2xx → `delivered`; a 410 → the target is disabled (an
//!    `action.target.disabled` event) and the delivery waits for it to be enabled; anything else →
//!    tried again on the Svix schedule (a `Retry-After` of a 429 or 503 replaces a shorter
//!    delay). When the schedule is used up the delivery is `failed` if the target accepted other
//!    deliveries meanwhile (this event is the problem), and otherwise keeps being tried at the
//!    schedule's last delay: a target that is down loses nothing, however long it is down, until
//!    it has failed for the failure period and is disabled. An `async` target is called once.
//!
//! Every attempt is recorded in `actions.attempts`. A replica that dies mid-call leaves a claim
//! that expires; another replica then calls again with the same `webhook-id`.
//!
//! Capacity: at most `concurrency` calls in flight per replica and `target_concurrency` to one
//! target, so a slow target occupies a bounded share and never holds up the others; a dead one
//! costs nothing between its attempts (its deliveries wait with a time or parked).

use crate::config::Config;
use crate::deliveries::{self, Attempted, Claimed, Health, Next};
use crate::intake::PROJECTION_NAME;
use crate::metrics::ActionsMetrics;
use cairn_domain::action::Target;
use cairn_domain::{AggregateId, Clock, InstanceId, StoredEvent};
use cairn_eventstore::{Heard, PgEventStore};
use cairn_secrets::Sealed;
use cairn_webhooks::client::{CallError, Client};
use cairn_webhooks::guard::Endpoint;
use cairn_webhooks::schedule;
use cairn_webhooks::secret::SigningSecret;
use cairn_webhooks::sign;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The creator recorded on events the service writes itself (disabling a failing target).
pub const CREATOR: &str = "system:actions";

/// Opened signing secrets by (target, target version): unsealed once per version.
type SecretCache = Mutex<HashMap<(Uuid, i64), Arc<Vec<SigningSecret>>>>;

/// What the dispatcher needs.
#[derive(Clone)]
pub struct Dispatcher {
    /// PostgreSQL.
    pub pool: PgPool,
    /// The event store (events to deliver; disabling events).
    pub store: PgEventStore,
    /// The keys (signing secrets, personal data).
    pub vault: cairn_personal::Vault,
    /// The HTTP client with the SSRF guard.
    pub client: Client,
    /// Settings.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: ActionsMetrics,
    /// The clock of the failure period.
    pub clock: Arc<dyn Clock>,
    /// This replica's claim owner id.
    pub owner: Uuid,
    /// Randomness for the schedule's jitter: a value in `[0, 1)`.
    pub jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
    secrets: Arc<SecretCache>,
    in_flight: Arc<Mutex<HashMap<Uuid, u32>>>,
    finisher: Arc<Finisher>,
}

/// Successful attempts waiting to be recorded together (a group commit): whoever holds the
/// writer lock records everything queued so far, its own attempt included, one transaction per
/// target, and answers each; the others find their answer when they get the lock.
#[derive(Default)]
struct Finisher {
    queue: Mutex<Vec<Finishing>>,
    writer: tokio::sync::Mutex<()>,
}

struct Finishing {
    claimed: Claimed,
    attempted: Attempted,
    reply: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

impl Dispatcher {
    /// A dispatcher; see the fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        store: PgEventStore,
        vault: cairn_personal::Vault,
        client: Client,
        config: Arc<Config>,
        metrics: ActionsMetrics,
        clock: Arc<dyn Clock>,
        owner: Uuid,
    ) -> Self {
        Self {
            pool,
            store,
            vault,
            client,
            config,
            metrics,
            clock,
            owner,
            jitter: Arc::new(rand::random::<f64>),
            secrets: Arc::default(),
            in_flight: Arc::default(),
            finisher: Arc::default(),
        }
    }

    /// Runs the wake-up listener, the queue gauge and the claim loop until `shutdown`; calls in
    /// flight finish and are recorded first.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let mut helpers = JoinSet::new();
        helpers.spawn(listen(self.pool.clone(), wake.clone(), shutdown.clone()));
        helpers.spawn(measure_queue(self.clone(), shutdown.clone()));
        self.claim_loop(wake, &shutdown).await;
        while let Some(joined) = helpers.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a dispatcher task panicked");
            }
        }
    }

    /// The room left of each target with calls in flight (under its cap).
    fn room(&self) -> Vec<(Uuid, i32)> {
        let cap = self.config.target_concurrency;
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, n)| **n < cap)
            .map(|(t, n)| (*t, i32::try_from(cap - *n).unwrap_or(0)))
            .collect()
    }

    fn saturated(&self) -> Vec<Uuid> {
        let cap = self.config.target_concurrency;
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, n)| **n >= cap)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Takes a slot of `target` if it has one free.
    fn take_slot(&self, target: Uuid) -> bool {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = in_flight.entry(target).or_insert(0);
        if *n >= self.config.target_concurrency {
            return false;
        }
        *n += 1;
        true
    }

    fn free_slot(&self, target: Uuid) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = in_flight.get_mut(&target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&target);
            }
        }
    }

    async fn claim_loop(&self, wake: Arc<Notify>, shutdown: &CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut calls = JoinSet::new();
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            // Registered before looking, so a wake-up between the look and the wait is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            while calls.try_join_next().is_some() {}
            let free = slots.available_permits();
            let pause = if free == 0 {
                // Wait for a call to end.
                tokio::select! {
                    _ = calls.join_next() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            } else {
                match self.claim(free).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        backoff = Duration::from_millis(100);
                        for delivery in claimed {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let this = self.clone();
                            let (delivery, event) = delivery;
                            calls.spawn(async move {
                                this.deliver(&delivery, event).await;
                                this.free_slot(delivery.target_id);
                                drop(permit);
                            });
                        }
                        continue;
                    }
                    Ok(_) => {
                        backoff = Duration::from_millis(100);
                        // Rows due for targets at their cap wait for a call to end (a branch
                        // below), not for a time: counting them would spin on the claim.
                        match deliveries::next_due_in(&self.pool).await {
                            Ok(Some(due)) => due.min(poll),
                            _ => poll,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming deliveries failed; retrying");
                        let pause = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        pause
                    }
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = calls.join_next(), if !calls.is_empty() => {}
                _ = tokio::time::sleep(pause) => {} // poll interval / next retry due / error backoff
                _ = shutdown.cancelled() => break,
            }
        }
        // Calls in flight finish and are recorded.
        while calls.join_next().await.is_some() {}
    }

    /// Claims up to `limit` deliveries, gives back those over a target's cap, and reads their
    /// events (one query per instance).
    async fn claim(&self, limit: usize) -> Result<Vec<(Claimed, Option<StoredEvent>)>, anyhow::Error> {
        let claimed = deliveries::claim(
            &self.pool,
            self.owner,
            i64::try_from(limit.min(256)).unwrap_or(256),
            &self.saturated(),
            &self.room(),
            i32::try_from(self.config.target_concurrency).unwrap_or(i32::MAX),
            self.config.claim_ttl(),
        )
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let (kept, over): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| self.take_slot(c.target_id));
        if !over.is_empty() {
            deliveries::release(&self.pool, self.owner, &over.iter().collect::<Vec<_>>()).await?;
        }
        let mut by_instance: HashMap<Uuid, Vec<cairn_domain::Position>> = HashMap::new();
        for c in &kept {
            by_instance.entry(c.instance_id).or_default().push(c.position);
        }
        let mut events: HashMap<(Uuid, Uuid), StoredEvent> = HashMap::new();
        for (instance, positions) in by_instance {
            let read = async {
                let mut read = self
                    .store
                    .events_at(InstanceId::from_uuid(instance), &positions)
                    .await?;
                let mut conn = self.pool.acquire().await?;
                self.vault.open(&mut conn, &mut read).await?;
                Ok::<_, anyhow::Error>(read)
            };
            match read.await {
                Ok(read) => {
                    for event in read {
                        events.insert((instance, event.id.as_uuid()), event);
                    }
                }
                Err(error) => {
                    // The attempt goes ahead without its event and fails as a retry.
                    tracing::warn!(%error, %instance, "reading the events of claimed deliveries failed");
                }
            }
        }
        // One event may be claimed for several targets at once: each delivery gets its copy.
        Ok(kept
            .into_iter()
            .map(|c| {
                let event = events.get(&(c.instance_id, c.event_id)).cloned();
                (c, event)
            })
            .collect())
    }

    fn signing_secrets(&self, c: &Claimed) -> Result<Arc<Vec<SigningSecret>>, String> {
        let key = (c.target_id, c.target_sequence);
        if let Some(found) = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let (instance, target) = (c.instance_id.into_bytes(), c.target_id.into_bytes());
        let mut opened = Vec::new();
        for sealed in std::iter::once(&c.secret).chain(c.previous_secret.as_ref()) {
            let sealed: Sealed = serde_json::from_value(sealed.clone())
                .map_err(|e| format!("the stored secret is unreadable: {e}"))?;
            opened.push(
                SigningSecret::open(self.vault.keyring(), &sealed, &instance, &target)
                    .map_err(|e| format!("the signing secret cannot be opened: {e}"))?,
            );
        }
        let opened = Arc::new(opened);
        let mut cache = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|(t, _), _| *t != c.target_id);
        // Without a previous secret the entry is valid until the target changes; with one, until
        // its grace period ends (the claim stops returning it), which also changes what is opened.
        if c.previous_secret.is_none() {
            cache.insert(key, opened.clone());
        }
        Ok(opened)
    }

    /// One attempt of one claimed delivery, recorded.
    async fn deliver(&self, c: &Claimed, event: Option<StoredEvent>) {
        let started_at = self.clock.now();
        let start = tokio::time::Instant::now();
        let outcome = match event {
            Some(event) => self.call(c, &event).await,
            None => Err(CallFailure::Local("the event was not found in the store".into())),
        };
        let latency = start.elapsed();
        let (attempted, retry_after) = match &outcome {
            Ok(response) => (
                Attempted {
                    started_at,
                    status: Some(response.status),
                    latency: response.latency,
                    response: Some(response.preview()),
                    error: (!response.is_success()).then(|| format!("HTTP {}", response.status)),
                },
                response
                    .retry_after
                    .as_deref()
                    .filter(|_| matches!(response.status, 429 | 503))
                    .and_then(|v| schedule::parse_retry_after(v, unix_now())),
            ),
            Err(failure) => (
                Attempted {
                    started_at,
                    status: None,
                    latency,
                    response: None,
                    error: Some(failure.to_string()),
                },
                None,
            ),
        };
        self.metrics.observe(&attempted);
        if attempted.error.is_none() {
            // The common case, recorded with the other successes of the moment.
            match self.finish_delivered(c, &attempted).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(event_id = %c.event_id, target_id = %c.target_id, "claim taken over; outcome left to the new owner");
                }
                Err(error) => {
                    tracing::warn!(%error, event_id = %c.event_id, target_id = %c.target_id, "recording a delivery failed; the claim will expire and the delivery be tried again");
                }
            }
            return;
        }
        let health = match deliveries::record_attempt(&self.pool, c, &attempted, self.clock.now()).await {
            Ok(health) => health,
            Err(error) => {
                // The claim expires and the delivery is tried again; nothing is lost.
                tracing::warn!(%error, event_id = %c.event_id, target_id = %c.target_id, "recording an attempt failed");
                return;
            }
        };
        let gone = matches!(&outcome, Ok(r) if r.status == 410);
        // A 410 holds the delivery for the disabled target; if the target could not be disabled,
        // the delivery stays on its schedule instead of waiting for an enable that never comes.
        let held = gone && self.disable(c, "the endpoint answered 410 Gone").await;
        let next = self.next(c, &attempted, retry_after, health, held);
        if !gone && let Some(since) = health.failing_since {
            let failing = (self.clock.now() - since).to_std().unwrap_or_default();
            if attempted.error.is_some() && failing >= self.config.failure_period() {
                let reason = format!(
                    "every call failed for {} hours (CAIRN_ACTIONS_FAILURE_PERIOD_SECS); last error: {}",
                    failing.as_secs() / 3600,
                    attempted.error.as_deref().unwrap_or("")
                );
                self.disable(c, &reason).await;
            }
        }
        match deliveries::finish(&self.pool, self.owner, c, &attempted, next).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(event_id = %c.event_id, target_id = %c.target_id, "claim taken over; outcome left to the new owner");
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %c.event_id, target_id = %c.target_id, "recording an outcome failed; the claim will expire and the delivery be tried again");
            }
        }
    }

    /// Records a successful attempt and ends its delivery, batched (see [`Finisher`]); whether
    /// the claim was still this replica's.
    async fn finish_delivered(&self, c: &Claimed, attempted: &Attempted) -> Result<bool, String> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.finisher
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Finishing {
                claimed: c.clone(),
                attempted: attempted.clone(),
                reply,
            });
        let writer = self.finisher.writer.lock().await;
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let batch = std::mem::take(
            &mut *self
                .finisher
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut by_target: HashMap<Uuid, Vec<Finishing>> = HashMap::new();
        for item in batch {
            by_target.entry(item.claimed.target_id).or_default().push(item);
        }
        for (target, items) in by_target {
            let refs: Vec<(&Claimed, &Attempted)> =
                items.iter().map(|f| (&f.claimed, &f.attempted)).collect();
            let result =
                deliveries::finish_delivered(&self.pool, self.owner, target, &refs, self.clock.now()).await;
            match result {
                Ok(flags) => {
                    for (item, flag) in items.into_iter().zip(flags) {
                        let _ = item.reply.send(Ok(flag));
                    }
                }
                Err(error) => {
                    for item in items {
                        let _ = item.reply.send(Err(error.to_string()));
                    }
                }
            }
        }
        drop(writer);
        answer
            .await
            .unwrap_or_else(|_| Err("the batch recording this attempt was abandoned".into()))
    }

    fn next(
        &self,
        c: &Claimed,
        attempted: &Attempted,
        retry_after: Option<Duration>,
        health: Health,
        gone: bool,
    ) -> Next {
        if attempted.error.is_none() {
            return Next::Delivered;
        }
        if gone {
            return Next::Hold;
        }
        if c.kind == "async" {
            return Next::Failed;
        }
        let scale = self.config.retry_scale;
        let attempt = u32::try_from(c.round_attempt).unwrap_or(u32::MAX);
        match schedule::delay_after(attempt, (self.jitter)(), None) {
            Some(delay) => Next::Retry(scaled(delay, scale, retry_after)),
            None => {
                // The schedule is used up. A target that accepted something else lately has a
                // problem with this event: give it up. A target that is simply down keeps it.
                let recent = self.clock.now()
                    - chrono::Duration::from_std(schedule::last_delay(0.0)).unwrap_or_default();
                if health.last_success_at.is_some_and(|at| at > recent) {
                    Next::Failed
                } else {
                    Next::Retry(scaled(schedule::last_delay((self.jitter)()), scale, retry_after))
                }
            }
        }
    }

    /// Disables the target (records `action.target.disabled`); false if that failed.
    async fn disable(&self, c: &Claimed, reason: &str) -> bool {
        let result = crate::commands::execute::<Target>(
            &self.store,
            InstanceId::from_uuid(c.instance_id),
            AggregateId::from_uuid(c.target_id),
            CREATOR,
            |target| target.disable(reason).map_err(crate::commands::domain_error),
        )
        .await;
        match result {
            Ok((_, events)) => {
                if !events.is_empty() {
                    self.metrics.disabled.inc();
                    tracing::warn!(target_id = %c.target_id, instance_id = %c.instance_id, reason, "target disabled");
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, target_id = %c.target_id, "disabling a target failed");
                false
            }
        }
    }

    async fn call(
        &self,
        c: &Claimed,
        event: &StoredEvent,
    ) -> Result<cairn_webhooks::client::Response, CallFailure> {
        let endpoint = Endpoint::parse(&c.endpoint).map_err(|e| CallFailure::Local(e.to_string()))?;
        let secrets = self.signing_secrets(c).map_err(CallFailure::Local)?;
        let timestamp = unix_now();
        let body = body(event, timestamp);
        let id = event.id.as_uuid().to_string();
        let signature = sign::signature_header(&secrets, &id, timestamp, &body)
            .map_err(|e| CallFailure::Local(e.to_string()))?;
        let mut headers = vec![
            (sign::HEADER_ID, id),
            (sign::HEADER_TIMESTAMP, timestamp.to_string()),
            (sign::HEADER_SIGNATURE, signature),
        ];
        if let Some(traceparent) = &event.trace_context {
            headers.push(("traceparent", traceparent.clone()));
        }
        Ok(self
            .client
            .post(&endpoint, &headers, body.into(), c.timeout)
            .await?)
    }
}

/// Why a call failed before or without an answer.
#[derive(Debug, thiserror::Error)]
enum CallFailure {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{0}")]
    Local(String),
}

/// A schedule delay stretched by the scale, and a `Retry-After` when it is longer.
fn scaled(delay: Duration, scale: f64, retry_after: Option<Duration>) -> Duration {
    let delay = delay.mul_f64(scale);
    match retry_after {
        Some(after) if after > delay => after.min(schedule::MAX_RETRY_AFTER),
        _ => delay,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Standard Webhooks body of `event`, sent at `sent_at` (Unix seconds, the signature's
/// timestamp: the wall clock, which receivers compare with theirs).
pub fn body(event: &StoredEvent, sent_at: i64) -> Vec<u8> {
    let sent_at = chrono::DateTime::from_timestamp(sent_at, 0).unwrap_or(event.created_at);
    let value = serde_json::json!({
        "type": event.event_type.as_str(),
        "timestamp": sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": {
            "eventId": event.id.as_uuid(),
            "instanceId": event.instance_id.as_uuid(),
            "aggregateType": event.aggregate_type.as_str(),
            "aggregateId": event.aggregate_id.as_uuid(),
            "sequence": event.sequence,
            "position": event.position.to_string(),
            "eventType": event.event_type.as_str(),
            "revision": event.revision,
            "creator": event.creator,
            "resourceOwner": event.resource_owner.as_uuid(),
            "createdAt": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "payload": public_payload(event),
        }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The payload as receivers see it: a target's sealed signing secret (in `action.target.*`
/// events, which `event:*` matches) is left out.
fn public_payload(event: &StoredEvent) -> serde_json::Value {
    let mut payload = event.payload.clone();
    if event.event_type.as_str().starts_with("action.target.")
        && let Some(object) = payload.as_object_mut()
    {
        object.remove("secret");
    }
    payload
}

async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let prefix = format!("{PROJECTION_NAME}:");
    cairn_eventstore::listen_forever(
        &pool,
        cairn_projection::PROJECTION_CHANNEL,
        "intake commits",
        &shutdown,
        |heard| match heard {
            Heard::Listening => wake.notify_waiters(),
            Heard::Notification(n) if n.payload().starts_with(&prefix) => wake.notify_waiters(),
            Heard::Notification(_) | Heard::Lost => {}
        },
    )
    .await;
}

async fn measure_queue(dispatcher: Dispatcher, shutdown: CancellationToken) {
    let every = Duration::from_millis(dispatcher.config.poll_ms).max(Duration::from_millis(500));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {} // gauge interval
            _ = shutdown.cancelled() => return,
        }
        if let Ok(depth) = deliveries::queue_depth(&dispatcher.pool).await {
            dispatcher.metrics.queue_depth.set(depth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::{AggregateId, AggregateType, EventType, InstanceId, Position};

    fn event(event_type: &str, payload: serde_json::Value) -> StoredEvent {
        let instance = InstanceId::new();
        StoredEvent {
            id: cairn_domain::EventId::new(),
            instance_id: instance,
            aggregate_type: AggregateType::parse("action.target").unwrap(),
            aggregate_id: AggregateId::new(),
            sequence: 1,
            event_type: EventType::parse(event_type).unwrap(),
            revision: 1,
            payload,
            creator: "admin".into(),
            resource_owner: AggregateId::from_uuid(instance.as_uuid()),
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            position: Position {
                position: 7,
                offset: 0,
            },
            trace_context: None,
        }
    }

    #[test]
    fn a_targets_sealed_secret_never_leaves_in_a_body() {
        let added = event(
            "action.target.added",
            serde_json::json!({"settings": {"name": "crm"}, "secret": {"kid": "k1", "ct": "x"}}),
        );
        let body: serde_json::Value = serde_json::from_slice(&body(&added, 1_800_000_000)).unwrap();
        assert_eq!(
            body["data"]["payload"],
            serde_json::json!({"settings": {"name": "crm"}})
        );
        assert_eq!(body["type"], "action.target.added");
        assert_eq!(body["data"]["position"], "7.0");
        let other = event(
            "user.human.added",
            serde_json::json!({"secret": "kept: not a target's"}),
        );
        let sent: serde_json::Value = serde_json::from_slice(&super::body(&other, 1_800_000_000)).unwrap();
        assert_eq!(sent["data"]["payload"]["secret"], "kept: not a target's");
    }
}
