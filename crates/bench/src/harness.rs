//! What every benchmark group shares: settings, a throw-away database, timed closed-loop workers
//! and the `BENCH` output line.

use anyhow::Context;
use hdrhistogram::Histogram;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Settings from the environment.
pub struct Settings {
    /// The PostgreSQL server (any database on it); a bench database is created beside.
    pub admin_url: String,
    /// How long each measured phase runs.
    pub phase: Duration,
    /// The NATS server.
    pub nats_url: String,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let admin_url = std::env::var("CAIRN_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let seconds: f64 = std::env::var("CAIRN_BENCH_SECONDS")
            .ok()
            .map(|s| s.parse())
            .transpose()
            .context("CAIRN_BENCH_SECONDS must be a number")?
            .unwrap_or(5.0);
        Ok(Self {
            admin_url,
            phase: Duration::from_secs_f64(seconds),
            nats_url: std::env::var("CAIRN_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
        })
    }
}

/// Prints one figure.
pub fn bench(key: &str, value: f64) {
    if value >= 100.0 {
        println!("BENCH {key} {value:.0}");
    } else {
        println!("BENCH {key} {value:.2}");
    }
}

/// A migrated database that is dropped by [`BenchDb::drop_db`].
pub struct BenchDb {
    name: String,
    admin: PgConnectOptions,
    pub pool: PgPool,
}

impl BenchDb {
    pub async fn create(settings: &Settings, max_connections: u32) -> anyhow::Result<Self> {
        let admin = PgConnectOptions::from_str(&settings.admin_url)?;
        let name = format!("cairn_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.clone().connect().await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(max_connections)
            .connect_with(admin.clone().database(&name))
            .await?;
        cairn_migrations::run(&pool).await?;
        Ok(Self { name, admin, pool })
    }

    /// A URL that connects to the database (for services started in the benchmark).
    pub fn url(&self) -> String {
        self.admin.clone().database(&self.name).to_url_lossy().to_string()
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut conn = self.admin.connect().await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

/// The outcome of a closed-loop run.
pub struct Run {
    /// How long the run took.
    pub elapsed: Duration,
    /// Latency of each operation, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Run {
    /// Operations completed per second.
    pub fn ops_per_s(&self) -> f64 {
        self.latency_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn merge(&mut self, other: Run) -> anyhow::Result<()> {
        self.elapsed += other.elapsed;
        self.latency_us.add(other.latency_us)?;
        Ok(())
    }

    pub fn p(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Runs `a` and `b` alternately, `rounds` times each, for `phase` in all per side, so that drift
/// over the run (table growth, checkpoints, the other core's load) affects both alike.
pub async fn interleaved<FA, FutA, FB, FutB>(
    concurrency: usize,
    phase: Duration,
    rounds: u32,
    a: FA,
    b: FB,
) -> anyhow::Result<(Run, Run)>
where
    FA: Fn(usize, u64) -> FutA + Clone + Send + 'static,
    FutA: Future<Output = anyhow::Result<()>> + Send,
    FB: Fn(usize, u64) -> FutB + Clone + Send + 'static,
    FutB: Future<Output = anyhow::Result<()>> + Send,
{
    let slice = phase / rounds;
    let mut runs: Option<(Run, Run)> = None;
    for round in 0..rounds {
        let offset = u64::from(round) << 32;
        let ra = closed_loop(concurrency, slice, {
            let a = a.clone();
            move |w, i| a(w, offset + i)
        })
        .await?;
        let rb = closed_loop(concurrency, slice, {
            let b = b.clone();
            move |w, i| b(w, offset + i)
        })
        .await?;
        runs = Some(match runs {
            None => (ra, rb),
            Some((mut ta, mut tb)) => {
                ta.merge(ra)?;
                tb.merge(rb)?;
                (ta, tb)
            }
        });
    }
    runs.ok_or_else(|| anyhow::anyhow!("no rounds"))
}

/// Runs `concurrency` workers, each calling `op(worker, iteration)` back to back for `phase`.
pub async fn closed_loop<F, Fut>(concurrency: usize, phase: Duration, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + phase;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let op = op.clone();
        workers.spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut iteration = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(worker, iteration).await?;
                histogram.record(t.elapsed().as_micros() as u64)?;
                iteration += 1;
            }
            anyhow::Ok(histogram)
        });
    }
    let mut latency_us = Histogram::<u64>::new(3)?;
    while let Some(result) = workers.join_next().await {
        latency_us.add(result??)?;
    }
    Ok(Run {
        elapsed: start.elapsed(),
        latency_us,
    })
}

/// The relay's settings for a bench stream `name` (subjects `<name lower-cased>.events`).
pub fn relay_config(name: &str) -> cairn_eventstore_service::relay::RelayConfig {
    cairn_eventstore_service::relay::RelayConfig {
        stream_name: name.to_owned(),
        subject_prefix: format!("{}.events", name.to_lowercase()),
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(120),
        lease_ttl: Duration::from_secs(5),
        batch: 1000,
        fallback_poll: Duration::from_millis(500),
        abort_after_publishes: None,
    }
}

/// A relay publishing a bench database's events to a stream of its own, as the eventstore
/// service runs it.
pub struct BenchRelay {
    /// JetStream, for consumers and to delete the stream afterwards.
    pub js: async_nats::jetstream::Context,
    /// The stream (`BENCH_<label>_<8 hex>`).
    pub name: String,
    /// Its subject prefix.
    pub prefix: String,
    /// The relay, until `stop`.
    pub task: tokio::task::JoinHandle<Result<(), cairn_eventstore_service::relay::RelayError>>,
}

/// Starts a [`BenchRelay`] for `store` (on `pool`) that runs until `stop`.
pub async fn start_relay(
    settings: &Settings,
    pool: &PgPool,
    store: &cairn_eventstore::PgEventStore,
    label: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<BenchRelay> {
    let client = async_nats::connect(settings.nats_url.as_str()).await?;
    let js = async_nats::jetstream::new(client);
    let name = format!(
        "BENCH_{label}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    let config = relay_config(&name);
    let prefix = config.subject_prefix.clone();
    let commits = cairn_eventstore::CommitListener::start(pool.clone(), stop.clone());
    let relay = cairn_eventstore_service::relay::Relay::new(
        store.clone(),
        js.clone(),
        config,
        commits.subscribe(),
        cairn_eventstore_service::metrics::RelayMetrics::default(),
    );
    let task = tokio::spawn(relay.run(stop.clone()));
    Ok(BenchRelay {
        js,
        name,
        prefix,
        task,
    })
}
