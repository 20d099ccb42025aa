//! Named tasks of a service, drained in order: workers (which watch the shutdown token) first,
//! servers (which get their own stop token) after every worker has ended. A task that ends with an
//! error, or a server that ends before shutdown, cancels the shutdown token: the service stops as a
//! whole and [`Service::wait`] returns the first error.

use anyhow::anyhow;
use std::collections::HashMap;
use std::future::Future;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

type Outcome = anyhow::Result<()>;

/// The tasks of a runtime being assembled.
pub(crate) struct Tasks {
    shutdown: CancellationToken,
    servers_stop: CancellationToken,
    workers: JoinSet<Outcome>,
    servers: JoinSet<Outcome>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            servers_stop: CancellationToken::new(),
            workers: JoinSet::new(),
            servers: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    pub(crate) fn servers_stop(&self) -> CancellationToken {
        self.servers_stop.clone()
    }

    pub(crate) fn spawn_worker<F>(&mut self, name: &'static str, work: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let handle = self.workers.spawn(work);
        self.names.insert(handle.id(), name);
    }

    pub(crate) fn spawn_server<F>(&mut self, name: &'static str, serve: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let handle = self.servers.spawn(serve);
        self.names.insert(handle.id(), name);
    }

    pub(crate) fn into_service(self, name: &'static str) -> Service {
        Service { name, tasks: self }
    }
}

/// A started service. Dropping it aborts its tasks.
pub struct Service {
    name: &'static str,
    tasks: Tasks,
}

impl Service {
    /// Waits until the service has stopped: after shutdown, every worker has returned, then every
    /// server. Returns the first task error (a failed task also stops the service).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let t = &mut self.tasks;
        let mut first_error: Option<anyhow::Error> = None;
        loop {
            let drained = t.workers.is_empty();
            if drained && t.servers.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = t.workers.join_next_with_id(), if !t.workers.is_empty() => {
                    if let Some(error) = ended(&t.names, joined, "worker", &t.shutdown) {
                        t.shutdown.cancel();
                        first_error.get_or_insert(error);
                    }
                }
                Some(joined) = t.servers.join_next_with_id(), if !t.servers.is_empty() => {
                    if let Some(error) = ended(&t.names, joined, "server", &t.servers_stop) {
                        t.shutdown.cancel();
                        first_error.get_or_insert(error);
                    }
                }
                () = t.shutdown.cancelled(), if drained && !t.servers_stop.is_cancelled() => {
                    tracing::info!(service = self.name, "workers drained; stopping the servers");
                    t.servers_stop.cancel();
                }
            }
        }
        tracing::info!(service = self.name, "service stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Logs how a task ended; an error when it failed, panicked, or ended before `expected_stop`.
fn ended(
    names: &HashMap<Id, &'static str>,
    joined: Result<(Id, Outcome), tokio::task::JoinError>,
    kind: &str,
    expected_stop: &CancellationToken,
) -> Option<anyhow::Error> {
    let (name, outcome) = match joined {
        Ok((id, outcome)) => (names.get(&id).copied().unwrap_or("unnamed"), outcome),
        Err(error) => {
            let name = names.get(&error.id()).copied().unwrap_or("unnamed");
            (name, Err(anyhow!("task panicked or was aborted: {error}")))
        }
    };
    match outcome {
        Err(error) => {
            tracing::error!(task = name, kind, error = %format!("{error:#}"), "task failed");
            Some(error.context(format!("{kind} {name} failed")))
        }
        Ok(()) if !expected_stop.is_cancelled() => {
            tracing::error!(task = name, kind, "task ended before shutdown");
            Some(anyhow!("{kind} {name} ended before shutdown"))
        }
        Ok(()) => {
            tracing::debug!(task = name, kind, "task ended");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn log() -> Arc<Mutex<Vec<&'static str>>> {
        Arc::default()
    }

    #[tokio::test]
    async fn servers_stop_only_after_every_worker_has_drained() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let order = log();
        for name in ["worker-a", "worker-b"] {
            let (shutdown, order) = (shutdown.clone(), order.clone());
            tasks.spawn_worker(name, async move {
                shutdown.cancelled().await;
                // Finishing in-flight work takes a moment after the signal.
                tokio::task::yield_now().await;
                order.lock().unwrap().push(name);
                Ok(())
            });
        }
        let (stop, server_order) = (tasks.servers_stop(), order.clone());
        tasks.spawn_server("http", async move {
            stop.cancelled().await;
            server_order.lock().unwrap().push("http");
            Ok(())
        });
        let service = tasks.into_service("test");
        shutdown.cancel();
        service.wait().await.unwrap();
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "http", "the server stopped before a worker: {order:?}");
    }

    #[tokio::test]
    async fn a_failing_worker_stops_the_whole_service_with_its_error() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn_worker("relay", async { Err(anyhow!("nats is gone")) });
        let (stop, waiting) = (tasks.servers_stop(), shutdown.clone());
        tasks.spawn_server("grpc", async move {
            stop.cancelled().await;
            Ok(())
        });
        let error = tasks.into_service("test").wait().await.unwrap_err();
        assert!(
            waiting.is_cancelled(),
            "the failure must cancel the shutdown token"
        );
        assert!(
            format!("{error:#}").contains("worker relay failed: nats is gone"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn a_server_that_ends_before_shutdown_is_an_error() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn_server("http", async { Ok(()) });
        let error = tasks.into_service("test").wait().await.unwrap_err();
        assert!(
            format!("{error:#}").contains("server http ended before shutdown"),
            "{error:#}"
        );
    }
}
