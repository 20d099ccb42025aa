//! The senders: workers that claim due deliveries, compose, send over SMTP and record the outcome.
//!
//! One attempt of a claimed delivery:
//! 1. the SMTP settings of its instance (or the defaults); none or unusable → transient;
//! 2. compose ([`crate::compose`]): skipped when the code was superseded, voided, verified, expired
//!    or the user is gone; the code is decrypted in memory only;
//! 3. send ([`crate::transport`]) under the claim: renewed while connecting, `MAIL FROM` and
//!    `RCPT TO`, confirmed once more right before `DATA` (a sender whose claim was taken over
//!    never sends the body), `DATA` bounded to end within the renewed claim; the server's answer
//!    decides: accepted → `sent`; a 5xx → `failed` at once; anything else (no connection,
//!    timeout, TLS, 4xx) → `pending` again after an exponential backoff with jitter, and `failed`
//!    once the attempts are used up.
//!
//! Workers wait on the intake's commit notifications (`cairn_projections`, payload
//! `notifications:...`), on the time the next retry is due, and on a slow poll as a safety net.
//! Logs carry the event id, instance, user and attempt, never the code, the address's message or
//! a password.

use crate::compose::{ComposeError, Composer};
use crate::config::Config;
use crate::deliveries::{self, Claimed, FinalStatus};
use crate::intake::PROJECTION_NAME;
use crate::smtp;
use crate::transport::{SendError, Server, Transports};
use cairn_domain::Clock;
use cairn_eventstore::{Heard, PgEventStore};
use cairn_mail::Templates;
use lettre::address::Envelope;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::metrics::NotifierMetrics;

/// Exponential backoff with jitter: attempt `n` (1-based) waits between half and all of
/// `base * 2^(n-1)`, capped at `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after attempt `attempt`, with `jitter` drawn uniformly from `[0, 1)`.
    pub fn delay(&self, attempt: i32, jitter: f64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .base
            .saturating_mul(2_u32.saturating_pow(doublings))
            .min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Test hooks.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// When set, the sender that gets the n-th SMTP acceptance (counting down to zero) stops right
    /// after it, before recording it, as if the process had died between the server's `250` and
    /// the database update. The worker exits; its claim stays until it expires.
    pub crash_after_accepts: Option<Arc<AtomicI64>>,
}

/// What the senders need.
#[derive(Clone)]
pub struct Sender {
    /// PostgreSQL.
    pub pool: PgPool,
    /// The event store.
    pub store: PgEventStore,
    /// The keys (SMTP passwords, codes, personal data).
    pub vault: cairn_personal::Vault,
    /// The templates.
    pub templates: Arc<Templates>,
    /// Settings (SMTP defaults, attempts, backoff, claim TTL, poll).
    pub config: Arc<Config>,
    /// SMTP transports.
    pub transports: Transports,
    /// Metrics.
    pub metrics: NotifierMetrics,
    /// The clock (code expiry, message date).
    pub clock: Arc<dyn Clock>,
    /// This replica's claim owner id.
    pub owner: Uuid,
    /// Randomness for the backoff jitter: a value in `[0, 1)`.
    pub jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
    /// Test hooks.
    pub hooks: Hooks,
}

enum Worked {
    Did,
    Idle,
    Crashed,
}

/// What became of one send.
enum Sent {
    /// The server accepted the message; its reply (`250 ...`).
    Accepted(String),
    /// Worth trying again: no connection, a timeout, a TLS failure, a 4xx reply.
    Transient(String),
    /// Not worth trying again: a 5xx reply (unknown recipient, rejected sender, failed AUTH).
    Permanent(String),
    /// Another sender took the delivery over before `DATA`; nothing was sent.
    ClaimLost,
}

impl Sent {
    fn failed(error: &SendError) -> Self {
        if error.is_permanent() {
            Self::Permanent(error.to_string())
        } else {
            Self::Transient(error.to_string())
        }
    }
}

/// Time kept free at the end of a renewed claim for recording the outcome: `DATA` and the final
/// reply must be over this long before the claim could expire.
const CLAIM_MARGIN: Duration = Duration::from_secs(1);

/// Said of a send cut off while the message may have reached the server.
const UNCONFIRMED: &str =
    "; the server may have accepted the message, so the next attempt can deliver a second copy";

impl Sender {
    /// Runs the wake-up listener, the queue-depth gauge and `concurrency` workers until
    /// `shutdown`; in-flight sends finish and are recorded first.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(listen(self.clone(), wake.clone(), shutdown.clone()));
        tasks.spawn(measure_queue(self.clone(), shutdown.clone()));
        for worker in 0..self.config.concurrency {
            tasks.spawn(self.clone().work(worker, wake.clone(), shutdown.clone()));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a sender task panicked");
            }
        }
    }

    async fn work(self, worker: usize, wake: Arc<Notify>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            // Registered before looking, so a wake-up between the look and the wait is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pause = match self.work_once().await {
                Ok(Worked::Did) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Worked::Crashed) => {
                    tracing::warn!(
                        worker,
                        "sender stopped by the crash hook after an SMTP acceptance"
                    );
                    return;
                }
                Ok(Worked::Idle) => {
                    backoff = Duration::from_millis(100);
                    match deliveries::next_due_in(&self.pool).await {
                        Ok(Some(due)) => due.min(poll),
                        _ => poll,
                    }
                }
                Err(error) => {
                    tracing::warn!(worker, %error, "claiming deliveries failed; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(pause) => {} // poll_interval / next retry due / error backoff
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn work_once(&self) -> Result<Worked, sqlx::Error> {
        let claimed = deliveries::claim(&self.pool, self.owner, 1, self.config.claim_ttl()).await?;
        let Some(delivery) = claimed.into_iter().next() else {
            return Ok(Worked::Idle);
        };
        Ok(self.attempt(delivery).await)
    }

    #[tracing::instrument(
        name = "notifier.deliver",
        skip_all,
        fields(event_id = %delivery.event_id, instance = %delivery.instance_id, user = %delivery.user_id, attempt = delivery.attempts)
    )]
    async fn attempt(&self, delivery: Claimed) -> Worked {
        let settings = match smtp::settings_for(
            &self.pool,
            self.vault.keyring(),
            &self.config,
            delivery.instance_id,
        )
        .await
        {
            Ok(settings) => settings,
            Err(error) => {
                self.transient(&delivery, &error.to_string(), None).await;
                return Worked::Did;
            }
        };
        let composer = Composer {
            pool: &self.pool,
            store: &self.store,
            vault: &self.vault,
            templates: &self.templates,
            now: self.clock.now(),
        };
        let composed = match composer.compose(&delivery, &settings).await {
            Ok(Ok(composed)) => composed,
            Ok(Err(skip)) => {
                tracing::info!(reason = skip.reason(), "delivery skipped");
                self.metrics.skipped.inc();
                self.record_final(&delivery, FinalStatus::Skipped, skip.reason(), None)
                    .await;
                return Worked::Did;
            }
            Err(ComposeError::Transient(error)) => {
                self.transient(&delivery, &error, None).await;
                return Worked::Did;
            }
            Err(ComposeError::Permanent(error)) => {
                self.permanent(&delivery, &error, None).await;
                return Worked::Did;
            }
        };
        for warning in &composed.warnings {
            tracing::warn!(warning = %warning, "message composed with a fallback");
        }
        let server = match self.transports.get(&settings) {
            Ok(server) => server,
            Err(error) => {
                let error = format!("SMTP settings unusable: {error}");
                self.transient(&delivery, &error, None).await;
                return Worked::Did;
            }
        };
        let envelope = composed.message.envelope().clone();
        let body = composed.message.formatted();
        match self.send(&delivery, &server, &envelope, &body).await {
            Sent::Accepted(reply) => {
                if let Some(countdown) = &self.hooks.crash_after_accepts
                    && countdown.fetch_sub(1, Ordering::SeqCst) == 1
                {
                    return Worked::Crashed;
                }
                let latency = (self.clock.now() - delivery.event_created_at)
                    .to_std()
                    .unwrap_or_default();
                self.metrics.event_to_accept.observe(latency.as_secs_f64());
                self.metrics.sent.inc();
                self.record_sent(&delivery, &composed.language, &reply).await;
                tracing::info!(language = %composed.language, reply = %reply, "message accepted");
            }
            Sent::Transient(error) => {
                self.transient(&delivery, &error, Some(&error)).await;
            }
            Sent::Permanent(error) => {
                self.permanent(&delivery, &error, Some(&error)).await;
            }
            Sent::ClaimLost => {
                // The other sender records the outcome; this one sent nothing and records nothing.
                self.metrics.claims_lost.inc();
                tracing::warn!("another sender took the delivery over; this one did not send the message");
            }
        }
        Worked::Did
    }

    /// One SMTP transaction under the claim, bounded by `CAIRN_SMTP_SEND_TIMEOUT_SECS`:
    /// 1. connect and send `MAIL FROM`/`RCPT TO` while the claim is renewed every third of its TTL;
    /// 2. renew the claim once more and check that it is still this sender's: if another sender
    ///    took the delivery over, the transaction is dropped and the message body is never sent;
    /// 3. `DATA` and the message, which must end before the renewed claim could expire (the
    ///    configuration guarantees room for two command timeouts and a second to record).
    async fn send(&self, delivery: &Claimed, server: &Arc<Server>, envelope: &Envelope, body: &[u8]) -> Sent {
        let ttl = self.config.claim_ttl();
        let send_timeout = self.config.smtp_send_timeout();
        let deadline = Instant::now() + send_timeout;
        let too_long =
            format!("the send did not finish within {send_timeout:?} (CAIRN_SMTP_SEND_TIMEOUT_SECS)");
        let open = tokio::time::timeout_at(deadline, server.open(envelope, body.is_ascii()));
        let transaction = match self.keeping_claim(delivery, open).await {
            None => return Sent::ClaimLost,
            Some(Err(_elapsed)) => return Sent::Transient(too_long),
            Some(Ok(Err(error))) => return Sent::failed(&error),
            Some(Ok(Ok(transaction))) => transaction,
        };
        // Taken before the renewal, so the local deadline ends no later than the renewed claim.
        let confirmed_at = Instant::now();
        match deliveries::renew_claim(&self.pool, delivery.event_id, self.owner, ttl).await {
            Ok(true) => {}
            Ok(false) => return Sent::ClaimLost,
            Err(error) => {
                return Sent::Transient(format!(
                    "could not confirm the claim before DATA, so the message was not sent: {error}"
                ));
            }
        }
        let data_deadline = deadline.min(confirmed_at + ttl.saturating_sub(CLAIM_MARGIN));
        match tokio::time::timeout_at(data_deadline, transaction.data(body)).await {
            Ok(Ok(reply)) => Sent::Accepted(reply),
            Ok(Err(error)) => Sent::failed(&error),
            Err(_elapsed) => {
                let limit = if data_deadline < deadline {
                    format!(
                        "DATA and the final reply did not end within the claim ({ttl:?} less {CLAIM_MARGIN:?})"
                    )
                } else {
                    too_long
                };
                Sent::Transient(format!("{limit}{UNCONFIRMED}"))
            }
        }
    }

    /// Runs `work` while renewing the claim every third of its TTL; `None` (and `work` dropped)
    /// when a renewal finds that another sender has taken the delivery over. A renewal that fails
    /// on the database is tried again at the next tick: the claim lapses only if the database stays
    /// out of reach for most of a TTL, and then the check before `DATA` stops this sender.
    async fn keeping_claim<F: Future>(&self, delivery: &Claimed, work: F) -> Option<F::Output> {
        let ttl = self.config.claim_ttl();
        let every = (ttl / 3).max(Duration::from_millis(100));
        let renew = async {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await; // renewal interval
                match deliveries::renew_claim(&self.pool, delivery.event_id, self.owner, ttl).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => tracing::warn!(%error, "could not renew the claim; trying again"),
                }
            }
        };
        tokio::select! {
            output = work => Some(output),
            () = renew => None,
        }
    }

    async fn transient(&self, delivery: &Claimed, error: &str, reply: Option<&str>) {
        if delivery.attempts >= self.config.max_attempts {
            let reason = format!("gave up after {} attempts: {error}", delivery.attempts);
            tracing::warn!(error = %error, "delivery failed for good: attempts used up");
            self.metrics.failed.inc();
            self.record_final(delivery, FinalStatus::Failed, &reason, reply)
                .await;
            return;
        }
        let backoff = crate::sender::Backoff {
            base: Duration::from_millis(self.config.backoff_base_ms),
            max: Duration::from_millis(self.config.backoff_max_ms),
        };
        let delay = backoff.delay(delivery.attempts, (self.jitter)());
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
        self.metrics.retries.inc();
        match deliveries::mark_retry(&self.pool, delivery.event_id, self.owner, delay, error, reply).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the claim was taken over before the retry was recorded"),
            Err(error) => {
                tracing::warn!(%error, "could not record the retry; the claim expires and it is retried")
            }
        }
    }

    async fn permanent(&self, delivery: &Claimed, error: &str, reply: Option<&str>) {
        tracing::warn!(error = %error, "delivery failed permanently; not retried");
        self.metrics.failed.inc();
        self.record_final(delivery, FinalStatus::Failed, error, reply)
            .await;
    }

    async fn record_final(&self, delivery: &Claimed, status: FinalStatus, reason: &str, reply: Option<&str>) {
        match deliveries::mark_final(&self.pool, delivery.event_id, self.owner, status, reason, reply).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the claim was taken over before the outcome was recorded"),
            Err(error) => {
                tracing::warn!(%error, "could not record the outcome; the claim expires and it is retried")
            }
        }
    }

    /// Records an accepted message, retrying the database a few times: until it is recorded, an
    /// expired claim would send the message again.
    async fn record_sent(&self, delivery: &Claimed, language: &str, reply: &str) {
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=6 {
            match deliveries::mark_sent(&self.pool, delivery.event_id, language, reply).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!("the delivery was already final when its acceptance was recorded");
                    return;
                }
                Err(error) if attempt < 6 => {
                    tracing::warn!(%error, attempt, "could not record the acceptance; retrying");
                    tokio::time::sleep(pause).await; // retry backoff
                    pause *= 2;
                }
                Err(error) => {
                    tracing::error!(%error, "could not record the acceptance; the message may be sent again once the claim expires");
                }
            }
        }
    }
}

/// Wakes the workers when the intake commits (its `NOTIFY` on `cairn_projections`), and after
/// every (re)connection of the listener, since commits may have been missed meanwhile.
async fn listen(sender: Sender, wake: Arc<Notify>, shutdown: CancellationToken) {
    let prefix = format!("{PROJECTION_NAME}:");
    cairn_eventstore::listen_forever(
        &sender.pool,
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

/// Keeps the queue-depth gauge current.
async fn measure_queue(sender: Sender, shutdown: CancellationToken) {
    let every = Duration::from_millis(sender.config.poll_ms).max(Duration::from_millis(500));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {} // gauge interval
            _ = shutdown.cancelled() => return,
        }
        if let Ok(depth) = deliveries::queue_depth(&sender.pool).await {
            sender.metrics.queue_depth.set(depth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(2, 1.0), Duration::from_secs(4));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(6));
        assert_eq!(backoff.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(1000, 0.0), Duration::from_secs(30));
        assert_eq!(backoff.delay(0, 1.0), Duration::from_secs(2));
        for attempt in 1..12 {
            for jitter in [0.0, 0.3, 0.99] {
                let d = backoff.delay(attempt, jitter);
                assert!(d >= backoff.delay(attempt, 0.0) && d <= backoff.delay(attempt, 1.0));
            }
        }
    }
}
