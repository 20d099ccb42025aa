//! Prepared transactions: the one thing that can hold the event store's visibility horizon back
//! for ever.
//!
//! Readers only see positions below `pg_snapshot_xmin(pg_current_snapshot())` (guarantee 3), so
//! every running transaction of the cluster, in any database, holds them back until it ends.
//! `idle_in_transaction_session_timeout` ends Cairn's own stuck sessions, but a transaction left
//! prepared by `PREPARE TRANSACTION` (possible when `max_prepared_transactions > 0`) belongs to no
//! session: nothing ends it until someone runs `COMMIT PREPARED` or `ROLLBACK PREPARED`, and
//! meanwhile every projection, the relay and every read-your-writes wait stall.
//!
//! [`PreparedTransactions`] makes that visible: a readiness check that fails, naming the gid and
//! its age, once one is older than a threshold, and gauges on `/metrics`. What the operator does
//! is in `docs/ARCHITECTURE.md` ("Prepared transactions").

use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The age past which a prepared transaction makes a service not ready: the idle-in-transaction
/// timeout Cairn's own sessions get ([`crate::IDLE_IN_TRANSACTION_TIMEOUT`], 10 s). A prepared
/// transaction older than that is one PostgreSQL would have ended, had it not been prepared;
/// readers have been held back at least that long.
pub const PREPARED_TRANSACTION_MAX_AGE: Duration = crate::IDLE_IN_TRANSACTION_TIMEOUT;

/// The longest a check waits for PostgreSQL before it reports the check itself as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One transaction of the cluster left prepared (a row of `pg_prepared_xacts`).
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedTransaction {
    /// Its global identifier, the name `COMMIT PREPARED` / `ROLLBACK PREPARED` take.
    pub gid: String,
    /// The database it ran in.
    pub database: String,
    /// The role that prepared it.
    pub owner: String,
    /// How long ago it was prepared (by PostgreSQL's clock).
    pub age: Duration,
}

/// Every prepared transaction of the cluster, oldest first.
pub async fn prepared_transactions(pool: &PgPool) -> Result<Vec<PreparedTransaction>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT gid, database::text, owner::text, \
                greatest(0, extract(epoch FROM clock_timestamp() - prepared))::float8 \
           FROM pg_prepared_xacts ORDER BY prepared",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PreparedTransaction {
                gid: row.try_get(0)?,
                database: row.try_get(1)?,
                owner: row.try_get(2)?,
                age: Duration::from_secs_f64(row.try_get::<f64, _>(3)?.max(0.0)),
            })
        })
        .collect()
}

/// A service's watch on prepared transactions: a readiness check and two gauges,
/// `cairn_prepared_transactions` (how many the cluster holds) and
/// `cairn_prepared_transactions_oldest_age_seconds` (0 when none), read from PostgreSQL whenever
/// the check runs or `/metrics` is scraped.
#[derive(Clone, Debug)]
pub struct PreparedTransactions {
    pool: PgPool,
    max_age: Duration,
    count: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
}

impl PreparedTransactions {
    /// The watch over `pool`'s cluster; the check fails once a prepared transaction is older than
    /// `max_age`.
    pub fn new(pool: PgPool, max_age: Duration) -> Self {
        Self {
            pool,
            max_age,
            count: Gauge::default(),
            oldest_age: Gauge::default(),
        }
    }

    /// Registers the gauges.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cairn_prepared_transactions",
            "Transactions of the PostgreSQL cluster left prepared (PREPARE TRANSACTION)",
            self.count.clone(),
        );
        registry.register(
            "cairn_prepared_transactions_oldest_age_seconds",
            "Age of the oldest prepared transaction (0 when none); it holds every event reader back",
            self.oldest_age.clone(),
        );
    }

    /// Reads the prepared transactions and updates the gauges.
    pub async fn refresh(&self) -> Result<Vec<PreparedTransaction>, String> {
        let prepared = tokio::time::timeout(CHECK_TIMEOUT, prepared_transactions(&self.pool))
            .await
            .map_err(|_| format!("pg_prepared_xacts did not answer within {CHECK_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot read pg_prepared_xacts: {e}"))?;
        self.count.set(i64::try_from(prepared.len()).unwrap_or(i64::MAX));
        self.oldest_age
            .set(prepared.first().map_or(0.0, |p| p.age.as_secs_f64()));
        Ok(prepared)
    }

    /// The readiness check: `Err` naming every prepared transaction older than the threshold
    /// (gid, database, owner, age) and what it does.
    pub async fn check(&self) -> Result<(), String> {
        let prepared = self.refresh().await?;
        let stuck: Vec<String> = prepared
            .iter()
            .filter(|p| p.age > self.max_age)
            .map(|p| {
                format!(
                    "'{}' (database {}, owner {}, prepared {:.1} s ago)",
                    p.gid,
                    p.database,
                    p.owner,
                    p.age.as_secs_f64()
                )
            })
            .collect();
        if stuck.is_empty() {
            return Ok(());
        }
        let stuck = stuck.join(", ");
        tracing::warn!(prepared = %stuck, "a prepared transaction holds back the event store");
        Err(format!(
            "prepared transactions older than {} s hold back every event reader (projections, relay, \
             read-your-writes waits) until they are ended with COMMIT PREPARED or ROLLBACK PREPARED: {stuck}",
            self.max_age.as_secs()
        ))
    }

    /// [`Self::check`] as a readiness closure (`cairn_telemetry::Readiness::with`).
    pub fn readiness(&self) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
        let this = self.clone();
        move || {
            let this = this.clone();
            async move { this.check().await }.boxed()
        }
    }

    /// [`Self::refresh`] as a hook run before `/metrics` is encoded
    /// (`cairn_telemetry::ops_router_refreshing`); a failure leaves the gauges as they were.
    pub fn refresher(&self) -> Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync> {
        let this = self.clone();
        Arc::new(move || {
            let this = this.clone();
            async move {
                if let Err(error) = this.refresh().await {
                    tracing::debug!(%error, "prepared-transaction gauges not refreshed");
                }
            }
            .boxed()
        })
    }
}
