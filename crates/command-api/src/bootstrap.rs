//! Bootstrap of the first instance: the instance, a default organisation, an admin machine user
//! and a personal access token with the instance-admin role, in one transaction, guarded by an
//! advisory lock so replicas starting together bootstrap once. The token is returned once; the
//! caller prints it or writes it to a file readable only by its owner.

use crate::auth::{NewToken, Role, store_token};
use crate::error::ApiError;
use crate::users::pat_uuid;
use cairn_domain::user::{AddMachineUser, AddPat};
use cairn_domain::{Aggregate, AggregateId, DisplayName, Instance, InstanceId, Org, User, UserName};
use cairn_eventstore::{ExpectedSequence, PgEventStore, Push};
use cairn_secrets::Zeroizing;

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

/// Creates the first instance unless one exists; `None` when there was one already.
pub async fn bootstrap(
    store: &PgEventStore,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Bootstrapped>, ApiError> {
    let mut tx = store.pool().begin().await?;
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
    create_instance(store, tx, name, now).await.map(Some)
}

/// Creates an instance with a default organisation, an admin machine user and its token, in
/// `tx`, and commits it.
pub async fn create_instance(
    store: &PgEventStore,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Bootstrapped, ApiError> {
    let instance_id = InstanceId::new();
    let instance_aggregate = AggregateId::from_uuid(instance_id.as_uuid());
    let org_id = AggregateId::new();
    let admin_id = AggregateId::new();
    let display = |s: &str| DisplayName::parse(s).map_err(|e| ApiError::invalid("name", e.to_string()));
    let (token_id, token) = store_token(
        &mut tx,
        &NewToken {
            instance_id,
            org_id: None,
            principal_id: admin_id,
            kind: "pat",
            roles: vec![Role::InstanceAdmin],
            description: Some("bootstrap admin token".into()),
            expires_at: None,
        },
    )
    .await?;
    let instance = Instance::default().add(display(name)?, Some(org_id))?;
    let org = Org::default().add(display("Default")?)?;
    let mut admin = User::default().add_machine(AddMachineUser {
        org_id,
        user_name: UserName::parse("admin").map_err(|e| ApiError::Internal(e.to_string()))?,
        name: display("Instance administrator")?,
        description: Some("created by bootstrap".into()),
    })?;
    let admin_state: User = crate::api::preview(&User::default(), &admin, &{
        let mut t = template(instance_id, admin_id);
        t.aggregate_type = User::aggregate_type();
        t
    })?;
    admin.merge(admin_state.add_pat(
        AddPat {
            token_id: pat_uuid(&token_id),
            expires_at: None,
        },
        now,
    )?);
    let push = Push::from_decision(
        instance_id,
        Instance::aggregate_type(),
        instance_aggregate,
        ExpectedSequence::Exact(0),
        instance,
        "system",
        instance_aggregate,
    )
    .and(Push::from_decision(
        instance_id,
        Org::aggregate_type(),
        org_id,
        ExpectedSequence::Exact(0),
        org,
        "system",
        org_id,
    ))
    .and(Push::from_decision(
        instance_id,
        User::aggregate_type(),
        admin_id,
        ExpectedSequence::Exact(0),
        admin,
        "system",
        org_id,
    ));
    let events = store.push_in(&mut tx, push).await?;
    tx.commit().await?;
    if let Some(last) = events.last() {
        store.announce(last.position);
    }
    Ok(Bootstrapped {
        instance_id,
        org_id,
        admin_id,
        token,
    })
}

fn template(instance: InstanceId, id: AggregateId) -> cairn_domain::StoredEvent {
    cairn_domain::StoredEvent {
        id: cairn_domain::EventId::new(),
        instance_id: instance,
        aggregate_type: User::aggregate_type(),
        aggregate_id: id,
        sequence: 0,
        event_type: <cairn_domain::user::UserLocked as cairn_domain::EventPayload>::event_type(),
        revision: 1,
        payload: serde_json::json!({}),
        creator: "system".into(),
        resource_owner: id,
        created_at: chrono::DateTime::UNIX_EPOCH,
        position: cairn_domain::Position::ZERO,
        trace_context: None,
    }
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
