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

use crate::lease::{Lease, LeaseError, Recorded};
use crate::metrics::RelayMetrics;
use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, context::PublishAckFuture, message::PublishMessage, stream, stream::RawMessageErrorKind,
};
use cairn_domain::{Clock, Position, StoredEvent, SystemClock};
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
                    if pause(&shutdown, &mut backoff).await {
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
            let message = match self.message(event, stream_last + n as u64) {
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

    fn subject(&self, event: &StoredEvent) -> String {
        format!(
            "{}.{}.{}.{}",
            self.config.subject_prefix, event.instance_id, event.aggregate_type, event.event_type
        )
    }

    fn message(&self, event: &StoredEvent, expected_last: u64) -> Result<PublishMessage, String> {
        let body = serde_json::to_vec(event).map_err(|e| format!("cannot encode event: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            expected_last.to_string().as_str(),
        );
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

    /// Compares the stream with the recorded cursor (see [`plan`]) and returns where publishing
    /// resumes: after which event, and on which stream sequence.
    async fn reconcile(&self, mut stream: stream::Stream, recorded: Recorded) -> Result<Recorded, String> {
        let stream_last = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream info: {e}"))?
            .state
            .last_sequence;
        let last = self.last_message(&stream, stream_last).await?;
        let plan = plan(recorded, stream_last, last);
        match plan.finding {
            Finding::InStep => {}
            Finding::CaughtUp => tracing::info!(
                cursor = %recorded.position,
                stream_position = %plan.resume.position,
                "cursor behind the stream; catching up"
            ),
            Finding::TailGone => tracing::warn!(
                recorded_sequence = recorded.stream_sequence,
                stream_last,
                "the stream's last message expired or was deleted and the cursor does not record \
                 it; events between the cursor and the stream's end may be published again"
            ),
            Finding::Regressed { republish } => {
                self.metrics.stream_regressions.inc();
                let lost = recorded.stream_sequence - stream_last;
                if republish {
                    tracing::error!(
                        stream = %self.config.stream_name,
                        recorded_sequence = recorded.stream_sequence,
                        stream_last,
                        lost,
                        from = %plan.resume.position,
                        "the stream lost acknowledged messages; publishing them again after its \
                         last message"
                    );
                } else {
                    tracing::error!(
                        stream = %self.config.stream_name,
                        recorded_sequence = recorded.stream_sequence,
                        stream_last,
                        lost,
                        cursor = %plan.resume.position,
                        "the stream is behind what it acknowledged (lost messages, or deleted and \
                         recreated) and its last message cannot be found; publishing resumes after \
                         the cursor, the missing events are not published again (consumers catch \
                         up from PostgreSQL)"
                    );
                }
            }
        }
        Ok(plan.resume)
    }

    /// The event position that the stream's last message carries.
    async fn last_message(&self, stream: &stream::Stream, stream_last: u64) -> Result<LastMessage, String> {
        if stream_last == 0 {
            return Ok(LastMessage::Empty);
        }
        let message = match stream.get_raw_message(stream_last).await {
            Ok(message) => message,
            Err(error) => {
                return if lookup_found_nothing(&error.kind()) {
                    tracing::info!(%error, stream_last, "the stream's last message is gone");
                    Ok(LastMessage::Gone)
                } else {
                    // Not an answer about the message (a timeout, a lost connection, a refusal):
                    // guessing here could publish events the stream already holds.
                    Err(format!(
                        "cannot read the stream's last message (sequence {stream_last}): {error}"
                    ))
                };
            }
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let position = match (header(HEADER_POSITION), header(HEADER_OFFSET)) {
            (Some(p), Some(o)) => Position::new(
                p.parse().map_err(|_| "bad position header")?,
                o.parse().map_err(|_| "bad offset header")?,
            ),
            _ => return Err("the stream's last message has no position".to_owned()),
        };
        let id = header(async_nats::header::NATS_MESSAGE_ID.as_ref())
            .and_then(|v| v.parse::<uuid::Uuid>().ok())
            .ok_or("the stream's last message has no event id")?;
        let stored: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM eventstore.events WHERE position = $1 AND in_tx_order = $2 AND id = $3)",
        )
        .bind(position.position)
        .bind(position.offset)
        .bind(id)
        .fetch_one(self.store.pool())
        .await
        .map_err(|e| format!("cannot look up the stream's last event in the store: {e}"))?;
        if stored {
            return Ok(LastMessage::At(position));
        }
        // The stream ends with an event the store does not hold: the database was restored from a
        // backup older than the stream. New events must land above what the stream holds (or a
        // cursor moved up to the stream's end would pass them), and the cursor must not move up to
        // a position the store never published from: resume after the recorded cursor, as when
        // the last message is gone (events the stream already holds may be published again;
        // none is lost).
        let base = cairn_migrations::raise_position_base(self.store.pool(), position.position)
            .await
            .map_err(|e| format!("cannot raise the position base: {e}"))?;
        tracing::error!(
            stream_position = %position,
            event_id = %id,
            base_before = base.before,
            base_after = base.after,
            "the stream ends with an event the store does not hold (a restore from a backup older \
             than the stream?); new events are placed above it and publishing resumes after the \
             relay's recorded cursor"
        );
        self.metrics.stream_regressions.inc();
        Ok(LastMessage::Gone)
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

/// True when a failed lookup of a message by sequence is JetStream's answer "no such message"
/// (it expired or was deleted); every other failure (a timeout, no responders, a refused request,
/// any other JetStream error) says nothing about the message.
fn lookup_found_nothing(kind: &RawMessageErrorKind) -> bool {
    matches!(kind, RawMessageErrorKind::NoMessageFound)
}

/// The stream's last message, as reconciliation found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastMessage {
    /// The stream never held a message (its last sequence is 0).
    Empty,
    /// The last message is there and carries this event position.
    At(Position),
    /// The stream's last sequence is not 0 but the message is gone (expired or deleted).
    Gone,
}

/// What reconciliation noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The stream ends where the cursor says.
    InStep,
    /// The stream holds events after the cursor (acknowledged, not recorded before a crash); the
    /// cursor moves up to them.
    CaughtUp,
    /// The stream holds messages after the recorded sequence but its last one is gone, so where
    /// they end is unknown; publishing resumes after the cursor.
    TailGone,
    /// The stream's last sequence is below the recorded one: it lost acknowledged messages or was
    /// deleted and recreated. `republish`: its last message was found and is behind the cursor, so
    /// the cursor goes back to it and the lost tail is published again.
    Regressed {
        /// Whether the cursor goes back so that the lost events are published again.
        republish: bool,
    },
}

/// Where publishing resumes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The cursor to publish after, and the stream sequence the next publish expects.
    pub resume: Recorded,
    /// What was noticed.
    pub finding: Finding,
}

/// Reconciliation's decision: `recorded` is the durable cursor, `stream_last` the stream's last
/// sequence (from its info), `last` what its last message says. The next publish always expects
/// `stream_last`, the stream's own state, so the fence holds whatever the cursor says; only the
/// position to resume after is decided here.
pub fn plan(recorded: Recorded, stream_last: u64, last: LastMessage) -> Plan {
    let resume = |position: Position| Recorded {
        position,
        stream_sequence: stream_last,
    };
    if stream_last < recorded.stream_sequence {
        return match last {
            LastMessage::At(position) if position < recorded.position => Plan {
                resume: resume(position),
                finding: Finding::Regressed { republish: true },
            },
            LastMessage::At(position) => Plan {
                resume: resume(position.max(recorded.position)),
                finding: Finding::Regressed { republish: false },
            },
            LastMessage::Empty | LastMessage::Gone => Plan {
                resume: resume(recorded.position),
                finding: Finding::Regressed { republish: false },
            },
        };
    }
    match last {
        LastMessage::At(position) if position > recorded.position => Plan {
            resume: resume(position),
            finding: Finding::CaughtUp,
        },
        LastMessage::Gone if stream_last > recorded.stream_sequence => Plan {
            resume: resume(recorded.position),
            finding: Finding::TailGone,
        },
        LastMessage::At(_) | LastMessage::Empty | LastMessage::Gone => Plan {
            resume: resume(recorded.position),
            finding: Finding::InStep,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64, stream_sequence: u64) -> Recorded {
        Recorded {
            position: Position::new(position, 0),
            stream_sequence,
        }
    }

    #[test]
    fn only_no_message_found_means_the_last_message_is_gone() {
        assert!(lookup_found_nothing(&RawMessageErrorKind::NoMessageFound));
        // A timed-out or failed request (what a restart, a partition or a refused permission
        // looks like) is not an answer about the message.
        assert!(!lookup_found_nothing(&RawMessageErrorKind::Other));
        assert!(!lookup_found_nothing(&RawMessageErrorKind::InvalidSubject));
        let unavailable: jetstream::Error = serde_json::from_str(
            r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#,
        )
        .unwrap();
        assert!(!lookup_found_nothing(&RawMessageErrorKind::JetStream(
            unavailable
        )));
    }

    #[test]
    fn a_stream_in_step_with_the_cursor_resumes_at_the_cursor_on_the_streams_sequence() {
        let recorded = at(50, 7);
        for last in [LastMessage::At(Position::new(50, 0)), LastMessage::Gone] {
            assert_eq!(
                plan(recorded, 7, last),
                Plan {
                    resume: recorded,
                    finding: Finding::InStep
                }
            );
        }
        assert_eq!(
            plan(at(0, 0), 0, LastMessage::Empty),
            Plan {
                resume: at(0, 0),
                finding: Finding::InStep
            }
        );
    }

    #[test]
    fn acknowledged_but_unrecorded_events_move_the_cursor_up() {
        assert_eq!(
            plan(at(50, 7), 9, LastMessage::At(Position::new(70, 0))),
            Plan {
                resume: at(70, 9),
                finding: Finding::CaughtUp
            }
        );
        // A row from before the stream sequence was recorded (0) behaves the same.
        assert_eq!(
            plan(at(50, 0), 9, LastMessage::At(Position::new(70, 0))),
            Plan {
                resume: at(70, 9),
                finding: Finding::CaughtUp
            }
        );
    }

    #[test]
    fn a_gone_tail_after_the_record_resumes_at_the_cursor_but_keeps_the_fence() {
        assert_eq!(
            plan(at(50, 7), 9, LastMessage::Gone),
            Plan {
                resume: at(50, 9),
                finding: Finding::TailGone
            }
        );
    }

    #[test]
    fn a_stream_behind_its_acknowledgements_gets_the_lost_tail_again_when_its_end_is_known() {
        assert_eq!(
            plan(at(50, 9), 7, LastMessage::At(Position::new(30, 0))),
            Plan {
                resume: at(30, 7),
                finding: Finding::Regressed { republish: true }
            }
        );
        // Recreated empty, or its last message gone: where it ends is unknown; resume at the
        // cursor on the stream's own sequence.
        assert_eq!(
            plan(at(50, 9), 0, LastMessage::Empty),
            Plan {
                resume: at(50, 0),
                finding: Finding::Regressed { republish: false }
            }
        );
        assert_eq!(
            plan(at(50, 9), 7, LastMessage::Gone),
            Plan {
                resume: at(50, 7),
                finding: Finding::Regressed { republish: false }
            }
        );
    }
}
