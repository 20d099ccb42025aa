//! The instance registry, `api.instances` and `api.instance_domains`: every statement that writes
//! those tables is here (the token lookup in `cairn-auth` reads an instance's state and settings
//! with its token, in one statement). A change is the instance aggregate's event and the registry's row in one
//! transaction, which holds the instance's lock from its first read to its commit, so changes of
//! one instance run one after the other and the registry always equals the events.
//!
//! What removal keeps and drops is stated in `docs/ARCHITECTURE.md` ("Tenants"): the events stay
//! as the audit trail; the tokens are revoked, the unique claims released, command-api's stored
//! secrets and idempotency records deleted here, and every read-model row deleted by the projections
//! when they pass the `instance.removed` event.

use crate::{Bootstrapped, InstanceError};
pub use cairn_domain::InstanceSettings;
use cairn_domain::{Aggregate, AggregateId, Decision, DisplayName, Instance, InstanceId, StoredEvent};
use cairn_eventstore::{ExpectedSequence, PgEventStore, Push, StoreError, UniqueOp};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Its tokens work.
    Active,
    /// Its tokens are refused; its data is kept.
    Inactive,
    /// Removed: its tokens are revoked and its read models dropped; its events stay.
    Removed,
}

impl InstanceState {
    /// The state as stored and shown: `active`, `inactive` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Removed => "removed",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Result<Self, InstanceError> {
        match s {
            "active" => Ok(Self::Active),
            "inactive" => Ok(Self::Inactive),
            "removed" => Ok(Self::Removed),
            other => Err(InstanceError::Invalid {
                field: "state",
                reason: format!("{other:?} is not active, inactive or removed"),
            }),
        }
    }
}

/// An instance's limits, read from one place (`api.instances.limits`): a limit that is not set
/// there is the caller's default. The quotas work reads and enforces them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits(pub BTreeMap<String, i64>);

impl Limits {
    /// The limit called `name`, or `default`.
    pub fn get(&self, name: &str, default: i64) -> i64 {
        self.0.get(name).copied().unwrap_or(default)
    }
}

/// An instance as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Its id.
    pub id: InstanceId,
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: InstanceState,
    /// The organisation new users land in when none is named.
    pub default_org_id: Option<AggregateId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub changed_at: DateTime<Utc>,
    /// Its domains, sorted.
    pub domains: Vec<String>,
    /// Its own settings.
    pub settings: InstanceSettings,
    /// Its limits.
    pub limits: Limits,
}

const SELECT: &str = "SELECT i.id, i.name, i.state, i.default_org_id, i.created_at, i.changed_at, \
       i.email_code_ttl_secs, i.email_code_max_attempts, i.scim_emails_verified, i.default_language, i.scim_erase_on_delete, i.limits, \
       coalesce((SELECT array_agg(d.domain ORDER BY d.domain) FROM api.instance_domains d \
                  WHERE d.instance_id = i.id), '{}') AS domains \
  FROM api.instances i";

impl InstanceRecord {
    fn from_row(row: &PgRow) -> Result<Self, InstanceError> {
        let limits: serde_json::Value = row.try_get("limits")?;
        let limits = limits
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_i64().map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            id: InstanceId::from_uuid(row.try_get("id")?),
            name: row.try_get("name")?,
            state: InstanceState::parse(row.try_get("state")?)?,
            default_org_id: row
                .try_get::<Option<Uuid>, _>("default_org_id")?
                .map(AggregateId::from_uuid),
            created_at: row.try_get("created_at")?,
            changed_at: row.try_get("changed_at")?,
            domains: row.try_get("domains")?,
            settings: InstanceSettings {
                email_code_ttl_secs: row.try_get("email_code_ttl_secs")?,
                email_code_max_attempts: row.try_get("email_code_max_attempts")?,
                scim_emails_verified: row.try_get("scim_emails_verified")?,
                default_language: row.try_get("default_language")?,
                scim_erase_on_delete: row.try_get("scim_erase_on_delete")?,
            },
            limits: Limits(limits),
        })
    }
}

/// Adds a new instance's row (in [`crate::create_in`]'s transaction).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    id: InstanceId,
    name: &str,
    default_org: AggregateId,
    now: DateTime<Utc>,
) -> Result<(), InstanceError> {
    sqlx::query(
        "INSERT INTO api.instances (id, name, state, default_org_id, created_at, changed_at) \
         VALUES ($1, $2, 'active', $3, $4, $4)",
    )
    .bind(id.as_uuid())
    .bind(name)
    .bind(default_org.as_uuid())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Instance `id`, removed or not; `None` if there never was one.
pub async fn get(pool: &PgPool, id: InstanceId) -> Result<Option<InstanceRecord>, InstanceError> {
    sqlx::query(&format!("{SELECT} WHERE i.id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(InstanceRecord::from_row)
        .transpose()
}

/// The instance's settings (all `None`, the deployment's defaults, for an instance the registry
/// does not list).
pub async fn settings(pool: &PgPool, id: InstanceId) -> Result<InstanceSettings, InstanceError> {
    Ok(get(pool, id).await?.map(|r| r.settings).unwrap_or_default())
}

/// The instance's limits (none set for an instance the registry does not list).
pub async fn limits(pool: &PgPool, id: InstanceId) -> Result<Limits, InstanceError> {
    Ok(get(pool, id).await?.map(|r| r.limits).unwrap_or_default())
}

/// The instance that `domain` maps to, if any.
pub async fn by_domain(pool: &PgPool, domain: &str) -> Result<Option<InstanceId>, InstanceError> {
    let id: Option<Uuid> =
        sqlx::query_scalar("SELECT instance_id FROM api.instance_domains WHERE domain = $1")
            .bind(domain.trim().to_ascii_lowercase())
            .fetch_optional(pool)
            .await?;
    Ok(id.map(InstanceId::from_uuid))
}

/// Which instances [`list`] returns, and which page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only instances whose name contains this, ignoring case.
    pub name_contains: Option<String>,
    /// Only instances in this state (every state when `None`).
    pub state: Option<InstanceState>,
    /// Instances to skip, in creation order.
    pub offset: u64,
    /// At most this many (1 to 1000; 0 means 100).
    pub limit: u32,
}

/// A page of instances in creation order, and how many match in all.
pub async fn list(pool: &PgPool, query: &ListQuery) -> Result<(Vec<InstanceRecord>, u64), InstanceError> {
    let limit = match query.limit {
        0 => 100,
        n if n > 1000 => {
            return Err(InstanceError::Invalid {
                field: "limit",
                reason: "at most 1000 per page".into(),
            });
        }
        n => n,
    };
    let offset = i64::try_from(query.offset).map_err(|_| InstanceError::Invalid {
        field: "offset",
        reason: "too large".into(),
    })?;
    let pattern = query.name_contains.as_deref().map(|n| {
        format!(
            "%{}%",
            n.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        )
    });
    let filter = "WHERE ($1::text IS NULL OR i.name ILIKE $1) AND ($2::text IS NULL OR i.state = $2)";
    let rows = sqlx::query(&format!(
        "{SELECT} {filter} ORDER BY i.created_at, i.id OFFSET $3 LIMIT $4"
    ))
    .bind(&pattern)
    .bind(query.state.map(InstanceState::as_str))
    .bind(offset)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM api.instances i {filter}"))
        .bind(&pattern)
        .bind(query.state.map(InstanceState::as_str))
        .fetch_one(pool)
        .await?;
    let records = rows
        .iter()
        .map(InstanceRecord::from_row)
        .collect::<Result<_, _>>()?;
    Ok((records, u64::try_from(total).unwrap_or_default()))
}

/// Creates an instance as `spec` asks, in a transaction of its own.
pub async fn add(
    store: &PgEventStore,
    vault: &cairn_personal::Vault,
    spec: &crate::NewInstance,
    now: DateTime<Utc>,
) -> Result<Bootstrapped, InstanceError> {
    let mut tx = cairn_eventstore::begin(store.pool()).await?;
    let (created, events) = crate::create_in(store, vault, &mut tx, spec, now).await?;
    tx.commit().await?;
    if let Some(last) = events.last() {
        store.announce(last.position);
    }
    Ok(created)
}

/// What a change does besides its event: the registry's row and what hangs on it.
enum After {
    Rename(String),
    State(InstanceState),
    DomainAdded(String),
    DomainRemoved(String),
    Removed { erase: bool },
}

/// How often a change runs again after meeting a younger transaction's event on the instance.
const RESTARTS: usize = 3;

async fn change(
    store: &PgEventStore,
    id: InstanceId,
    creator: &str,
    decide: impl Fn(&Instance) -> Result<(Decision, Vec<UniqueOp>, After), InstanceError>,
) -> Result<InstanceRecord, InstanceError> {
    let mut attempt = 1;
    loop {
        match change_once(store, id, creator, &decide).await {
            // Only a writer of the instance aggregate outside this module can cause it (changes here
            // take the instance's lock before their transaction has an id); run again, bounded.
            Err(InstanceError::Store(StoreError::TransactionTooOld { .. })) if attempt < RESTARTS => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn change_once(
    store: &PgEventStore,
    id: InstanceId,
    creator: &str,
    decide: &impl Fn(&Instance) -> Result<(Decision, Vec<UniqueOp>, After), InstanceError>,
) -> Result<InstanceRecord, InstanceError> {
    let mut tx = cairn_eventstore::begin(store.pool()).await?;
    // One change of an instance at a time. An advisory lock, not `FOR UPDATE`: a row lock gives the
    // transaction its id (its events' position) before it waits, so a change that waited could
    // get a lower position than the one it waited for and meet it as `TransactionTooOld`; here the
    // id comes with the first write, after the lock.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cairn.instance:' || $1::text, 0))")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM api.instances WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    if state.as_deref().is_none_or(|s| s == "removed") {
        return Err(InstanceError::NotFound);
    }
    let aggregate = AggregateId::from_uuid(id.as_uuid());
    // On the transaction's own connection: while it holds the instance's lock it must not wait for
    // a second connection, which the changes queued behind that lock may all be holding.
    let events = store
        .load_aggregate_in(&mut tx, id, &Instance::aggregate_type(), aggregate, 0)
        .await?;
    let instance: Instance = cairn_domain::rebuild(&events)?;
    if !instance.exists() {
        return Err(InstanceError::NotFound);
    }
    let (decision, unique, after) = decide(&instance)?;
    let mut pushed: Vec<StoredEvent> = Vec::new();
    if !decision.is_empty() {
        let mut push = Push::from_decision(
            id,
            Instance::aggregate_type(),
            aggregate,
            ExpectedSequence::Exact(instance.sequence()),
            decision,
            creator,
            aggregate,
        );
        push.unique_ops.extend(unique);
        pushed = store.push_in(&mut tx, push).await?;
        apply_after(&mut tx, id, after).await?;
    }
    tx.commit().await?;
    if let Some(last) = pushed.last() {
        store.announce(last.position);
    }
    get(store.pool(), id).await?.ok_or(InstanceError::NotFound)
}

async fn apply_after(conn: &mut PgConnection, id: InstanceId, after: After) -> Result<(), InstanceError> {
    let uuid = id.as_uuid();
    match after {
        After::Rename(name) => {
            sqlx::query("UPDATE api.instances SET name = $2, changed_at = clock_timestamp() WHERE id = $1")
                .bind(uuid)
                .bind(name)
                .execute(&mut *conn)
                .await?;
        }
        After::State(state) => {
            sqlx::query("UPDATE api.instances SET state = $2, changed_at = clock_timestamp() WHERE id = $1")
                .bind(uuid)
                .bind(state.as_str())
                .execute(&mut *conn)
                .await?;
            // Cached tokens of the instance must be looked up again.
            cairn_auth::tokens::forget_all(conn).await?;
        }
        After::DomainAdded(domain) => {
            sqlx::query("INSERT INTO api.instance_domains (domain, instance_id) VALUES ($1, $2)")
                .bind(domain)
                .bind(uuid)
                .execute(&mut *conn)
                .await?;
        }
        After::DomainRemoved(domain) => {
            sqlx::query("DELETE FROM api.instance_domains WHERE domain = $1 AND instance_id = $2")
                .bind(domain)
                .bind(uuid)
                .execute(&mut *conn)
                .await?;
        }
        After::Removed { erase } => {
            if erase {
                // Every user of the instance erased at once: their data keys are destroyed with the
                // removal, so no copy of their personal data can be opened again.
                cairn_personal::erase_instance(conn, id).await?;
            }
            sqlx::query(
                "UPDATE api.instances SET state = 'removed', changed_at = clock_timestamp() WHERE id = $1",
            )
            .bind(uuid)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM api.instance_domains WHERE instance_id = $1")
                .bind(uuid)
                .execute(&mut *conn)
                .await?;
            // Its names (userNames, organisation and group names) may be used again.
            sqlx::query("DELETE FROM eventstore.unique_constraints WHERE instance_id = $1")
                .bind(uuid)
                .execute(&mut *conn)
                .await?;
            // Its stored secrets, command records and snapshots (caches of the write model, which
            // takes no more commands).
            for table in [
                "api.smtp_settings",
                "api.email_templates",
                "api.commands",
                "eventstore.snapshots",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                    .bind(uuid)
                    .execute(&mut *conn)
                    .await?;
            }
            cairn_auth::tokens::revoke_instance(conn, id).await?;
        }
    }
    Ok(())
}

fn domain_op(add: bool, domain: &str) -> UniqueOp {
    let (instance_id, unique_type, value) = (
        InstanceId::SYSTEM,
        cairn_domain::UNIQUE_INSTANCE_DOMAIN.to_owned(),
        domain.to_owned(),
    );
    if add {
        UniqueOp::Add {
            instance_id,
            unique_type,
            value,
        }
    } else {
        UniqueOp::Remove {
            instance_id,
            unique_type,
            value,
        }
    }
}

/// Renames instance `id`.
pub async fn rename(
    store: &PgEventStore,
    id: InstanceId,
    name: &str,
    creator: &str,
) -> Result<InstanceRecord, InstanceError> {
    let name = DisplayName::parse(name).map_err(|e| InstanceError::Invalid {
        field: "name",
        reason: e.to_string(),
    })?;
    change(store, id, creator, |instance| {
        Ok((
            instance.change(Some(name.clone()), None)?,
            Vec::new(),
            After::Rename(name.as_str().to_owned()),
        ))
    })
    .await
}

/// Deactivates instance `id`: its tokens are refused from the commit on; its data is kept.
pub async fn deactivate(
    store: &PgEventStore,
    id: InstanceId,
    creator: &str,
) -> Result<InstanceRecord, InstanceError> {
    change(store, id, creator, |instance| {
        Ok((
            instance.deactivate()?,
            Vec::new(),
            After::State(InstanceState::Inactive),
        ))
    })
    .await
}

/// Reactivates instance `id`.
pub async fn reactivate(
    store: &PgEventStore,
    id: InstanceId,
    creator: &str,
) -> Result<InstanceRecord, InstanceError> {
    change(store, id, creator, |instance| {
        Ok((
            instance.reactivate()?,
            Vec::new(),
            After::State(InstanceState::Active),
        ))
    })
    .await
}

/// Adds `domain` to instance `id`; a domain another instance holds is refused
/// ([`StoreError::UniqueViolation`] of `instance.domain`, claimed in the push).
pub async fn add_domain(
    store: &PgEventStore,
    id: InstanceId,
    domain: &str,
    creator: &str,
) -> Result<InstanceRecord, InstanceError> {
    let domain = Instance::parse_domain(domain)?;
    change(store, id, creator, |instance| {
        Ok((
            instance.add_domain(&domain)?,
            vec![domain_op(true, &domain)],
            After::DomainAdded(domain.clone()),
        ))
    })
    .await
}

/// Removes `domain` from instance `id`, releasing it for any instance.
pub async fn remove_domain(
    store: &PgEventStore,
    id: InstanceId,
    domain: &str,
    creator: &str,
) -> Result<InstanceRecord, InstanceError> {
    let domain = Instance::parse_domain(domain)?;
    change(store, id, creator, |instance| {
        Ok((
            instance.remove_domain(&domain)?,
            vec![domain_op(false, &domain)],
            After::DomainRemoved(domain.clone()),
        ))
    })
    .await
}

/// Removes instance `id`: `instance.removed`, and in the same transaction its tokens revoked (every
/// cache told), its domains and unique claims released, its stored secrets and command records
/// deleted. The projections drop its read-model rows when they pass the event. With
/// `erase_personal_data` every user of the instance is erased too: the instance's data keys are
/// destroyed in the same transaction.
pub async fn remove(
    store: &PgEventStore,
    id: InstanceId,
    creator: &str,
    erase_personal_data: bool,
) -> Result<InstanceRecord, InstanceError> {
    change(store, id, creator, |instance| {
        let releases = instance.domains().map(|d| domain_op(false, d)).collect();
        Ok((
            instance.remove()?,
            releases,
            After::Removed {
                erase: erase_personal_data,
            },
        ))
    })
    .await
}

/// Sets instance `id`'s own settings when given (`None` fields return to the deployment's
/// defaults) and its limits when given; what is not given stays as it is.
pub async fn set_settings(
    pool: &PgPool,
    id: InstanceId,
    settings: Option<&InstanceSettings>,
    limits: Option<&Limits>,
) -> Result<InstanceRecord, InstanceError> {
    if let Some(settings) = settings {
        settings.validate()?;
    }
    let unset = InstanceSettings::default();
    let given = settings.unwrap_or(&unset);
    let limits = limits
        .map(|l| serde_json::Value::Object(l.0.iter().map(|(k, v)| (k.clone(), (*v).into())).collect()));
    let mut tx = cairn_eventstore::begin(pool).await?;
    let updated = sqlx::query(
        "UPDATE api.instances SET \
                email_code_ttl_secs = CASE WHEN $7 THEN $2 ELSE email_code_ttl_secs END, \
                email_code_max_attempts = CASE WHEN $7 THEN $3 ELSE email_code_max_attempts END, \
                scim_emails_verified = CASE WHEN $7 THEN $4 ELSE scim_emails_verified END, \
                default_language = CASE WHEN $7 THEN $5 ELSE default_language END, \
                scim_erase_on_delete = CASE WHEN $7 THEN $8 ELSE scim_erase_on_delete END, \
                limits = coalesce($6, limits), changed_at = clock_timestamp() \
          WHERE id = $1 AND state <> 'removed'",
    )
    .bind(id.as_uuid())
    .bind(given.email_code_ttl_secs)
    .bind(given.email_code_max_attempts)
    .bind(given.scim_emails_verified)
    .bind(&given.default_language)
    .bind(limits)
    .bind(settings.is_some())
    .bind(given.scim_erase_on_delete)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(InstanceError::NotFound);
    }
    // Callers carry their instance's settings from the token cache: every cache looks again.
    cairn_auth::tokens::forget_all(&mut tx).await?;
    tx.commit().await?;
    get(pool, id).await?.ok_or(InstanceError::NotFound)
}
