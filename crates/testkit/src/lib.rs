//! Fixtures for integration tests against the real PostgreSQL (and, later, NATS).
//!
//! Each test gets its own database, named `cairn_test_<uuid>`, created from the server given by
//! `CAIRN_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and migrated.
//! `scripts/test` drops leftovers of earlier runs. Conditions are awaited with [`eventually`], which
//! fails loudly at a deadline instead of sleeping a fixed time.

mod cluster;

pub use cluster::PrivateCluster;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

/// The server that test databases are created on.
pub fn admin_url() -> String {
    std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, migrated database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
    /// A pool connected to it.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates and migrates a database with a pool of up to `max_connections`.
    pub async fn new(max_connections: u32) -> anyhow::Result<Self> {
        let admin = PgConnectOptions::from_str(&admin_url())?;
        let name = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.clone().connect().await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let options = admin.database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        cairn_migrations::run(&pool).await?;
        Ok(Self { name, url, pool })
    }

    /// A separate connection to the database, outside the pool.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    /// Closes the pool and drops the database.
    pub async fn drop_db(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut conn = PgConnection::connect(&admin_url()).await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

/// The NATS server tests use (`CAIRN_TEST_NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    std::env::var("CAIRN_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A stream name and subject prefix of this test's own, so tests can share one NATS server.
pub fn unique_stream() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (format!("TEST_{id}"), format!("test_{id}.events"))
}

/// A minimal HTTP/1.1 GET for probing a service's ops endpoints: returns the status and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` until it returns `Some`, failing with `what` if `deadline` passes first. The pause
/// between polls is pacing, not a wait for correctness: the result is decided by `check`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await; // poll_interval
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
