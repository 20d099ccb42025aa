//! LISTEN loops against a server that refuses them: a TCP proxy in front of PostgreSQL counts the
//! connections made through it and, while told to, cuts every connection that sends `LISTEN`.
//! A loop that reconnects without a backoff makes hundreds of connections a second; with one it
//! makes a handful.

use cairn_eventstore::CommitListener;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy to the test PostgreSQL server.
pub struct Proxy {
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// While set, a connection whose client sends `LISTEN` is cut before it reaches the server.
    pub refuse_listen: Arc<AtomicBool>,
    /// Options that connect through the proxy.
    pub options: PgConnectOptions,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Self {
        let upstream = PgConnectOptions::from_str(&cairn_testkit::admin_url()).unwrap();
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let refuse_listen = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let connections = connections.clone();
            let refuse_listen = refuse_listen.clone();
            async move {
                let mut pipes = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    pipes.spawn(pipe(client, target.clone(), refuse_listen.clone()));
                }
            }
        });
        Self {
            connections,
            refuse_listen,
            options: upstream.host("127.0.0.1").port(port),
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, target: String, refuse_listen: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0_u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            if refuse_listen.load(Ordering::SeqCst) && chunk.windows(6).any(|w| w == b"LISTEN") {
                return; // both sockets close
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Connections made through `proxy` during `window`, with the loop already running.
async fn connections_during(proxy: &Proxy, window: Duration) -> usize {
    let before = proxy.connections();
    tokio::time::sleep(window).await; // the measurement interval, not a wait for a condition
    proxy.connections() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_listener_whose_listen_fails_backs_off_instead_of_spinning() {
    let proxy = Proxy::start().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(proxy.options.clone());
    let shutdown = CancellationToken::new();
    let listener = CommitListener::start(pool, shutdown.clone());
    cairn_testkit::eventually("a first LISTEN attempt", Duration::from_secs(10), || async {
        Ok((proxy.connections() > 0).then_some(()))
    })
    .await
    .unwrap();
    let made = connections_during(&proxy, Duration::from_millis(1500)).await;
    eprintln!("MEASURED connections in 1.5 s while LISTEN fails: {made}");
    // With a backoff from 100 ms doubling (jittered between half and all of each step), at most
    // about five attempts fit in 1.5 s; without one, every attempt follows the last at once.
    assert!(made <= 8, "{made} connections in 1.5 s: the loop spins");
    assert!(made >= 1, "the loop stopped retrying");

    // Once the server takes LISTEN again, the loop gets there and announcements flow.
    proxy.refuse_listen.store(false, Ordering::SeqCst);
    let announced = listener.subscribe();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cairn_testkit::admin_url())
        .await
        .unwrap();
    cairn_testkit::eventually(
        "an announcement through the listener",
        Duration::from_secs(15),
        || async {
            sqlx::query("SELECT pg_notify($1, '42')")
                .bind(cairn_eventstore::NOTIFY_CHANNEL)
                .execute(&admin)
                .await?;
            Ok((*announced.borrow() == 42).then_some(()))
        },
    )
    .await
    .unwrap();
    shutdown.cancel();
}
