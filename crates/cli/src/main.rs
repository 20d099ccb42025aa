//! `cairn`: the operator's command line. It talks to PostgreSQL directly (as the operator does),
//! never over the network APIs, so it works when the services are down.

mod instances;

use anyhow::Context;
use cairn_auth::tokens::{self, ListFilter};
use cairn_auth::{NewToken, Role, TokenKind};
use cairn_domain::{AggregateId, Clock, InstanceId, Position, SystemClock};
use cairn_eventstore::{CommitListener, EventFilter, EventStore, PgEventStore};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Operate a Cairn installation.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = "Examples:
  cairn migrate --create-database
  cairn init --token-file .run/secrets/admin.token
  cairn instances add --name \"Acme\" --org \"Acme HQ\"
  cairn instances list --json
  cairn system-token create --description \"provisioning portal\"
  cairn token create --principal <user id> --roles scim_provisioner --kind scim
  cairn projections status
  cairn projections reset users --wait
  cairn events tail --follow
  cairn personal-data seal
  cairn positions --above 123456789")]
struct Cli {
    /// The PostgreSQL database that holds Cairn's event store and read models.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    database_url: String,
    /// The services' encryption keys (`k1:<base64 32 bytes>[,...]`, as command-api's), for the
    /// commands that seal or open personal data: `init`, `instances add`, `personal-data`.
    #[arg(long, env = "CAIRN_KEYS", global = true, hide_env_values = true)]
    keys: Option<cairn_secrets::SecretString>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies every pending migration (idempotent; services also do this at start).
    Migrate {
        /// Create the database first if it does not exist.
        #[arg(long)]
        create_database: bool,
    },
    /// Creates the first instance (default organisation, admin machine user, admin token) unless
    /// one exists; prints the token once and writes it to a file readable only by you.
    ///
    /// Example: cairn init --name "Acme" --token-file admin.token
    Init {
        /// The instance's name.
        #[arg(long, default_value = "Cairn")]
        name: String,
        /// Where to write the admin token (mode 0600).
        #[arg(long, default_value = "admin.token")]
        token_file: PathBuf,
    },
    /// The deployment's instances (tenants): add, list, remove.
    Instances {
        #[command(subcommand)]
        command: instances::InstanceCommand,
    },
    /// Tokens of the system API (instances over the network), valid for no instance.
    SystemToken {
        #[command(subcommand)]
        command: instances::SystemTokenCommand,
    },
    /// API, SCIM and personal access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Projection status and rebuilds.
    Projections {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// The event log.
    Events {
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Personal data sealed per user (docs/ARCHITECTURE.md, "Personal data").
    PersonalData {
        #[command(subcommand)]
        command: PersonalDataCommand,
    },
    /// Event positions across backup and restore: shows the position base, or raises it so that
    /// new events land above a given position (for example the stream's last one after a restore
    /// from a backup older than the stream). Migrations (and every service start) already raise it
    /// above every stored event.
    Positions {
        /// Raise the base so that every new position lies above this one.
        #[arg(long)]
        above: Option<i64>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token for a user (usually a machine user); the secret is printed once.
    ///
    /// Example: cairn token create --principal 0190... --roles scim_provisioner --kind scim
    Create {
        /// The user the token acts as.
        #[arg(long)]
        principal: uuid::Uuid,
        /// Comma-separated roles: instance_admin, org_admin, user_manager, scim_provisioner, read_only.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// `api` or `scim`.
        #[arg(long, default_value = "api")]
        kind: String,
        /// Bind the token to one organisation.
        #[arg(long)]
        org: Option<uuid::Uuid>,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// A note for operators.
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists tokens (never their secrets).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revokes a token by id.
    Revoke {
        /// The token id (the hex part after the prefix).
        id: String,
    },
}

#[derive(Subcommand)]
enum PersonalDataCommand {
    /// Seals the personal data of events written before sealing existed, in place, and replaces
    /// plain user-name claims by their blind index; resumable, and a second run finds nothing to
    /// do. Run it once after upgrading, with command-api stopped.
    Seal {
        /// Events per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Reseals every user's data key under the keyring's active key (after adding a new key and
    /// making it active); safe while the services run. Old keyring keys can go once this is done.
    ResealKeys,
}

#[derive(Subcommand)]
enum ProjectionCommand {
    /// Position, lag, status, failures and lease owner of every projection and instance.
    Status,
    /// Resets a projection and rebuilds it from position zero (by the projector holding its lease).
    ///
    /// Example: cairn projections reset users --wait
    Reset {
        /// The projection: instances, orgs, users, groups or milestones.
        name: String,
        /// Only this instance.
        #[arg(long)]
        instance: Option<uuid::Uuid>,
        /// Follow the rebuild with a progress line until it has caught up.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum EventCommand {
    /// Prints events in global order as JSON lines.
    ///
    /// Example: cairn events tail --after 0 --follow
    Tail {
        /// Start after this position (`<position>.<offset>`); default: the last 20 events.
        #[arg(long)]
        after: Option<Position>,
        /// Keep following new events.
        #[arg(long)]
        follow: bool,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Migrate { create_database } = &cli.command {
        return migrate(&cli.database_url, *create_database).await;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&cli.database_url)
        .await
        .context("connecting to CAIRN_DATABASE_URL")?;
    cairn_migrations::run(&pool)
        .await
        .context("applying migrations")?;
    let store = PgEventStore::new(pool.clone());
    let keys = cli.keys;
    let vault = move || -> anyhow::Result<cairn_personal::Vault> {
        let keys = keys
            .context("CAIRN_KEYS (or --keys) is needed: personal data is sealed under the services' keys")?;
        let ring = cairn_secrets::Keyring::parse(keys.expose_str())
            .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
        Ok(cairn_personal::Vault::new(ring))
    };
    match cli.command {
        Command::Migrate { .. } => Ok(()),
        Command::Init { name, token_file } => init(&store, &vault()?, &name, &token_file).await,
        Command::Instances { command } => instances::instances(&store, vault, command).await,
        Command::PersonalData { command } => personal_data(&pool, &vault()?, command).await,
        Command::SystemToken { command } => instances::system_token(&pool, command).await,
        Command::Token { command } => token(&pool, command).await,
        Command::Projections { command } => projections(&pool, &store, command).await,
        Command::Events { command } => events(&pool, &store, command).await,
        Command::Positions { above } => positions(&pool, above).await,
    }
}

async fn positions(pool: &sqlx::PgPool, above: Option<i64>) -> anyhow::Result<()> {
    if let Some(above) = above {
        let base = cairn_migrations::raise_position_base(pool, above)
            .await
            .context("raising the position base")?;
        println!("position base {} -> {}", base.before, base.after);
    }
    let (base, counter, stored): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT base, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
                (SELECT max(position) FROM eventstore.events) FROM eventstore.position_base",
    )
    .fetch_one(pool)
    .await?;
    println!("position base            {base}");
    println!("next positions from      {}", counter + base);
    println!("highest stored position  {}", stored.unwrap_or(0));
    Ok(())
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
        .context("connecting to CAIRN_DATABASE_URL")?;
    cairn_migrations::run(&pool)
        .await
        .context("applying migrations")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await?;
    eprintln!("migrations applied: {applied}");
    Ok(())
}

async fn personal_data(
    pool: &sqlx::PgPool,
    vault: &cairn_personal::Vault,
    command: PersonalDataCommand,
) -> anyhow::Result<()> {
    match command {
        PersonalDataCommand::Seal { batch } => {
            anyhow::ensure!(batch >= 1, "--batch must be at least 1");
            let report = cairn_personal::seal_existing(pool, vault, batch)
                .await
                .context("sealing personal data")?;
            println!("events sealed:        {}", report.events_sealed);
            println!(
                "events of erased users rewritten as erased: {}",
                report.events_erased
            );
            println!("user-name claims blinded: {}", report.claims_blinded);
            println!("duplicate plain claims dropped: {}", report.claims_conflicting);
            println!("old user snapshots dropped: {}", report.snapshots_dropped);
        }
        PersonalDataCommand::ResealKeys => {
            let mut conn = pool.acquire().await?;
            let mut total = 0;
            loop {
                let resealed = vault
                    .reseal_keys(&mut conn, 500)
                    .await
                    .context("resealing data keys")?;
                if resealed == 0 {
                    break;
                }
                total += resealed;
            }
            println!(
                "data keys resealed under {}: {total}",
                vault.keyring().active_key_id()
            );
        }
    }
    Ok(())
}

async fn init(
    store: &PgEventStore,
    vault: &cairn_personal::Vault,
    name: &str,
    token_file: &std::path::Path,
) -> anyhow::Result<()> {
    match cairn_instances::bootstrap(store, vault, name, SystemClock.now())
        .await
        .context("creating the first instance")?
    {
        None => {
            eprintln!("an instance exists already; nothing to do");
            Ok(())
        }
        Some(created) => {
            cairn_instances::write_token_file(token_file, &created.token)
                .with_context(|| format!("writing {}", token_file.display()))?;
            println!("instance:      {}", created.instance_id);
            println!("organisation:  {}", created.org_id);
            println!("admin user:    {}", created.admin_id);
            println!("admin token:   {}", created.token.as_str());
            println!(
                "(also written to {}, mode 0600; it is not shown again)",
                token_file.display()
            );
            Ok(())
        }
    }
}

async fn the_instance(pool: &sqlx::PgPool, principal: uuid::Uuid) -> anyhow::Result<InstanceId> {
    let instance: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT instance_id FROM eventstore.events WHERE aggregate_type = 'user' AND aggregate_id = $1 LIMIT 1",
    )
    .bind(principal)
    .fetch_optional(pool)
    .await?;
    instance.map(InstanceId::from_uuid).context("no such user")
}

async fn token(pool: &sqlx::PgPool, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            principal,
            roles,
            kind,
            org,
            expires_in_days,
            description,
        } => {
            let roles = roles
                .iter()
                .map(|r| r.parse::<Role>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            anyhow::ensure!(!roles.is_empty(), "--roles: name at least one role");
            let kind = TokenKind::requested(&kind).map_err(|e| anyhow::anyhow!("--{e}"))?;
            let instance_id = the_instance(pool, principal).await?;
            let mut tx = cairn_eventstore::begin(pool).await?;
            let issued = tokens::issue(
                &mut tx,
                &NewToken {
                    instance_id,
                    org_id: org.map(AggregateId::from_uuid),
                    principal_id: AggregateId::from_uuid(principal),
                    kind,
                    roles,
                    description,
                    expires_at: expires_in_days.map(|d| SystemClock.now() + chrono::Duration::days(d)),
                },
            )
            .await
            .context("issuing the token")?;
            tx.commit().await?;
            println!("token id: {}", issued.id);
            println!("token:    {}", issued.secret.as_str());
            println!("(shown once; only its hash is stored)");
        }
        TokenCommand::List { all } => {
            let found = tokens::list(
                pool,
                ListFilter {
                    include_revoked: all,
                    ..ListFilter::default()
                },
            )
            .await
            .context("listing tokens")?;
            println!(
                "{:<26} {:<36} {:<36} {:<5} {:<30} STATE",
                "ID", "INSTANCE", "PRINCIPAL", "KIND", "ROLES"
            );
            for token in found {
                let state = match (token.revoked_at, token.expires_at) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    _ => "active".into(),
                };
                println!(
                    "{:<26} {:<36} {:<36} {:<5} {:<30} {state}",
                    token.id,
                    token.instance_id.to_string(),
                    token.principal_id.to_string(),
                    token.kind.as_str(),
                    token.roles.join(",")
                );
            }
        }
        TokenCommand::Revoke { id } => {
            // Announced in the same transaction: every running service forgets the token when it
            // commits.
            let mut tx = cairn_eventstore::begin(pool).await?;
            let revoked = tokens::revoke(&mut tx, None, &id)
                .await
                .context("revoking the token")?;
            anyhow::ensure!(revoked.is_some(), "no token with id {id}");
            tx.commit().await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn projections(
    pool: &sqlx::PgPool,
    store: &PgEventStore,
    command: ProjectionCommand,
) -> anyhow::Result<()> {
    match command {
        ProjectionCommand::Status => {
            let rows = cairn_projection::health::report(pool, None).await?;
            println!(
                "{:<11} {:<36} {:<22} {:>9} {:>8} {:<10} {:>6} {:<36} LAST ERROR",
                "PROJECTION", "INSTANCE", "POSITION", "LAG", "LAG_S", "STATUS", "ERRORS", "OWNER"
            );
            for r in rows {
                println!(
                    "{:<11} {:<36} {:<22} {:>9} {:>8.1} {:<10} {:>6} {:<36} {}",
                    r.projection,
                    r.instance_id,
                    r.position,
                    r.lag_events,
                    r.lag_seconds,
                    r.status,
                    r.error_count,
                    r.lease_owner.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
                    r.last_error.unwrap_or_default()
                );
            }
        }
        ProjectionCommand::Reset { name, instance, wait } => {
            anyhow::ensure!(
                cairn_readmodel::all().iter().any(|p| p.name() == name),
                "unknown projection {name:?}; known: instances, orgs, users, groups, milestones"
            );
            let marked = cairn_projection::health::request_rebuild(pool, &name, instance).await?;
            println!("rebuild requested for {marked} (projection, instance) pair(s)");
            if wait {
                follow_rebuild(pool, store, &name, instance).await?;
            }
        }
    }
    Ok(())
}

/// Prints a progress line (events done / total, events/s, ETA) until the rebuild reached the head.
async fn follow_rebuild(
    pool: &sqlx::PgPool,
    store: &PgEventStore,
    name: &str,
    instance: Option<uuid::Uuid>,
) -> anyhow::Result<()> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventstore.events WHERE $1::uuid IS NULL OR instance_id = $1",
    )
    .bind(instance)
    .fetch_one(pool)
    .await?;
    let started = Instant::now();
    loop {
        let rows = cairn_projection::health::report(pool, instance).await?;
        let rows: Vec<_> = rows.into_iter().filter(|r| r.projection == name).collect();
        let pending = cairn_projection::health::rebuilds_pending(pool, name, instance).await?;
        let lag: i64 = rows.iter().map(|r| r.lag_events).sum();
        let done = (total - lag).max(0);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            lag as f64 / rate
        } else {
            f64::INFINITY
        };
        eprint!("\r{name}: {done}/{total} events, {rate:.0} events/s, ETA {eta:.0}s   ");
        if pending == 0 && lag == 0 && rows.iter().all(|r| r.status == "active") {
            eprintln!("\n{name}: rebuilt in {:.1}s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        let _ = store; // the head moves with new writes; lag accounts for them
        tokio::time::sleep(Duration::from_millis(500)).await; // poll_interval for the progress line
    }
}

async fn events(pool: &sqlx::PgPool, store: &PgEventStore, command: EventCommand) -> anyhow::Result<()> {
    let EventCommand::Tail { after, follow } = command;
    let mut cursor = match after {
        Some(position) => position,
        None => {
            let last: Option<(i64, i32)> = sqlx::query_as(
                "SELECT position, in_tx_order FROM eventstore.events ORDER BY position DESC, in_tx_order DESC OFFSET 20 LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            last.map_or(Position::ZERO, |(p, o)| Position::new(p, o))
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = CommitListener::start(pool.clone(), shutdown.clone());
    let mut commits = listener.subscribe();
    loop {
        let page = store.filter(&EventFilter::after(cursor, 1000)).await?;
        for event in &page {
            println!("{}", serde_json::to_string(event)?);
            cursor = event.position;
        }
        if page.len() == 1000 {
            continue;
        }
        if !follow {
            shutdown.cancel();
            return Ok(());
        }
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {} // poll_interval: fallback when a notification is lost
            _ = tokio::signal::ctrl_c() => { shutdown.cancel(); return Ok(()); }
        }
    }
}
