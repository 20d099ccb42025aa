//! The schema of every Cairn table, as the forward-only SQL files in the repository's
//! `migrations/` folder, embedded at compile time. Services apply them idempotently at start and
//! the `migrate` subcommand applies them on demand; sqlx records each applied file in
//! `_sqlx_migrations` and holds an advisory lock while migrating, so replicas starting together
//! do not race.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// All migrations, in order.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies every migration that has not been applied yet, then makes sure that new events get
/// positions above every stored one ([`raise_position_base`]): after a restore into another
/// PostgreSQL cluster, the first service that starts (or `cairn migrate`) fixes the positions
/// before anything is written.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await?;
    let base = raise_position_base(pool, 0)
        .await
        .map_err(MigrateError::Execute)?;
    if base.raised() {
        // Once per restore; this crate has no logger of its own, and a service's log collects
        // stderr too.
        eprintln!(
            "cairn: event positions raised (position base {} -> {}): the database holds positions above \
             this PostgreSQL cluster's transaction counter, as after a restore into another cluster",
            base.before, base.after
        );
    }
    Ok(())
}

/// The position base before and after [`raise_position_base`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionBase {
    /// The base found.
    pub before: i64,
    /// The base now; greater than `before` when it was raised.
    pub after: i64,
}

impl PositionBase {
    /// True when the base moved.
    pub fn raised(&self) -> bool {
        self.after > self.before
    }
}

/// An event's position is its transaction's id plus a base (`eventstore.position_base`).
/// Transaction ids belong to the PostgreSQL cluster: a database restored or replicated into
/// another cluster may hold positions far above the new cluster's counter. This raises the base,
/// when needed, so that every new position lies above every stored event and above `above` (for
/// example the last position the stream holds); it waits until every transaction that read the
/// old base has ended. Cheap and a no-op when the base is high enough. See docs/ARCHITECTURE.md,
/// "Positions across backup and restore".
pub async fn raise_position_base(pool: &PgPool, above: i64) -> Result<PositionBase, sqlx::Error> {
    let (before, after): (i64, i64) =
        sqlx::query_as("SELECT before, after FROM eventstore.raise_position_base($1)")
            .bind(above)
            .fetch_one(pool)
            .await?;
    Ok(PositionBase { before, after })
}
