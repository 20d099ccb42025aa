//! `cairn`: the operator's command line.

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Operate a Cairn installation.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The PostgreSQL database that holds Cairn's event store and read models.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies every pending migration (idempotent; services also do this at start).
    ///
    /// Example: CAIRN_DATABASE_URL=postgres://postgres@127.0.0.1/cairn cairn migrate
    Migrate {
        /// Create the database first if it does not exist.
        #[arg(long)]
        create_database: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { create_database } => migrate(&cli.database_url, create_database).await,
    }
}

async fn migrate(url: &str, create_database: bool) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    if create_database
        && !sqlx::Postgres::database_exists(url)
            .await
            .context("checking the database")?
    {
        sqlx::Postgres::create_database(url)
            .await
            .context("creating the database")?;
        eprintln!("created the database");
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| "connecting to CAIRN_DATABASE_URL")?;
    cairn_migrations::run(&pool)
        .await
        .context("applying migrations")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await?;
    eprintln!("migrations applied: {applied}");
    Ok(())
}
