//! Wake-ups on commit. [`CommitListener`] `LISTEN`s on [`crate::NOTIFY_CHANNEL`] and publishes the
//! highest announced transaction position on a `watch` channel that any number of tailing readers
//! (the relay, `SubscribeEvents` streams, projections) await instead of polling in a tight loop.
//!
//! Notifications are hints, never the data: a reader always reads the store itself, and also
//! re-reads on a slow fallback timer, so a notification lost while the listener reconnects only
//! delays it.

use crate::NOTIFY_CHANNEL;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::watch;
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
        tokio::spawn(listen(pool, tx, shutdown));
        Self { rx }
    }

    /// A receiver whose value is the highest transaction position announced so far; it changes on
    /// every announcement.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.rx.clone()
    }
}

async fn listen(pool: PgPool, tx: watch::Sender<i64>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot connect the commit listener; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {} // retry backoff
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(%error, "cannot LISTEN for commits; retrying");
            continue;
        }
        backoff = Duration::from_millis(100);
        // Whatever was missed while (re)connecting is found by the readers' next read.
        tx.send_modify(|_| {});
        loop {
            tokio::select! {
                notification = listener.recv() => match notification {
                    Ok(notification) => {
                        let position = notification.payload().parse::<i64>().unwrap_or(0);
                        tx.send_modify(|latest| *latest = (*latest).max(position));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "commit listener lost its connection; reconnecting");
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
