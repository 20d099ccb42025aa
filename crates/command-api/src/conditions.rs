//! Request conditions (DESIGN.md guarantee 13, issue 17): before a gRPC command runs, the targets of
//! the most specific `request:` execution of the caller's instance are called in order with the
//! request, signed as the event webhooks are; a target with `interrupt_on_error` may veto the
//! command.
//!
//! - **Which execution**: `request:/<service>/<method>` beats `request:<service>` beats
//!   `request:*` ([`most_specific_request`]).
//!   The executions and their targets are the `actions` projection's tables, cached per instance
//!   and dropped when the projection commits a change to them (it notifies
//!   [`cairn_webhooks::CONFIG_CHANNEL`] in the same transaction); while the listener is not
//!   listening nothing is cached, so a change is never missed.
//! - **The call**: POST `{type: "request", timestamp, data: {instanceId, method, caller, request}}`
//!   where `request` is the gRPC message as proto3 JSON, with the Standard Webhooks headers
//!   (a fresh `webhook-id` per call) and the request's `traceparent`. Through the same SSRF guard
//!   as the deliveries (`CAIRN_ACTIONS_ALLOWED_HOSTS`).
//! - **The outcome**: a 2xx lets the command go on. A non-2xx, no answer, a timeout, an open
//!   circuit or an exhausted budget is a failure: for a target with `interrupt_on_error` the
//!   command is refused with `FAILED_PRECONDITION` and the target's message (the `message` of a
//!   JSON answer, else the start of the body) and later targets are not called; for any other
//!   target the failure is logged and counted and the command goes on. `async` targets are called
//!   without waiting and never veto.
//! - **What keeps a bad target from taking an instance down**: each target has a circuit breaker
//!   (after `CAIRN_API_CONDITIONS_BREAKER_FAILURES` failures in a row it is not called for
//!   `CAIRN_API_CONDITIONS_BREAKER_OPEN_SECS`, then one trial call decides), every request's
//!   conditions together get at most `CAIRN_API_CONDITIONS_BUDGET_MS` (each call's time limit is
//!   the smaller of its target's timeout and what is left), and the system API, health and
//!   reflection are never intercepted (the action API itself is the `actions` service's, which
//!   has no request conditions).

use crate::error::ApiError;
use bytes::Bytes;
use cairn_auth::Caller;
use cairn_domain::Clock;
use cairn_domain::action::{Condition, most_specific_request};
use cairn_eventstore::Heard;
use cairn_secrets::{Keyring, Sealed};
use cairn_webhooks::{Client, Endpoint, Guard, SigningSecret, sign};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost_reflect::{DescriptorPool, DynamicMessage};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Settings of the request conditions (part of command-api's [`crate::Config`]).
#[derive(clap::Args, Clone, Debug)]
pub struct ConditionSettings {
    /// Hosts (names or addresses, comma-separated) that request-condition targets may reach
    /// although they are or resolve to loopback, private or link-local addresses (the same
    /// setting as the actions service's). Empty: none.
    #[arg(
        long = "actions-allowed-hosts",
        env = "CAIRN_ACTIONS_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_hosts: Vec<String>,
    /// The most time one request's conditions may add to it, in milliseconds: each call's time
    /// limit is the smaller of its target's timeout and what is left of this.
    #[arg(long, env = "CAIRN_API_CONDITIONS_BUDGET_MS", default_value_t = 3000)]
    pub conditions_budget_ms: u64,
    /// Failures in a row after which a target's circuit opens (it is not called).
    #[arg(long, env = "CAIRN_API_CONDITIONS_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one trial call, in seconds.
    #[arg(long, env = "CAIRN_API_CONDITIONS_BREAKER_OPEN_SECS", default_value_t = 30)]
    pub breaker_open_secs: u64,
}

impl Default for ConditionSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            conditions_budget_ms: 3000,
            breaker_failures: 5,
            breaker_open_secs: 30,
        }
    }
}

impl ConditionSettings {
    /// Checks the settings; errors name the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=60_000).contains(&self.conditions_budget_ms),
            "CAIRN_API_CONDITIONS_BUDGET_MS must be between 1 and 60000"
        );
        anyhow::ensure!(
            self.breaker_failures >= 1,
            "CAIRN_API_CONDITIONS_BREAKER_FAILURES must be at least 1"
        );
        anyhow::ensure!(
            self.breaker_open_secs >= 1,
            "CAIRN_API_CONDITIONS_BREAKER_OPEN_SECS must be at least 1"
        );
        Ok(())
    }
}

/// What a target is, as the request conditions need it.
#[derive(Debug)]
struct Target {
    id: Uuid,
    name: String,
    endpoint: Result<Endpoint, String>,
    is_async: bool,
    timeout: Duration,
    interrupt_on_error: bool,
    secrets: Result<Vec<SigningSecret>, String>,
}

/// One instance's request executions.
#[derive(Debug, Default)]
struct Executions {
    by_condition: Vec<(Condition, Vec<Arc<Target>>)>,
    /// When a previous signing secret's grace period ends (then this is loaded again).
    valid_until: Option<DateTime<Utc>>,
}

impl Executions {
    fn matching(&self, path: &str) -> Option<&[Arc<Target>]> {
        most_specific_request(
            self.by_condition
                .iter()
                .map(|(c, targets)| (c, targets.as_slice())),
            path,
        )
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    trial_in_flight: bool,
}

enum Admission {
    Call,
    Trial,
    Open,
}

/// Counters on command-api's `/metrics`.
#[derive(Clone, Debug, Default)]
struct ConditionMetrics {
    /// Calls by outcome: `ok`, `failed`, `vetoed`, `circuit_open`, `budget_exhausted`.
    calls: Family<Vec<(&'static str, &'static str)>, Counter>,
}

/// The request conditions of every instance; cheap to clone.
#[derive(Clone)]
pub struct RequestConditions {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    keys: Keyring,
    client: Client,
    clock: Arc<dyn Clock>,
    descriptors: DescriptorPool,
    budget: Duration,
    breaker_failures: u32,
    breaker_open: chrono::Duration,
    cache: Mutex<HashMap<Uuid, Arc<Executions>>>,
    /// Bumped by every notification and every (re)connection of the listener: a load that began
    /// before a bump is not cached.
    generation: AtomicU64,
    listening: AtomicBool,
    breakers: Mutex<HashMap<Uuid, Breaker>>,
    metrics: ConditionMetrics,
}

/// Why a request was refused.
struct Veto(String);

impl RequestConditions {
    /// The conditions over `pool` (the `actions` tables), opening signing secrets with `keys`.
    pub fn new(
        pool: PgPool,
        keys: Keyring,
        clock: Arc<dyn Clock>,
        settings: &ConditionSettings,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let guard = Guard::allowing(settings.allowed_hosts.iter().filter(|h| !h.is_empty()));
        let client = Client::new(guard).map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
        let descriptors = DescriptorPool::decode(cairn_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| anyhow::anyhow!("reading the API's descriptors: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                keys,
                client,
                clock,
                descriptors,
                budget: Duration::from_millis(settings.conditions_budget_ms),
                breaker_failures: settings.breaker_failures,
                breaker_open: chrono::Duration::seconds(
                    i64::try_from(settings.breaker_open_secs).unwrap_or(i64::MAX / 1000),
                ),
                cache: Mutex::default(),
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                breakers: Mutex::default(),
                metrics: ConditionMetrics::default(),
            }),
        })
    }

    /// Registers the counters under `cairn_api_request_conditions_*`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "cairn_api_request_condition_calls",
            "Calls to request-condition targets by outcome (ok, failed, vetoed, circuit_open, budget_exhausted)",
            self.inner.metrics.calls.clone(),
        );
    }

    /// Keeps the cache current until `shutdown`: drops an instance's executions when the
    /// `actions` projection changes them, and caches nothing while not listening.
    pub async fn listen(self, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        cairn_eventstore::listen_forever(
            &inner.pool.clone(),
            cairn_webhooks::CONFIG_CHANNEL,
            "action configuration",
            &shutdown,
            |heard| {
                inner.generation.fetch_add(1, Ordering::SeqCst);
                match heard {
                    Heard::Listening => {
                        inner.lock_cache().clear();
                        inner.listening.store(true, Ordering::SeqCst);
                    }
                    Heard::Lost => {
                        inner.listening.store(false, Ordering::SeqCst);
                        inner.lock_cache().clear();
                    }
                    Heard::Notification(n) => match n.payload().parse::<Uuid>() {
                        Ok(instance) => {
                            inner.lock_cache().remove(&instance);
                        }
                        Err(_) => inner.lock_cache().clear(),
                    },
                }
            },
        )
        .await;
    }

    /// The layer that applies the conditions to the gRPC routes (inside authentication).
    pub fn layer(&self) -> ConditionsLayer {
        ConditionsLayer {
            conditions: self.clone(),
        }
    }

    /// Runs the conditions of `path` for `caller`; `Err` when a target vetoes.
    async fn check(
        &self,
        caller: &Caller,
        path: &str,
        targets: &[Arc<Target>],
        message: &[u8],
        traceparent: Option<String>,
    ) -> Result<(), Veto> {
        let inner = &self.inner;
        let body = Bytes::from(inner.request_body(caller, path, message));
        let deadline = tokio::time::Instant::now() + inner.budget;
        for target in targets {
            if target.is_async {
                let this = self.clone();
                let target = target.clone();
                let (body, traceparent, path) = (body.clone(), traceparent.clone(), path.to_owned());
                tokio::spawn(async move {
                    let limit = target.timeout.min(this.inner.budget);
                    let outcome = this.inner.call(&target, body, traceparent, limit).await;
                    this.inner.record(&target, &path, outcome.as_ref().err());
                });
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = if left.is_zero() {
                inner.count("budget_exhausted");
                Err(format!(
                    "target \"{}\" was not called: the request's conditions used their whole budget of {} ms",
                    target.name,
                    inner.budget.as_millis()
                ))
            } else {
                match inner.admit(target.id) {
                    Admission::Open => {
                        inner.count("circuit_open");
                        Err(format!(
                            "target \"{}\" is unavailable: it failed {} times in a row and is not called until its circuit closes",
                            target.name, inner.breaker_failures
                        ))
                    }
                    admission => {
                        let limit = target.timeout.min(left);
                        let outcome = inner.call(target, body.clone(), traceparent.clone(), limit).await;
                        inner.settle(target.id, outcome.is_ok(), matches!(admission, Admission::Trial));
                        inner.record(target, path, outcome.as_ref().err());
                        outcome
                    }
                }
            };
            if let Err(why) = outcome
                && target.interrupt_on_error
            {
                inner.count("vetoed");
                return Err(Veto(why));
            }
        }
        Ok(())
    }
}

impl Inner {
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Executions>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .calls
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// The instance's request executions, from the cache or loaded.
    async fn executions(&self, instance: Uuid) -> Result<Arc<Executions>, sqlx::Error> {
        let now = self.clock.now();
        if let Some(found) = self.lock_cache().get(&instance)
            && found.valid_until.is_none_or(|until| now < until)
        {
            return Ok(found.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let loaded = Arc::new(self.load(instance, now).await?);
        if self.listening.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation {
            self.lock_cache().insert(instance, loaded.clone());
        }
        Ok(loaded)
    }

    async fn load(&self, instance: Uuid, now: DateTime<Utc>) -> Result<Executions, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT e.condition, t.id, t.name, t.endpoint, t.kind, t.timeout_ms, t.interrupt_on_error, \
                    t.secret, CASE WHEN t.previous_expires_at > $2 THEN t.previous_secret END, \
                    CASE WHEN t.previous_expires_at > $2 THEN t.previous_expires_at END \
             FROM actions.executions e \
             CROSS JOIN LATERAL unnest(e.targets) WITH ORDINALITY AS u(target_id, ord) \
             JOIN actions.targets t ON t.instance_id = e.instance_id AND t.id = u.target_id AND t.state = 'active' \
             WHERE e.instance_id = $1 AND e.condition LIKE 'request:%' \
             ORDER BY e.condition, u.ord",
        )
        .bind(instance)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut executions = Executions::default();
        for row in rows {
            let condition: String = row.try_get(0)?;
            let Ok(condition) = Condition::parse(&condition) else {
                tracing::warn!(%instance, %condition, "skipping an unreadable request condition");
                continue;
            };
            let id: Uuid = row.try_get(1)?;
            let endpoint: String = row.try_get(3)?;
            let kind: String = row.try_get(4)?;
            let timeout_ms: i32 = row.try_get(5)?;
            let secret: serde_json::Value = row.try_get(7)?;
            let previous: Option<serde_json::Value> = row.try_get(8)?;
            let previous_until: Option<DateTime<Utc>> = row.try_get(9)?;
            if let Some(until) = previous_until {
                executions.valid_until = Some(executions.valid_until.map_or(until, |u| u.min(until)));
            }
            let target = Arc::new(Target {
                id,
                name: row.try_get(2)?,
                endpoint: Endpoint::parse(&endpoint).map_err(|e| e.to_string()),
                is_async: kind == "async",
                timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(1)),
                interrupt_on_error: row.try_get(6)?,
                secrets: self.open_secrets(instance, id, &secret, previous.as_ref()),
            });
            match executions.by_condition.last_mut() {
                Some((last, targets)) if *last == condition => targets.push(target),
                _ => executions.by_condition.push((condition, vec![target])),
            }
        }
        Ok(executions)
    }

    fn open_secrets(
        &self,
        instance: Uuid,
        target: Uuid,
        secret: &serde_json::Value,
        previous: Option<&serde_json::Value>,
    ) -> Result<Vec<SigningSecret>, String> {
        let (instance, target) = (instance.into_bytes(), target.into_bytes());
        std::iter::once(secret)
            .chain(previous)
            .map(|sealed| {
                let sealed: Sealed = serde_json::from_value(sealed.clone())
                    .map_err(|e| format!("the stored secret is unreadable: {e}"))?;
                SigningSecret::open(&self.keys, &sealed, &instance, &target)
                    .map_err(|e| format!("the signing secret cannot be opened: {e}"))
            })
            .collect()
    }

    /// The JSON body: the method, the caller and the request message as proto3 JSON (its raw
    /// bytes in base64 when it cannot be decoded).
    fn request_body(&self, caller: &Caller, path: &str, message: &[u8]) -> Vec<u8> {
        let request = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .and_then(|(service, method)| {
                self.descriptors
                    .get_service_by_name(service)?
                    .methods()
                    .find(|m| m.name() == method)
            })
            .and_then(|method| DynamicMessage::decode(method.input(), message).ok())
            .and_then(|decoded| serde_json::to_value(&decoded).ok())
            .unwrap_or_else(|| {
                use base64::Engine as _;
                serde_json::json!({ "raw": base64::engine::general_purpose::STANDARD.encode(message) })
            });
        let now = self.clock.now();
        let value = serde_json::json!({
            "type": "request",
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": {
                "instanceId": caller.instance_id.as_uuid(),
                "method": path,
                "caller": {
                    "tokenId": caller.token_id,
                    "principalId": caller.principal_id.as_uuid(),
                    "orgId": caller.org_id.map(|o| o.as_uuid()),
                },
                "request": request,
            }
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }

    fn admit(&self, target: Uuid) -> Admission {
        let now = self.clock.now();
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(breaker) = breakers.get_mut(&target) else {
            return Admission::Call;
        };
        match breaker.open_until {
            None => Admission::Call,
            Some(until) if now < until || breaker.trial_in_flight => Admission::Open,
            Some(_) => {
                breaker.trial_in_flight = true;
                Admission::Trial
            }
        }
    }

    fn settle(&self, target: Uuid, ok: bool, trial: bool) {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        if ok {
            breakers.remove(&target);
            return;
        }
        let breaker = breakers.entry(target).or_default();
        breaker.failures = breaker.failures.saturating_add(1);
        if trial {
            breaker.trial_in_flight = false;
        }
        if trial || breaker.failures >= self.breaker_failures {
            breaker.open_until = Some(self.clock.now() + self.breaker_open);
            tracing::warn!(%target, failures = breaker.failures, "a request-condition target's circuit opened");
        }
    }

    fn record(&self, target: &Target, path: &str, failure: Option<&String>) {
        match failure {
            None => {
                self.count("ok");
                tracing::debug!(target_id = %target.id, target = %target.name, method = path, "request condition passed");
            }
            Some(why) => {
                self.count("failed");
                tracing::warn!(target_id = %target.id, target = %target.name, method = path, interrupt = target.interrupt_on_error, error = %why, "request condition failed");
            }
        }
    }

    /// One signed call; `Err` with the reason when it failed.
    async fn call(
        &self,
        target: &Target,
        body: Bytes,
        traceparent: Option<String>,
        limit: Duration,
    ) -> Result<(), String> {
        let name = &target.name;
        let endpoint = target
            .endpoint
            .as_ref()
            .map_err(|e| format!("target \"{name}\" has an unusable endpoint: {e}"))?;
        let secrets = target
            .secrets
            .as_ref()
            .map_err(|e| format!("target \"{name}\" cannot sign: {e}"))?;
        let id = Uuid::new_v4().to_string();
        let timestamp = self.clock.now().timestamp();
        let signature = sign::signature_header(secrets, &id, timestamp, &body)
            .map_err(|e| format!("target \"{name}\" cannot sign: {e}"))?;
        let mut headers = vec![
            (sign::HEADER_ID, id),
            (sign::HEADER_TIMESTAMP, timestamp.to_string()),
            (sign::HEADER_SIGNATURE, signature),
        ];
        if let Some(traceparent) = traceparent {
            headers.push(("traceparent", traceparent));
        }
        match self.client.post(endpoint, &headers, body, limit).await {
            Ok(response) if response.is_success() => Ok(()),
            Ok(response) => Err(format!(
                "target \"{name}\" refused the request ({}): {}",
                response.status,
                refusal_message(&response.body)
            )),
            Err(cairn_webhooks::CallError::Timeout(limit)) => Err(format!(
                "target \"{name}\" did not answer within {} ms",
                limit.as_millis()
            )),
            Err(error) => Err(format!("target \"{name}\" could not be called: {error}")),
        }
    }
}

/// Most of a refusal's text: the `message` of a JSON answer, else the start of the body.
fn refusal_message(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| cairn_webhooks::client::preview(body));
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn never_intercepted(path: &str) -> bool {
    path.starts_with("/cairn.system.v1.")
        || path.starts_with("/cairn.action.v1.")
        || path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
}

/// The first message of a gRPC request body (`[compressed flag][length: u32 BE][message]`);
/// `None` when it is compressed or malformed (then the target gets the raw bytes).
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then_some(())?;
    rest.get(4..4 + len)
}

/// The layer of [`RequestConditions::layer`].
#[derive(Clone)]
pub struct ConditionsLayer {
    conditions: RequestConditions,
}

impl<S> tower::Layer<S> for ConditionsLayer {
    type Service = Conditions<S>;
    fn layer(&self, inner: S) -> Conditions<S> {
        Conditions {
            inner,
            conditions: self.conditions.clone(),
        }
    }
}

/// The service [`ConditionsLayer`] wraps around the gRPC routes.
#[derive(Clone)]
pub struct Conditions<S> {
    inner: S,
    conditions: RequestConditions,
}

impl<S, R> tower::Service<http::Request<tonic::body::Body>> for Conditions<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        let instance = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.instance_id.as_uuid());
        let (Some(instance), false) = (instance, never_intercepted(path)) else {
            return Box::pin(inner.call(request));
        };
        let path = path.to_owned();
        let conditions = self.conditions.clone();
        Box::pin(async move {
            let executions = match conditions.inner.executions(instance).await {
                Ok(executions) => executions,
                Err(error) => {
                    let error = ApiError::Unavailable(format!("loading the request conditions: {error}"));
                    return Ok(tonic::Status::from(error).into_http());
                }
            };
            let Some(targets) = executions.matching(&path) else {
                return inner.call(request).await;
            };
            let (parts, body) = request.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status =
                        tonic::Status::invalid_argument(format!("reading the request failed: {error}"));
                    return Ok(status.into_http());
                }
            };
            let traceparent = parts
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let message = grpc_message(&bytes).unwrap_or(&bytes);
            // The caller stays in the request's extensions (it was there above): borrowed, not
            // cloned, and only for requests that have conditions.
            let vetoed = match parts.extensions.get::<Caller>() {
                Some(caller) => conditions
                    .check(caller, &path, targets, message, traceparent)
                    .await
                    .err(),
                None => None,
            };
            if let Some(Veto(why)) = vetoed {
                return Ok(tonic::Status::from(ApiError::FailedPrecondition(why)).into_http());
            }
            let request =
                http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_frame_gives_its_message_and_a_compressed_or_short_one_none() {
        let mut frame = vec![0, 0, 0, 0, 3];
        frame.extend_from_slice(b"abc");
        assert_eq!(grpc_message(&frame), Some(&b"abc"[..]));
        frame[0] = 1;
        assert_eq!(grpc_message(&frame), None);
        assert_eq!(grpc_message(&[0, 0, 0, 0, 9, 1]), None);
        assert_eq!(grpc_message(&[]), None);
    }

    #[test]
    fn a_refusal_message_is_the_json_message_or_the_start_of_the_body() {
        assert_eq!(
            refusal_message(br#"{"message":"no such cost centre"}"#),
            "no such cost centre"
        );
        assert_eq!(refusal_message(b"  plain text  "), "plain text");
        let long = "x".repeat(2000);
        assert_eq!(refusal_message(long.as_bytes()).chars().count(), 513);
    }

    #[test]
    fn the_system_api_health_and_reflection_are_never_intercepted() {
        assert!(never_intercepted("/cairn.system.v1.SystemService/CreateInstance"));
        assert!(never_intercepted("/cairn.action.v1.ActionService/CreateTarget"));
        assert!(never_intercepted("/grpc.health.v1.Health/Check"));
        assert!(!never_intercepted("/cairn.user.v1.UserService/AddHumanUser"));
    }
}
