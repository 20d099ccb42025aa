//! `cairn instances` and `cairn system-token`: the deployment's tenants, and the tokens of the
//! system API that manages them over the network. Like every command here they work on PostgreSQL
//! directly, through the same `cairn-instances` functions the system API calls. Output is a table,
//! or JSON with `--json` so that scripts never parse tables.

use anyhow::Context;
use cairn_auth::tokens;
use cairn_domain::{Clock, InstanceId, SystemClock};
use cairn_eventstore::PgEventStore;
use cairn_instances::registry::{self, InstanceRecord, InstanceState, ListQuery};
use cairn_instances::{InstanceError, NewInstance};
use clap::Subcommand;
use serde_json::json;

/// `cairn instances ...`
#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Creates an instance with its first organisation and an admin machine user; prints the ids
    /// and the admin's token (shown once).
    ///
    /// Example: cairn instances add --name "Acme" --org "Acme HQ"
    Add {
        /// The instance's name.
        #[arg(long)]
        name: String,
        /// The first organisation's name.
        #[arg(long, default_value = "Default")]
        org: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lists instances (removed ones only with --all).
    List {
        /// Include removed instances.
        #[arg(long)]
        all: bool,
        /// Only instances whose name contains this (ignoring case).
        #[arg(long)]
        name: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes an instance: its tokens stop working at once, its names and domains are released,
    /// its read models are dropped by the projections; its events stay as the audit trail.
    Remove {
        /// The instance id.
        id: InstanceId,
        /// Also erase every user of the instance (their data keys are destroyed with the removal).
        #[arg(long)]
        erase_personal_data: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `cairn system-token ...`
#[derive(Subcommand)]
pub enum SystemTokenCommand {
    /// Creates a system token (for the system API only; valid for no instance); printed once.
    Create {
        /// A note for operators.
        #[arg(long)]
        description: Option<String>,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists system tokens (never their secrets).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revokes a system token by id.
    Revoke {
        /// The token id.
        id: String,
    },
}

fn record_json(r: &InstanceRecord) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "name": r.name,
        "state": r.state.as_str(),
        "default_org_id": r.default_org_id.map(|o| o.to_string()),
        "created_at": r.created_at.to_rfc3339(),
        "domains": r.domains,
    })
}

/// Runs `cairn instances`.
pub async fn instances(
    store: &PgEventStore,
    vault: impl FnOnce() -> anyhow::Result<cairn_personal::Vault>,
    command: InstanceCommand,
) -> anyhow::Result<()> {
    match command {
        InstanceCommand::Add { name, org, json } => {
            let spec = NewInstance {
                id: None,
                name,
                org_name: Some(org),
                creator: "system:cli".into(),
            };
            let created = registry::add(store, &vault()?, &spec, SystemClock.now())
                .await
                .map_err(explain)?;
            if json {
                println!(
                    "{}",
                    json!({
                        "instance_id": created.instance_id.to_string(),
                        "org_id": created.org_id.to_string(),
                        "admin_user_id": created.admin_id.to_string(),
                        "admin_token": created.token.as_str(),
                    })
                );
            } else {
                println!("instance id:   {}", created.instance_id);
                println!("org id:        {}", created.org_id);
                println!("admin user id: {}", created.admin_id);
                println!("admin token:   {}", created.token.as_str());
                println!("(the token is shown once; only its hash is stored)");
            }
        }
        InstanceCommand::List { all, name, json } => {
            let mut found = Vec::new();
            let mut offset = 0;
            loop {
                let query = ListQuery {
                    name_contains: name.clone(),
                    state: None,
                    offset,
                    limit: 1000,
                };
                let (page, _) = registry::list(store.pool(), &query).await.map_err(explain)?;
                let n = page.len();
                found.extend(
                    page.into_iter()
                        .filter(|r| all || r.state != InstanceState::Removed),
                );
                if n < 1000 {
                    break;
                }
                offset += 1000;
            }
            if json {
                let rows: Vec<_> = found.iter().map(record_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<36} {:<8} {:<25} {:<30} DOMAINS",
                    "ID", "STATE", "CREATED", "NAME"
                );
                for r in &found {
                    println!(
                        "{:<36} {:<8} {:<25} {:<30} {}",
                        r.id.to_string(),
                        r.state.as_str(),
                        r.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        r.name,
                        r.domains.join(",")
                    );
                }
            }
        }
        InstanceCommand::Remove {
            id,
            erase_personal_data,
            json,
        } => {
            let removed = registry::remove(store, id, "system:cli", erase_personal_data)
                .await
                .map_err(explain)?;
            if json {
                println!("{}", record_json(&removed));
            } else {
                println!("removed {id} ({})", removed.name);
            }
        }
    }
    Ok(())
}

/// Runs `cairn system-token`.
pub async fn system_token(pool: &sqlx::PgPool, command: SystemTokenCommand) -> anyhow::Result<()> {
    match command {
        SystemTokenCommand::Create {
            description,
            expires_in_days,
            json,
        } => {
            let mut tx = cairn_eventstore::begin(pool).await?;
            let expires_at = expires_in_days.map(|d| SystemClock.now() + chrono::Duration::days(d));
            let issued = tokens::issue_system(&mut tx, description.as_deref(), expires_at)
                .await
                .context("issuing the system token")?;
            tx.commit().await?;
            if json {
                println!(
                    "{}",
                    json!({ "token_id": issued.id, "token": issued.secret.as_str() })
                );
            } else {
                println!("token id: {}", issued.id);
                println!("token:    {}", issued.secret.as_str());
                println!("(shown once; only its hash is stored; valid for the system API only)");
            }
        }
        SystemTokenCommand::List { all } => {
            let found = tokens::list_system(pool, all)
                .await
                .context("listing system tokens")?;
            println!("{:<26} {:<32} STATE", "ID", "DESCRIPTION");
            for token in found {
                let state = match (token.revoked_at, token.expires_at) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    _ => "active".into(),
                };
                println!(
                    "{:<26} {:<32} {state}",
                    token.id,
                    token.description.unwrap_or_default()
                );
            }
        }
        SystemTokenCommand::Revoke { id } => {
            let mut tx = cairn_eventstore::begin(pool).await?;
            let revoked = tokens::revoke(&mut tx, None, &id)
                .await
                .context("revoking the token")?;
            anyhow::ensure!(
                revoked.is_some_and(|t| t.kind == cairn_auth::TokenKind::System),
                "no system token with id {id}"
            );
            tx.commit().await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// An instance error as the operator should read it.
fn explain(error: InstanceError) -> anyhow::Error {
    match error {
        InstanceError::Store(cairn_eventstore::StoreError::UniqueViolation { unique_type, value }) => {
            anyhow::anyhow!("{unique_type} {value:?} is taken")
        }
        other => anyhow::Error::new(other),
    }
}
