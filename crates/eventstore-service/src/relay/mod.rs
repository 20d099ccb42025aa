//! The relay: publishes every committed event to the JetStream stream exactly once and in global
//! order (DESIGN.md guarantee 4; docs/ARCHITECTURE.md, "Guarantee 4 — publication").
//!
//! - It tails the store with the gap-free read (`EventStore::filter` after its cursor) and is woken
//!   by commit notifications, with a slow fallback poll.
//! - Each event goes to `<prefix>.<instance>.<aggregate_type>.<event_type>` with `Nats-Msg-Id` =
//!   event id (JetStream drops a re-publish within the duplicate window) and
//!   `Nats-Expected-Last-Sequence` = the stream sequence the stream's last message must have, so
//!   the stream itself rejects a publish that does not follow what it holds: a relay that was
//!   paused and lost its lease cannot append out of order. The stream sequence is part of the
//!   stream's stored state, so the fence survives a restart of the server however long the stream
//!   was quiet. (The message-id fence, `Nats-Expected-Last-Msg-Id`, does not: after a restart
//!   JetStream knows the last message's id only if that message is inside the duplicate window.)
//! - A batch is published pipelined, the n-th message expecting the stream's last sequence plus n;
//!   acks are awaited in order, the durable cursor in PostgreSQL advances only past acknowledged
//!   events, together with the stream sequence JetStream gave the last of them, and only while
//!   this relay holds the lease; the first failure stops the batch. A duplicate ack (JetStream
//!   already holds the event) also stops it: the stream did not grow, so the rest of the pipeline
//!   expects one sequence too many and is refused.
//! - Every (re)start of publishing first reconciles ([`plan`]): the stream's last sequence, from
//!   the stream's info, is what the next publish expects, and the stream's last message carries its
//!   event's position. The cursor moves up to that position, so events that were acknowledged
//!   before a crash but not recorded in the cursor are not published twice even after the
//!   duplicate window. If the stream's last sequence is below the recorded one, the stream lost
//!   acknowledged messages (a host crash before JetStream's fsync, a restored backup) or was
//!   deleted and recreated: that is counted (`cairn_relay_stream_regressions`) and logged as an
//!   error, and when the stream's last message is still there the cursor goes back to it so the
//!   lost tail is published again. A lookup of the last message that fails for any reason but
//!   "not found" ends the attempt (it is retried with backoff); only "not found" means the
//!   message expired or was deleted.
//! - One relay publishes at a time: the lease in `eventstore.relay_cursors`; standbys retry every
//!   third of the TTL and take over when the leader stops renewing.

use crate::envelope;

mod stream_state;
pub use crate::envelope::{
    HEADER_EVENT_TYPE, HEADER_OFFSET, HEADER_POSITION, HEADER_SEQUENCE, HEADER_TRACEPARENT,
};
use crate::lease::{Lease, LeaseError, Recorded};
use crate::metrics::RelayMetrics;
pub use crate::reconcile::{Finding, LastMessage, Plan, plan};
use async_nats::jetstream::{self, context::PublishAckFuture};
use cairn_domain::{Clock, Position, StoredEvent, SystemClock};
use cairn_eventstore::{EventFilter, EventStore, PgEventStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The relay's settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The stream's name.
    pub stream_name: String,
    /// The subject prefix (`cairn.events`).
    pub subject_prefix: String,
    /// Retention of the stream.
    pub max_age: Duration,
    /// JetStream's de-duplication window.
    pub duplicate_window: Duration,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// Events per batch.
    pub batch: u32,
    /// Poll interval when no notification arrives.
    pub fallback_poll: Duration,
    /// Test hook: after this many publishes have been acknowledged, stop as if killed, without
    /// advancing the cursor past them.
    pub abort_after_publishes: Option<u64>,
}

/// Why the relay stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The `abort_after_publishes` hook fired.
    #[error("aborted by the test hook after {0} publishes")]
    Aborted(u64),
}

/// Why one leadership session ended.
enum SessionEnd {
    Shutdown,
    LeaseLost,
    Failed(String),
    Aborted(u64),
}

/// The relay. Build it with [`Relay::new`] and drive it with [`Relay::run`].
pub struct Relay {
    store: PgEventStore,
    js: jetstream::Context,
    config: RelayConfig,
    lease: Lease,
    commits: watch::Receiver<i64>,
    metrics: RelayMetrics,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
    published: u64,
}

impl Relay {
    /// A relay over `store`, publishing through `js`, woken by `commits` (see
    /// `cairn_eventstore::CommitListener`).
    pub fn new(
        store: PgEventStore,
        js: jetstream::Context,
        config: RelayConfig,
        commits: watch::Receiver<i64>,
        metrics: RelayMetrics,
    ) -> Self {
        let lease = Lease::new(
            store.pool().clone(),
            config.stream_name.clone(),
            uuid::Uuid::new_v4(),
            config.lease_ttl,
        );
        Self {
            store,
            js,
            config,
            lease,
            commits,
            metrics,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(rand::random::<f64>),
            published: 0,
        }
    }

    /// The relay with another clock (its lag gauge reads it) and source of retry jitter (a value
    /// in `[0, 1)` per retry): tests and simulations make both deterministic.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>, jitter: Arc<dyn Fn() -> f64 + Send + Sync>) -> Self {
        self.clock = clock;
        self.jitter = jitter;
        self
    }

    /// Up to 50 ms added to a retry's backoff, so replicas that failed together do not retry in
    /// step.
    fn jitter(&self) -> Duration {
        Duration::from_secs_f64((self.jitter)().clamp(0.0, 1.0) * 0.05)
    }

    /// This replica's lease owner id.
    pub fn owner(&self) -> uuid::Uuid {
        self.lease.owner()
    }

    /// Runs until `shutdown` is cancelled: standing by while another relay leads, publishing while
    /// this one does. Releases the lease on the way out.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let mut backoff = Duration::from_millis(100);
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let recorded = match self.lease.acquire().await {
                Ok(recorded) => recorded,
                Err(LeaseError::NotHeld) => {
                    self.metrics.leader.set(0);
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.lease_ttl / 3) => {} // standby renew interval
                        _ = shutdown.cancelled() => break Ok(()),
                    }
                    continue;
                }
                Err(LeaseError::Database(error)) => {
                    tracing::warn!(%error, "cannot reach the lease; retrying");
                    if pause(&shutdown, &mut backoff, self.jitter()).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            self.metrics.leader.set(1);
            tracing::info!(
                stream = %self.config.stream_name,
                cursor = %recorded.position,
                stream_sequence = recorded.stream_sequence,
                "relay is the leader"
            );
            match self.lead(recorded, &shutdown).await {
                SessionEnd::Shutdown => break Ok(()),
                SessionEnd::Aborted(n) => break Err(RelayError::Aborted(n)),
                SessionEnd::LeaseLost => {
                    self.metrics.leader.set(0);
                    tracing::warn!("relay lease lost; standing by");
                }
                SessionEnd::Failed(reason) => {
                    self.metrics.publish_errors.inc();
                    tracing::warn!(%reason, "relay stopped publishing; resuming from its cursor");
                    if pause(&shutdown, &mut backoff, self.jitter()).await {
                        break Ok(());
                    }
                    continue;
                }
            }
            backoff = Duration::from_millis(100);
        };
        if !matches!(result, Err(RelayError::Aborted(_)))
            && let Err(error) = self.lease.release().await
        {
            tracing::warn!(%error, "could not release the relay lease; it expires by itself");
        }
        self.metrics.leader.set(0);
        result
    }

    async fn lead(&mut self, recorded: Recorded, shutdown: &CancellationToken) -> SessionEnd {
        let stream = match self.ensure_stream().await {
            Ok(stream) => stream,
            Err(reason) => return SessionEnd::Failed(reason),
        };
        let reconciled = match self.reconcile(stream, recorded).await {
            Ok(reconciled) => reconciled,
            Err(reason) => return SessionEnd::Failed(reason),
        };
        // The round trips to NATS may have outlasted a short lease: renew it, and make sure that
        // nobody recorded anything in the meantime (then what was found may be stale).
        match self.lease.acquire().await {
            Ok(now) if now == recorded => {}
            Ok(_) => {
                return SessionEnd::Failed(
                    "the cursor moved while reconciling with the stream; reconciling again".to_owned(),
                );
            }
            Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
            Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
        }
        match self.lease.reconcile(reconciled).await {
            Ok(()) => {}
            Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
            Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
        }
        let Recorded {
            position: mut cursor,
            stream_sequence: mut stream_last,
        } = reconciled;
        self.metrics.stream_sequence.set(gauge(stream_last));
        self.metrics.cursor_position.set(cursor.position);
        let renew_every = self.config.lease_ttl / 3;
        let mut renewed = Instant::now();
        let mut lag_checked = Instant::now() - Duration::from_secs(1);
        let mut behind_pause = Duration::from_millis(1);
        loop {
            if shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
            if renewed.elapsed() >= renew_every {
                match self.lease.acquire().await {
                    Ok(_) => renewed = Instant::now(),
                    Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
                    Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
                }
            }
            if lag_checked.elapsed() >= Duration::from_secs(1) {
                self.update_lag(cursor).await;
                lag_checked = Instant::now();
            }
            let batch = match self
                .store
                .filter(&EventFilter::after(cursor, self.config.batch))
                .await
            {
                Ok(batch) => batch,
                Err(error) => return SessionEnd::Failed(error.to_string()),
            };
            if batch.is_empty() {
                self.metrics.lag_events.set(0);
                self.metrics.lag_ms.set(0);
                let announced = *self.commits.borrow_and_update();
                let wait = if announced > cursor.position {
                    // A commit was announced that the horizon does not show yet (an older
                    // transaction is still open): look again soon.
                    let wait = behind_pause;
                    behind_pause = (behind_pause * 2).min(Duration::from_millis(50));
                    wait
                } else {
                    behind_pause = Duration::from_millis(1);
                    self.config.fallback_poll.min(renew_every)
                };
                tokio::select! {
                    _ = self.commits.changed() => {}
                    _ = tokio::time::sleep(wait) => {} // poll_interval: fallback when no notification arrives
                    _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                }
                continue;
            }
            behind_pause = Duration::from_millis(1);
            let published = self.publish(&batch, stream_last).await;
            if published.acked > 0 {
                let last = &batch[published.acked - 1];
                if let Some(limit) = self.config.abort_after_publishes
                    && self.published >= limit
                {
                    return SessionEnd::Aborted(self.published);
                }
                match self.lease.advance(last.position, published.stream_sequence).await {
                    Ok(()) => {}
                    Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
                    Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
                }
                cursor = last.position;
                stream_last = published.stream_sequence;
                self.metrics.cursor_position.set(cursor.position);
                self.metrics.stream_sequence.set(gauge(stream_last));
            }
            if let Some(reason) = published.failure {
                return SessionEnd::Failed(reason);
            }
        }
    }

    /// Publishes `batch` pipelined after the stream's last message, `stream_last`: the n-th
    /// message (from 0) expects the stream's last sequence to be `stream_last + n`. Returns how
    /// many leading events JetStream acknowledged, the stream's last sequence after them, and the
    /// first failure.
    async fn publish(&mut self, batch: &[StoredEvent], stream_last: u64) -> Published {
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        let mut failure = None;
        let limit = self
            .config
            .abort_after_publishes
            .map(|l| l.saturating_sub(self.published) as usize);
        for (n, event) in batch.iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
            let message = match envelope::message(event, stream_last + n as u64) {
                Ok(message) => message,
                Err(reason) => {
                    failure = Some(reason);
                    break;
                }
            };
            match self
                .js
                .send_publish(envelope::subject(&self.config.subject_prefix, event), message)
                .await
            {
                Ok(ack) => pending.push(ack),
                Err(error) => {
                    failure = Some(format!("publish failed: {error}"));
                    break;
                }
            }
        }
        let mut acked = 0;
        let mut last = stream_last;
        for (ack, event) in pending.into_iter().zip(batch) {
            match ack.await {
                Ok(ack) if ack.duplicate => {
                    // JetStream already holds this event (at `ack.sequence`), so it counts as
                    // published; but the stream did not grow, and every later message of this
                    // pipeline expects one sequence too many: stop, and reconcile.
                    acked += 1;
                    failure.get_or_insert_with(|| {
                        format!(
                            "event {} is already in the stream (sequence {}); reconciling",
                            event.id, ack.sequence
                        )
                    });
                    break;
                }
                Ok(ack) if ack.sequence == last + 1 => {
                    acked += 1;
                    last = ack.sequence;
                }
                Ok(ack) => {
                    // Stored, but not where the fence said it would be: only a writer other than
                    // the relay can cause that. The event is in the stream; reconcile.
                    acked += 1;
                    failure.get_or_insert_with(|| {
                        format!(
                            "event {} was stored at stream sequence {}, not {}; reconciling",
                            event.id,
                            ack.sequence,
                            last + 1
                        )
                    });
                    last = ack.sequence;
                    break;
                }
                Err(error) => {
                    failure.get_or_insert_with(|| format!("publish not acknowledged: {error}"));
                    break;
                }
            }
        }
        self.published += acked as u64;
        self.metrics.published.inc_by(acked as u64);
        Published {
            acked,
            stream_sequence: last,
            failure,
        }
    }

    async fn update_lag(&self, cursor: Position) {
        match self.store.backlog(cursor, 10_000_000).await {
            Ok((count, oldest)) => {
                self.metrics.lag_events.set(count);
                let age = oldest.map_or(0, |at| (self.clock.now() - at).num_milliseconds().max(0));
                self.metrics.lag_ms.set(age);
            }
            Err(error) => tracing::debug!(%error, "cannot measure relay lag"),
        }
    }
}

/// Waits `backoff` plus `jitter` (doubling `backoff` up to 5 s) unless shutdown comes first; true
/// on shutdown.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration, jitter: Duration) -> bool {
    let wait = *backoff + jitter;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => false, // retry backoff
        _ = shutdown.cancelled() => true,
    }
}

/// What one pipelined publish achieved.
struct Published {
    /// Leading events JetStream acknowledged (stored, or already held).
    acked: usize,
    /// The stream's last sequence after them.
    stream_sequence: u64,
    /// The first failure, which ended the batch.
    failure: Option<String>,
}

fn gauge(stream_sequence: u64) -> i64 {
    i64::try_from(stream_sequence).unwrap_or(i64::MAX)
}
