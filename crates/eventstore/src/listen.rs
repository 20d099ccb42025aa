//! Wake-ups on commit. [`CommitListener`] `LISTEN`s on [`crate::NOTIFY_CHANNEL`] and publishes the
//! highest announced transaction position on a `watch` channel that any number of tailing readers
//! (the relay, `SubscribeEvents` streams, projections) await instead of polling in a tight loop.
//!
//! Notifications are hints, never the data: a reader always reads the store itself, and also
//! re-reads on a slow fallback timer, so a notification lost while the listener reconnects only
//! delays it.
//!
//! [`listen_forever`] is the one reconnecting `LISTEN` loop of the workspace (the commit listener,
//! the query crate's position waiter, `cairn-auth`'s token revocations): it backs off with
//! [`ReconnectBackoff`] when it cannot connect or `LISTEN`, or loses a connection soon after, and
//! tells its caller every time it is listening again, since notifications may have been missed.

use crate::NOTIFY_CHANNEL;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A running listener; clone [`CommitListener::subscribe`] receivers into readers.
#[derive(Debug)]
pub struct CommitListener {
    rx: watch::Receiver<i64>,
}

impl CommitListener {
    /// Starts listening with its own connection from `pool`'s options. The background task ends when
    /// `shutdown` is cancelled.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(async move {
            listen_forever(&pool, NOTIFY_CHANNEL, "commits", &shutdown, |heard| match heard {
                // Whatever was missed while (re)connecting is found by the readers' next read.
                Heard::Listening => tx.send_modify(|_| {}),
                Heard::Lost => {}
                Heard::Notification(notification) => {
                    let position = notification.payload().parse::<i64>().unwrap_or(0);
                    tx.send_modify(|latest| *latest = (*latest).max(position));
                }
            })
            .await;
        });
        Self { rx }
    }

    /// A receiver whose value is the highest transaction position announced so far; it changes on
    /// every announcement.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.rx.clone()
    }
}

/// Delays between attempts to (re)establish a `LISTEN`: the first step (100 ms) doubles up to the
/// longest (5 s); each delay is drawn between half and all of the current step, so replicas that
/// lost the server together do not come back in step.
#[derive(Clone, Debug)]
pub struct ReconnectBackoff {
    first: Duration,
    max: Duration,
    step: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl ReconnectBackoff {
    /// Steps from `first` doubling to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            step: first,
        }
    }

    /// The delay before the next attempt, with `jitter` in `[0, 1)` (clamped); the step doubles.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let delay = self.step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.step = self.step.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts again from the first step.
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    /// The longest step.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// What [`listen_forever`] hands its caller.
pub enum Heard<'a> {
    /// `LISTEN` is in place, on the first connection or again after a failure: notifications sent
    /// while not listening were missed, so anything they would have told must be re-read.
    Listening,
    /// A notification on the channel.
    Notification(&'a PgNotification),
    /// The `LISTEN` connection was lost: until the next [`Heard::Listening`], notifications are
    /// missed.
    Lost,
}

/// `LISTEN`s on `channel` with a connection from `pool` until `shutdown`, handing `on` every
/// [`Heard`] event. When connecting or `LISTEN` fails, or the connection is lost, it waits a
/// [`ReconnectBackoff`] delay (interrupted by `shutdown`) before trying again. The backoff starts
/// over only once a `LISTEN` has held for the longest step (5 s): a server that takes `LISTEN` and
/// drops the connection at once is not hammered either. `what` names the loop in log lines.
pub async fn listen_forever<F>(
    pool: &PgPool,
    channel: &str,
    what: &'static str,
    shutdown: &CancellationToken,
    mut on: F,
) where
    F: FnMut(Heard<'_>),
{
    let mut backoff = ReconnectBackoff::default();
    loop {
        let connect = async {
            let mut listener = PgListener::connect_with(pool).await?;
            // A lost connection surfaces here (`Ok(None)`) instead of a silent reconnection inside
            // sqlx, so the caller learns that notifications may have been missed.
            listener.eager_reconnect(false);
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            connected = connect => connected,
            _ = shutdown.cancelled() => return,
        };
        match connected {
            Err(error) => tracing::warn!(%error, listener = what, "cannot LISTEN; retrying after a backoff"),
            Ok(mut listener) => {
                let since = Instant::now();
                on(Heard::Listening);
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        _ = shutdown.cancelled() => return,
                    };
                    match received {
                        Ok(Some(notification)) => on(Heard::Notification(&notification)),
                        Ok(None) => {
                            tracing::warn!(listener = what, "lost the LISTEN connection; reconnecting");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, listener = what, "lost the LISTEN connection; reconnecting");
                            break;
                        }
                    }
                }
                on(Heard::Lost);
                if since.elapsed() >= backoff.max() {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {} // retry backoff
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_with_jitter_and_starts_over_on_reset() {
        let mut backoff = ReconnectBackoff::default();
        let full: Vec<Duration> = (0..8).map(|_| backoff.next_delay(1.0)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            full,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        backoff.reset();
        assert_eq!(
            backoff.next_delay(0.0),
            ms(50),
            "half the step at the least jitter"
        );
        assert_eq!(backoff.next_delay(0.5), ms(150));
        assert_eq!(backoff.next_delay(7.0), ms(400), "jitter is clamped");
        let mut backoff = ReconnectBackoff::default();
        for _ in 0..100 {
            let delay = backoff.next_delay(0.3);
            assert!(delay >= ms(50) && delay <= ms(5000), "{delay:?}");
        }
        // A cap below the first step is raised to it.
        let mut odd = ReconnectBackoff::new(ms(300), ms(100));
        assert_eq!((odd.next_delay(1.0), odd.next_delay(1.0)), (ms(300), ms(300)));
    }
}
