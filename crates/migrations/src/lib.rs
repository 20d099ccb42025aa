//! The schema of every Cairn table, as the forward-only SQL files in the repository's
//! `migrations/` folder, embedded at compile time. Services apply them idempotently at start and
//! the `migrate` subcommand applies them on demand; sqlx records each applied file in
//! `_sqlx_migrations` and holds an advisory lock while migrating, so replicas starting together
//! do not race.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// All migrations, in order.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies every migration that has not been applied yet.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
