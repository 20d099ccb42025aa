//! A projector replica: keeps its share of the leases and runs one worker per held
//! (projection, instance).
//!
//! Every third of the lease TTL it heartbeats, discovers instances, renews its leases, takes the
//! keys that rendezvous hashing gives it and hands back the ones it should not hold. Workers are
//! woken by JetStream: an ordered consumer (ephemeral, per replica, delivering only new messages)
//! on the event stream routes each message, by the instance in its subject, to that instance's
//! workers, which then read the events from PostgreSQL after their own position. PostgreSQL is the
//! data path and JetStream the doorbell: a message the stream lost, a consumer that reconnects or a
//! NATS outage only delays a worker until the replica's periodic head check (one statement for
//! every instance the replica serves), never loses an event.

use crate::Projection;
use crate::lease::{Key, Leases, assign};
use crate::worker::{Step, WorkerConfig, WorkerError, step};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use cairn_domain::{InstanceId, Position};
use cairn_eventstore::PgEventStore;
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

/// A projector replica's settings.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// Lease time-to-live; leases are renewed every third of it.
    pub lease_ttl: Duration,
    /// Events per batch.
    pub batch: u32,
    /// Attempts before a failing event is skipped.
    pub max_attempts: i32,
    /// How often the replica checks every served instance's head anyway (one statement) and wakes
    /// the workers of instances with new events.
    pub head_check: Duration,
    /// The JetStream stream and its subject prefix (for wake-ups); `None` disables the stream path.
    pub stream: Option<(String, String)>,
    /// Test hook, see [`WorkerConfig::crash_every`].
    pub crash_every: Option<u64>,
    /// Opens sealed personal data for the projections ([`WorkerConfig::vault`]).
    pub vault: Option<cairn_personal::Vault>,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(5),
            batch: 1000,
            max_attempts: 3,
            head_check: Duration::from_secs(2),
            stream: Some(("CAIRN_EVENTS".into(), "cairn.events".into())),
            crash_every: None,
            vault: None,
        }
    }
}

/// Counters a replica keeps (exported by the service as Prometheus metrics).
#[derive(Clone, Debug, Default)]
pub struct ProjectorMetrics {
    /// Events read and applied or passed over.
    pub events: prometheus_client::metrics::counter::Counter,
    /// Committed batches.
    pub batches: prometheus_client::metrics::counter::Counter,
    /// Batches that failed (lease lost, database errors, crash hook).
    pub batch_errors: prometheus_client::metrics::counter::Counter,
    /// Leases held by this replica.
    pub leases: prometheus_client::metrics::gauge::Gauge,
}

type Wakers = Arc<Mutex<HashMap<InstanceId, Vec<Arc<Notify>>>>>;

/// A running worker. Its task is aborted when the handle is dropped, so a replica whose run is
/// cancelled abruptly (its task aborted, as a crash would end it) leaves no worker behind.
struct Worker {
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

/// One projector replica.
pub struct Projector {
    pool: PgPool,
    store: PgEventStore,
    projections: Vec<Arc<dyn Projection>>,
    config: ProjectorConfig,
    leases: Leases,
    js: Option<jetstream::Context>,
    metrics: ProjectorMetrics,
}

impl Projector {
    /// A replica with a fresh id.
    pub fn new(
        pool: PgPool,
        store: PgEventStore,
        projections: Vec<Arc<dyn Projection>>,
        config: ProjectorConfig,
        js: Option<jetstream::Context>,
        metrics: ProjectorMetrics,
    ) -> Self {
        let leases = Leases::new(pool.clone(), Uuid::new_v4(), config.lease_ttl);
        Self {
            pool,
            store,
            projections,
            config,
            leases,
            js,
            metrics,
        }
    }

    /// This replica's owner id in `projection_locks`.
    pub fn owner(&self) -> Uuid {
        self.leases.owner()
    }

    /// Runs until `shutdown`: then stops every worker after its current batch, gives the leases
    /// back and leaves the replica set.
    pub async fn run(self, shutdown: CancellationToken) {
        let wakers: Wakers = Arc::default();
        let (seen_tx, mut seen_rx) = mpsc::channel::<InstanceId>(1024);
        let doorbell = self
            .js
            .clone()
            .zip(self.config.stream.clone())
            .map(|(js, (stream, prefix))| {
                AbortOnDropHandle::new(tokio::spawn(ring_doorbell(
                    js,
                    stream,
                    prefix,
                    wakers.clone(),
                    seen_tx.clone(),
                    shutdown.clone(),
                )))
            });
        let watcher = AbortOnDropHandle::new(tokio::spawn(watch_heads(
            self.store.clone(),
            wakers.clone(),
            self.config.head_check,
            shutdown.clone(),
        )));
        let mut workers: HashMap<Key, Worker> = HashMap::new();
        let mut known: HashSet<InstanceId> = HashSet::new();
        let mut tick = tokio::time::interval(self.config.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(instance) = seen_rx.recv() => { known.insert(instance); }
                _ = shutdown.cancelled() => break,
            }
            while let Ok(instance) = seen_rx.try_recv() {
                known.insert(instance);
            }
            if let Err(error) = self.rebalance(&mut workers, &mut known, &wakers, &shutdown).await {
                tracing::warn!(%error, "lease round failed; retrying on the next tick");
            }
        }
        for (_, worker) in workers.drain() {
            worker.stop.cancel();
            let _ = worker.task.await;
        }
        if let Some(doorbell) = doorbell {
            let _ = doorbell.await;
        }
        let _ = watcher.await;
        if let Err(error) = self.leases.leave().await {
            tracing::warn!(%error, "could not release leases on shutdown; they expire by themselves");
        }
        self.metrics.leases.set(0);
    }

    async fn rebalance(
        &self,
        workers: &mut HashMap<Key, Worker>,
        known: &mut HashSet<InstanceId>,
        wakers: &Wakers,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let names: Vec<&str> = self.projections.iter().map(|p| p.name()).collect();
        let live_by_projection = self.leases.heartbeat(&names).await?;
        known.extend(discover_instances(&self.pool).await?);
        let removed = removed_instances(&self.pool).await?;
        let mut held = self.leases.renew_all().await?;
        let me = self.leases.owner();
        for projection in &self.projections {
            let live = live_by_projection
                .get(projection.name())
                .cloned()
                .unwrap_or_default();
            let instances: Vec<InstanceId> = known.iter().copied().collect();
            let assignment = assign(&live, projection.name(), &instances);
            for instance in instances {
                let key = (projection.name().to_owned(), instance);
                let desired = assignment.get(&instance).copied();
                if removed.contains(&key) {
                    // The projection has passed the instance's removal: no worker, no lease.
                    if let Some(worker) = workers.remove(&key) {
                        worker.stop.cancel();
                        let _ = worker.task.await;
                    }
                    if held.remove(&key) {
                        self.leases.release(projection.name(), instance).await?;
                    }
                } else if desired == Some(me) {
                    if !held.contains(&key) && self.leases.acquire(projection.name(), instance).await? {
                        held.insert(key);
                    }
                } else if held.contains(&key) && desired.is_some_and(|d| live.contains(&d)) {
                    if let Some(worker) = workers.remove(&key) {
                        worker.stop.cancel();
                        let _ = worker.task.await;
                    }
                    self.leases.release(projection.name(), instance).await?;
                    held.remove(&key);
                }
            }
        }
        // Stop workers whose lease is gone (expired while paused, taken over) or whose task ended.
        let stale: Vec<Key> = workers
            .iter()
            .filter(|(key, worker)| !held.contains(*key) || worker.task.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(worker) = workers.remove(&key) {
                worker.stop.cancel();
                let _ = worker.task.await;
            }
        }
        for key in &held {
            if workers.contains_key(key) {
                continue;
            }
            let Some(projection) = self.projections.iter().find(|p| p.name() == key.0).cloned() else {
                continue;
            };
            workers.insert(key.clone(), self.spawn_worker(projection, key.1, shutdown));
        }
        let mut map: HashMap<InstanceId, Vec<Arc<Notify>>> = HashMap::new();
        for ((_, instance), worker) in workers.iter() {
            map.entry(*instance).or_default().push(worker.wake.clone());
        }
        *wakers.lock().unwrap_or_else(|p| p.into_inner()) = map;
        self.metrics.leases.set(held.len() as i64);
        Ok(())
    }

    fn spawn_worker(
        &self,
        projection: Arc<dyn Projection>,
        instance: InstanceId,
        shutdown: &CancellationToken,
    ) -> Worker {
        let wake = Arc::new(Notify::new());
        let stop = shutdown.child_token();
        let config = WorkerConfig {
            owner: self.leases.owner(),
            batch: self.config.batch,
            max_attempts: self.config.max_attempts,
            crash_every: self.config.crash_every,
            vault: self.config.vault.clone(),
        };
        let task = AbortOnDropHandle::new(tokio::spawn(run_worker(
            self.pool.clone(),
            self.store.clone(),
            projection,
            instance,
            config,
            self.config.head_check,
            wake.clone(),
            stop.clone(),
            self.metrics.clone(),
        )));
        Worker { wake, stop, task }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_worker(
    pool: PgPool,
    store: PgEventStore,
    projection: Arc<dyn Projection>,
    instance: InstanceId,
    config: WorkerConfig,
    head_check: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
    metrics: ProjectorMetrics,
) {
    let mut batches = 0;
    let mut backoff = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let pause = match step(
            &pool,
            &store,
            projection.as_ref(),
            instance,
            &config,
            &mut batches,
        )
        .await
        {
            Ok(Step::Progressed { events, .. }) => {
                metrics.events.inc_by(events as u64);
                metrics.batches.inc();
                backoff = Duration::from_millis(50);
                continue; // catch up batch after batch without pause
            }
            Ok(Step::Reset) => continue,
            Ok(Step::Idle) => {
                backoff = Duration::from_millis(50);
                // The replica's head watcher wakes the worker when its instance has new events;
                // this is only a safety net.
                head_check * IDLE_SAFETY_FACTOR
            }
            Ok(Step::Retrying(pause)) => pause,
            Err(WorkerError::LeaseLost) => {
                metrics.batch_errors.inc();
                tracing::info!(projection = projection.name(), %instance, "lease lost; worker stops");
                return;
            }
            Err(WorkerError::Crashed) => {
                metrics.batch_errors.inc();
                continue;
            }
            Err(error) => {
                metrics.batch_errors.inc();
                tracing::warn!(projection = projection.name(), %instance, %error, "batch failed; retrying");
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                pause
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {} // poll_interval: periodic head check / retry backoff
            _ = stop.cancelled() => return,
        }
    }
}

/// An idle worker checks its instance's head on its own only every this many head checks; the
/// replica's head watcher wakes it sooner when there is something to do.
const IDLE_SAFETY_FACTOR: u32 = 15;

/// Every `head_check`, one query reads the head of every instance this replica has workers for and
/// wakes the workers of each instance whose head moved: the periodic check behind the JetStream
/// doorbell (a lost message, a NATS outage) costs one statement per replica, not two per worker,
/// which matters with thousands of tenants (five projections each).
async fn watch_heads(store: PgEventStore, wakers: Wakers, head_check: Duration, shutdown: CancellationToken) {
    let mut seen: HashMap<InstanceId, Position> = HashMap::new();
    let mut tick = tokio::time::interval(head_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let instances: Vec<InstanceId> = {
            let wakers = wakers.lock().unwrap_or_else(|p| p.into_inner());
            wakers.keys().copied().collect()
        };
        if instances.is_empty() {
            continue;
        }
        let heads = match store.head_positions(&instances).await {
            Ok(heads) => heads,
            Err(error) => {
                // The workers' own safety-net checks carry on meanwhile.
                tracing::warn!(%error, "could not read the instances' heads");
                continue;
            }
        };
        let moved: Vec<InstanceId> = heads
            .into_iter()
            .filter_map(|(instance, head)| (seen.insert(instance, head) != Some(head)).then_some(instance))
            .collect();
        if moved.is_empty() {
            continue;
        }
        let wakers = wakers.lock().unwrap_or_else(|p| p.into_inner());
        for instance in moved {
            if let Some(list) = wakers.get(&instance) {
                list.iter().for_each(|w| w.notify_one());
            }
        }
    }
}

/// The (projection, instance) pairs whose projection has passed the instance's removal and has no
/// rebuild waiting (a rebuild replays the instance up to its removal again, so it needs a worker).
async fn removed_instances(pool: &PgPool) -> Result<HashSet<Key>, sqlx::Error> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT name, instance_id FROM projections.projection_states \
          WHERE status = 'removed' AND NOT rebuild_requested",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, instance)| (name, InstanceId::from_uuid(instance)))
        .collect())
}

/// The instances that have events: a loose index scan, one index probe per instance.
pub async fn discover_instances(pool: &PgPool) -> Result<Vec<InstanceId>, sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH RECURSIVE found AS ( \
           (SELECT instance_id FROM eventstore.events ORDER BY instance_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT e.instance_id FROM eventstore.events e WHERE e.instance_id > found.instance_id \
                    ORDER BY e.instance_id LIMIT 1) \
             FROM found WHERE found.instance_id IS NOT NULL) \
         SELECT instance_id FROM found WHERE instance_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(InstanceId::from_uuid).collect())
}

/// Wakes the workers of each instance that JetStream reports an event for; reports instances not
/// seen before.
async fn ring_doorbell(
    js: jetstream::Context,
    stream: String,
    prefix: String,
    wakers: Wakers,
    seen: mpsc::Sender<InstanceId>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let consumer = async {
            let stream = js.get_stream(&stream).await.map_err(|e| e.to_string())?;
            stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::New,
                    filter_subject: format!("{prefix}.>"),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        let mut messages = match consumer.await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!(%error, "no JetStream wake-ups for now; workers poll the head");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {} // retry backoff
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = shutdown.cancelled() => return,
            };
            let Some(Ok(message)) = message else { break };
            let instance = message
                .subject
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.split('.').next())
                .and_then(|id| id.parse::<InstanceId>().ok());
            let Some(instance) = instance else { continue };
            let woken = {
                let wakers = wakers.lock().unwrap_or_else(|p| p.into_inner());
                match wakers.get(&instance) {
                    Some(list) => {
                        list.iter().for_each(|w| w.notify_one());
                        true
                    }
                    None => false,
                }
            };
            if !woken {
                let _ = seen.try_send(instance);
            }
        }
    }
}
