//! Instances, the tenants of a deployment: creating one (the instance, a default organisation and
//! an admin machine user holding a personal access token with the instance-admin role, pushed as
//! events in one transaction with the token's row, so that an instance never exists without a way
//! in, nor a token without its instance), and its life after that: renaming, deactivating,
//! reactivating, domains, settings and removal ([`registry`]). [`bootstrap`] creates the first
//! instance of an installation, once, guarded by an advisory lock so replicas starting together
//! bootstrap once.
//!
//! Why a crate of its own: several programs manage instances — command-api's system API and its
//! `CAIRN_BOOTSTRAP`, the operator's `cairn init` and `cairn instances`, and the end-to-end stack
//! of tests and benchmarks — and none may import a service to do it.
//!
//! Every change writes the instance's events and its row of `api.instances` (the registry that
//! authentication reads) in one transaction, so a deactivation or removal refuses the instance's
//! tokens the moment it commits. Tokens are returned once; the caller prints them or writes them
//! with [`write_token_file`].

pub mod registry;

pub use registry::{InstanceRecord, InstanceSettings, InstanceState, Limits, ListQuery};

use cairn_auth::{NewToken, Role, TokenKind};
use cairn_domain::user::{AddMachineUser, AddPat};
use cairn_domain::{
    Aggregate, AggregateId, Decision, DisplayName, DomainError, EventId, Instance, InstanceId, Org, Position,
    StoredEvent, User, UserName,
};
use cairn_eventstore::{ExpectedSequence, PgEventStore, Push, StoreError};
use cairn_secrets::Zeroizing;
use chrono::{DateTime, Utc};

/// What a bootstrap created.
pub struct Bootstrapped {
    /// The new instance.
    pub instance_id: InstanceId,
    /// Its default organisation.
    pub org_id: AggregateId,
    /// The admin machine user.
    pub admin_id: AggregateId,
    /// The admin's token (shown once).
    pub token: Zeroizing<String>,
}

/// Why an instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A request field is not acceptable; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No such instance (or it was removed).
    #[error("instance not found")]
    NotFound,
    /// The domain refused a command (a bug: the commands are fixed).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The event store refused or failed the push.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin token could not be issued.
    #[error(transparent)]
    Auth(#[from] cairn_auth::AuthError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The admin user's data could not be sealed.
    #[error(transparent)]
    Personal(#[from] cairn_personal::PersonalError),
}

/// What to create: [`create_in`]'s request.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The id; a new one when `None`. An id used before, even by a removed instance, is refused.
    pub id: Option<InstanceId>,
    /// The instance's name.
    pub name: String,
    /// The first organisation's name (`Default` when `None`).
    pub org_name: Option<String>,
    /// Who creates it, as recorded in the events' `creator`.
    pub creator: String,
}

impl NewInstance {
    /// An instance named `name` with a new id and an organisation called `Default`, created by
    /// `system`.
    pub fn named(name: &str) -> Self {
        Self {
            id: None,
            name: name.to_owned(),
            org_name: None,
            creator: "system".into(),
        }
    }
}

/// Creates the first instance unless one exists; `None` when there was one already.
pub async fn bootstrap(
    store: &PgEventStore,
    vault: &cairn_personal::Vault,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Option<Bootstrapped>, InstanceError> {
    let mut tx = cairn_eventstore::begin(store.pool()).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cairn.bootstrap'))")
        .execute(&mut *tx)
        .await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM eventstore.events WHERE event_type = 'instance.added' LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_some() {
        return Ok(None);
    }
    create_instance(store, vault, tx, name, now).await.map(Some)
}

/// Creates an instance with a default organisation, an admin machine user and its token, in
/// `tx`, and commits it.
pub async fn create_instance(
    store: &PgEventStore,
    vault: &cairn_personal::Vault,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Bootstrapped, InstanceError> {
    let (created, events) = create_in(store, vault, &mut tx, &NewInstance::named(name), now).await?;
    tx.commit().await?;
    if let Some(last) = events.last() {
        store.announce(last.position);
    }
    Ok(created)
}

/// Creates an instance as `spec` asks, with its first organisation, an admin machine user, the
/// admin's token and its row of the registry, inside the caller's transaction (which the caller
/// commits, then announces the last event's position). Returns what was created and the events.
pub async fn create_in(
    store: &PgEventStore,
    vault: &cairn_personal::Vault,
    conn: &mut sqlx::PgConnection,
    spec: &NewInstance,
    now: DateTime<Utc>,
) -> Result<(Bootstrapped, Vec<StoredEvent>), InstanceError> {
    let instance_id = spec.id.unwrap_or_default();
    if instance_id == InstanceId::SYSTEM {
        return Err(InstanceError::Invalid {
            field: "instance_id",
            reason: "the nil id is reserved".into(),
        });
    }
    let instance_aggregate = AggregateId::from_uuid(instance_id.as_uuid());
    let org_id = AggregateId::new();
    let admin_id = AggregateId::new();
    let display = |field: &'static str, s: &str| {
        DisplayName::parse(s).map_err(|e| InstanceError::Invalid {
            field,
            reason: e.to_string(),
        })
    };
    let name = display("name", &spec.name)?;
    let org_name = display("org_name", spec.org_name.as_deref().unwrap_or("Default"))?;
    let token = cairn_auth::tokens::issue(
        &mut *conn,
        &NewToken {
            instance_id,
            org_id: None,
            principal_id: admin_id,
            kind: TokenKind::Pat,
            roles: vec![Role::InstanceAdmin],
            description: Some("instance admin token".into()),
            expires_at: None,
        },
    )
    .await?;
    let instance = Instance::default().add(name.clone(), Some(org_id))?;
    let org = Org::default().add(org_name)?;
    let user_name = UserName::parse("admin").map_err(|e| DomainError::Corrupt(e.to_string()))?;
    let mut admin = User::default().add_machine(AddMachineUser {
        org_id,
        user_name,
        name: display("name", "Instance administrator")?,
        description: Some("created with the instance".into()),
    })?;
    let added: User = fold_new(instance_id, admin_id, &admin)?;
    admin.merge(added.add_pat(
        AddPat {
            token_id: cairn_auth::tokens::pat_uuid(&token.id),
            expires_at: None,
        },
        now,
    )?);
    let creator = spec.creator.as_str();
    let mut push = Push::from_decision(
        instance_id,
        Instance::aggregate_type(),
        instance_aggregate,
        ExpectedSequence::Exact(0),
        instance,
        creator,
        instance_aggregate,
    )
    .and(Push::from_decision(
        instance_id,
        Org::aggregate_type(),
        org_id,
        ExpectedSequence::Exact(0),
        org,
        creator,
        org_id,
    ))
    .and(Push::from_decision(
        instance_id,
        User::aggregate_type(),
        admin_id,
        ExpectedSequence::Exact(0),
        admin,
        creator,
        org_id,
    ));
    let unsealed = vault
        .seal(&mut cairn_personal::Db::Conn(&mut *conn), &mut push)
        .await?;
    let mut events = store
        .push_in(&mut *conn, push)
        .await
        .map_err(|error| match error {
            // The instance aggregate exists: the id was used before.
            StoreError::Conflict {
                ref aggregate_type, ..
            } if *aggregate_type == Instance::aggregate_type() => {
                InstanceError::Domain(DomainError::already_exists("instance"))
            }
            other => InstanceError::Store(other),
        })?;
    unsealed.restore(&mut events);
    registry::insert(&mut *conn, instance_id, name.as_str(), org_id, now).await?;
    Ok((
        Bootstrapped {
            instance_id,
            org_id,
            admin_id,
            token: token.secret,
        },
        events,
    ))
}

/// The state of a new aggregate after `decision`, as if its events were committed: the admin user
/// must exist before the domain lets it hold a token.
fn fold_new<A: Aggregate>(
    instance: InstanceId,
    id: AggregateId,
    decision: &Decision,
) -> Result<A, DomainError> {
    let events: Vec<StoredEvent> = (1..)
        .zip(&decision.events)
        .map(|(sequence, (event_type, payload))| StoredEvent {
            id: EventId::new(),
            instance_id: instance,
            aggregate_type: A::aggregate_type(),
            aggregate_id: id,
            sequence,
            event_type: event_type.clone(),
            revision: 1,
            payload: payload.clone(),
            creator: "system".into(),
            resource_owner: id,
            created_at: DateTime::UNIX_EPOCH,
            position: Position::ZERO,
            trace_context: None,
        })
        .collect();
    cairn_domain::rebuild(&events)
}

/// Writes `token` to `path`, readable only by the owner (mode 0600 on Unix).
pub fn write_token_file(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")
}
