//! The relay: publishes every committed event to the JetStream stream exactly once and in global
//! order (DESIGN.md guarantee 4).
//!
//! - It tails the store with the gap-free read (`EventStore::filter` after its cursor) and is woken
//!   by commit notifications, with a slow fallback poll.
//! - Each event goes to `<prefix>.<instance>.<aggregate_type>.<event_type>` with `Nats-Msg-Id` =
//!   event id (JetStream drops a re-publish within the duplicate window) and
//!   `Nats-Expected-Last-Msg-Id` = the previous event's id, so the stream itself rejects a publish
//!   that does not follow what it holds: a relay that was paused and lost its lease cannot append
//!   out of order.
//! - A batch is published pipelined; acks are awaited in order, the durable cursor in PostgreSQL
//!   advances only past acknowledged events and only while this relay holds the lease, and the
//!   first failure stops the batch. Every (re)start of publishing first reconciles: the stream's
//!   last message carries its event's position, and the cursor moves up to it, so events that were
//!   acknowledged before a crash but not recorded in the cursor are not published twice even after
//!   the duplicate window.
//! - One relay publishes at a time: the lease in `eventstore.relay_cursors`; standbys retry every
//!   third of the TTL and take over when the leader stops renewing.

use crate::lease::{Lease, LeaseError};
use crate::metrics::RelayMetrics;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage, stream};
use cairn_domain::{Clock, EventId, Position, StoredEvent, SystemClock};
use cairn_eventstore::{EventFilter, EventStore, PgEventStore};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Header with the event's transaction position.
pub const HEADER_POSITION: &str = "Cairn-Position";
/// Header with the event's offset within its transaction.
pub const HEADER_OFFSET: &str = "Cairn-Offset";
/// Header with the event's aggregate sequence.
pub const HEADER_SEQUENCE: &str = "Cairn-Sequence";
/// Header with the event type.
pub const HEADER_EVENT_TYPE: &str = "Cairn-Event-Type";
/// W3C trace context recorded at push time.
pub const HEADER_TRACEPARENT: &str = "traceparent";

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
    clock: SystemClock,
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
            clock: SystemClock,
            published: 0,
        }
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
            let cursor = match self.lease.acquire().await {
                Ok(cursor) => cursor,
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
                    if pause(&shutdown, &mut backoff).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            self.metrics.leader.set(1);
            tracing::info!(stream = %self.config.stream_name, cursor = %cursor, "relay is the leader");
            match self.lead(cursor, &shutdown).await {
                SessionEnd::Shutdown => break Ok(()),
                SessionEnd::Aborted(n) => break Err(RelayError::Aborted(n)),
                SessionEnd::LeaseLost => {
                    self.metrics.leader.set(0);
                    tracing::warn!("relay lease lost; standing by");
                }
                SessionEnd::Failed(reason) => {
                    self.metrics.publish_errors.inc();
                    tracing::warn!(%reason, "relay stopped publishing; resuming from its cursor");
                    if pause(&shutdown, &mut backoff).await {
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

    async fn lead(&mut self, cursor: Position, shutdown: &CancellationToken) -> SessionEnd {
        let stream = match self.ensure_stream().await {
            Ok(stream) => stream,
            Err(reason) => return SessionEnd::Failed(reason),
        };
        let (mut cursor, mut last_id) = match self.reconcile(stream, cursor).await {
            Ok(found) => found,
            Err(reason) => return SessionEnd::Failed(reason),
        };
        match self.lease.advance(cursor).await {
            Ok(()) => {}
            Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
            Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
        }
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
            let (acked, failure) = self.publish(&batch, last_id).await;
            if acked > 0 {
                let last = &batch[acked - 1];
                if let Some(limit) = self.config.abort_after_publishes
                    && self.published >= limit
                {
                    return SessionEnd::Aborted(self.published);
                }
                match self.lease.advance(last.position).await {
                    Ok(()) => {}
                    Err(LeaseError::NotHeld) => return SessionEnd::LeaseLost,
                    Err(LeaseError::Database(e)) => return SessionEnd::Failed(e.to_string()),
                }
                cursor = last.position;
                last_id = Some(last.id);
                self.metrics.cursor_position.set(cursor.position);
            }
            if let Some(reason) = failure {
                return SessionEnd::Failed(reason);
            }
        }
    }

    /// Publishes `batch` pipelined; returns how many leading events were acknowledged, and the
    /// first failure.
    async fn publish(
        &mut self,
        batch: &[StoredEvent],
        mut previous: Option<EventId>,
    ) -> (usize, Option<String>) {
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        let mut failure = None;
        let limit = self
            .config
            .abort_after_publishes
            .map(|l| l.saturating_sub(self.published) as usize);
        for event in batch.iter().take(limit.unwrap_or(usize::MAX)) {
            let message = match self.message(event, previous) {
                Ok(message) => message,
                Err(reason) => {
                    failure = Some(reason);
                    break;
                }
            };
            match self.js.send_publish(self.subject(event), message).await {
                Ok(ack) => pending.push(ack),
                Err(error) => {
                    failure = Some(format!("publish failed: {error}"));
                    break;
                }
            }
            previous = Some(event.id);
        }
        let mut acked = 0;
        for ack in pending {
            match ack.await {
                Ok(_) => acked += 1,
                Err(error) => {
                    failure.get_or_insert_with(|| format!("publish not acknowledged: {error}"));
                    break;
                }
            }
        }
        self.published += acked as u64;
        self.metrics.published.inc_by(acked as u64);
        (acked, failure)
    }

    fn subject(&self, event: &StoredEvent) -> String {
        format!(
            "{}.{}.{}.{}",
            self.config.subject_prefix, event.instance_id, event.aggregate_type, event.event_type
        )
    }

    fn message(&self, event: &StoredEvent, previous: Option<EventId>) -> Result<PublishMessage, String> {
        let body = serde_json::to_vec(event).map_err(|e| format!("cannot encode event: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
        if let Some(previous) = previous {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID,
                previous.to_string().as_str(),
            );
        }
        headers.insert(HEADER_POSITION, event.position.position.to_string().as_str());
        headers.insert(HEADER_OFFSET, event.position.offset.to_string().as_str());
        headers.insert(HEADER_SEQUENCE, event.sequence.to_string().as_str());
        headers.insert(HEADER_EVENT_TYPE, event.event_type.as_str());
        if let Some(traceparent) = &event.trace_context {
            // The publication joins the trace of the request that wrote the event; consumers of
            // the stream continue from this span.
            let span = tracing::info_span!(
                "relay.publish",
                otel.kind = "producer",
                cairn.service = "eventstore",
                position = %event.position,
                event_type = %event.event_type,
            );
            cairn_telemetry::propagation::set_parent(&span, Some(traceparent));
            let header =
                cairn_telemetry::propagation::traceparent_of(&span).unwrap_or_else(|| traceparent.clone());
            headers.insert(HEADER_TRACEPARENT, header.as_str());
        }
        Ok(PublishMessage::build().payload(body.into()).headers(headers))
    }

    /// Creates the stream, or brings an existing one's settings up to date.
    async fn ensure_stream(&self) -> Result<stream::Stream, String> {
        let wanted = stream::Config {
            name: self.config.stream_name.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: self.config.max_age,
            duplicate_window: self.config.duplicate_window,
            description: Some("Every committed Cairn event, in global order".to_owned()),
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| format!("cannot create stream {}: {e}", wanted.name))?;
        let current = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream info: {e}"))?
            .config
            .clone();
        if current.subjects != wanted.subjects
            || current.max_age != wanted.max_age
            || current.duplicate_window != wanted.duplicate_window
        {
            tracing::info!(stream = %wanted.name, "updating the stream's settings");
            self.js
                .update_stream(wanted)
                .await
                .map_err(|e| format!("cannot update the stream: {e}"))?;
        }
        Ok(stream)
    }

    /// Moves the cursor up to the stream's last message, and returns the id that the next publish
    /// must follow.
    async fn reconcile(
        &self,
        mut stream: stream::Stream,
        cursor: Position,
    ) -> Result<(Position, Option<EventId>), String> {
        let last_sequence = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream info: {e}"))?
            .state
            .last_sequence;
        if last_sequence == 0 {
            return Ok((cursor, None));
        }
        let message = match stream.get_raw_message(last_sequence).await {
            Ok(message) => message,
            Err(error) => {
                // The last message expired or was deleted: nothing to follow.
                tracing::info!(%error, last_sequence, "the stream's last message is gone");
                return Ok((cursor, None));
            }
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let id = header(async_nats::header::NATS_MESSAGE_ID.as_ref())
            .and_then(|v| v.parse::<EventId>().ok())
            .ok_or("the stream's last message has no event id")?;
        let position = match (header(HEADER_POSITION), header(HEADER_OFFSET)) {
            (Some(p), Some(o)) => Position::new(
                p.parse().map_err(|_| "bad position header")?,
                o.parse().map_err(|_| "bad offset header")?,
            ),
            _ => return Err("the stream's last message has no position".to_owned()),
        };
        if position > cursor {
            tracing::info!(%cursor, stream_position = %position, "cursor behind the stream; catching up");
        }
        Ok((cursor.max(position), Some(id)))
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

/// Waits `backoff` (doubling up to 5 s) unless shutdown comes first; true on shutdown.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let jitter = Duration::from_millis(rand::random::<u64>() % 50);
    let wait = *backoff + jitter;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => false, // retry backoff
        _ = shutdown.cancelled() => true,
    }
}
