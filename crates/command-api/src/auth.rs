//! Authentication and authorisation. `authorization: Bearer <token>` is resolved against
//! `api.tokens` (looked up by the id embedded in the token, compared in constant time with the
//! stored SHA-256 hash, refused when revoked or expired) to an instance, an optional organisation,
//! a principal and roles. Every handler states the permission it needs; every read and write is
//! scoped to the token's instance and organisation.

use crate::error::ApiError;
use cairn_domain::{AggregateId, InstanceId};
use cairn_readmodel::Scope;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use uuid::Uuid;

/// Roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything in the instance.
    InstanceAdmin,
    /// Everything in one organisation, and its settings.
    OrgAdmin,
    /// Users and groups.
    UserManager,
    /// Users and groups, as an identity provider over SCIM.
    ScimProvisioner,
    /// Reads only.
    ReadOnly,
}

impl Role {
    /// The role's name as stored and as accepted in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceAdmin => "instance_admin",
            Self::OrgAdmin => "org_admin",
            Self::UserManager => "user_manager",
            Self::ScimProvisioner => "scim_provisioner",
            Self::ReadOnly => "read_only",
        }
    }
}

impl FromStr for Role {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        Ok(match s {
            "instance_admin" => Self::InstanceAdmin,
            "org_admin" => Self::OrgAdmin,
            "user_manager" => Self::UserManager,
            "scim_provisioner" => Self::ScimProvisioner,
            "read_only" => Self::ReadOnly,
            other => {
                return Err(ApiError::invalid(
                    "roles",
                    format!(
                        "unknown role {other:?}; use instance_admin, org_admin, user_manager, scim_provisioner or read_only"
                    ),
                ));
            }
        })
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read users, groups, organisations.
    Read,
    /// Create and change users and groups.
    ManageUsers,
    /// Vouch for an email address or receive a verification code.
    VouchForEmail,
    /// Change an organisation's own settings (name, domains).
    ManageOwnOrg,
    /// Create and remove organisations, manage tokens, SMTP settings, projections.
    AdministerInstance,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's id.
    pub token_id: String,
    /// The tenant.
    pub instance_id: InstanceId,
    /// The organisation the token is bound to, if any.
    pub org_id: Option<AggregateId>,
    /// The user the token acts as.
    pub principal_id: AggregateId,
    /// The token's roles.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Refuses with `PERMISSION_DENIED` unless one of the caller's roles grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        let granted = self.roles.iter().any(|role| {
            matches!(
                (role, permission),
                (Role::InstanceAdmin, _)
                    | (_, Permission::Read)
                    | (
                        Role::OrgAdmin,
                        Permission::ManageUsers | Permission::VouchForEmail | Permission::ManageOwnOrg
                    )
                    | (
                        Role::UserManager | Role::ScimProvisioner,
                        Permission::ManageUsers | Permission::VouchForEmail
                    )
            )
        });
        if granted {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(
                "the token's roles do not allow this call",
            ))
        }
    }

    /// The read scope of this caller.
    pub fn scope(&self) -> Scope {
        Scope {
            instance_id: self.instance_id.as_uuid(),
            org_id: self.org_id.map(|o| o.as_uuid()),
        }
    }

    /// True when the caller may see resources of `org`.
    pub fn sees_org(&self, org: AggregateId) -> bool {
        self.org_id.is_none_or(|own| own == org)
    }

    /// The caller's id as recorded in events' `creator`.
    pub fn creator(&self) -> String {
        self.principal_id.to_string()
    }
}

/// The `NOTIFY` channel on which a revoked token's id (or `*` for "forget every cached token") is
/// announced, in the revoking transaction.
pub const TOKEN_CHANNEL: &str = "cairn_tokens";

/// How long a resolved token may be served from memory at most (a lost notification is bounded by
/// this).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Cached {
    caller: Caller,
    hash: String,
    expires_at: Option<DateTime<Utc>>,
    cached_at: std::time::Instant,
}

#[derive(Debug, Default)]
struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
    generation: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    fn evict(&self, id: &str) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if id == "*" {
            entries.clear();
        } else {
            entries.remove(id);
        }
    }
}

/// Resolves bearer tokens. With [`Authenticator::cached`], resolved tokens are kept in memory and
/// forgotten when a revocation is announced on [`TOKEN_CHANNEL`] (this process forgets at once;
/// other processes when the notification arrives, within milliseconds), and after 30 s in any case.
#[derive(Clone, Debug)]
pub struct Authenticator {
    pool: PgPool,
    cache: Option<std::sync::Arc<TokenCache>>,
}

impl Authenticator {
    /// Looks every token up in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, cache: None }
    }

    /// Looks tokens up in `pool` and caches them, listening for revocations until `shutdown`.
    pub fn cached(pool: PgPool, shutdown: tokio_util::sync::CancellationToken) -> Self {
        let cache = std::sync::Arc::new(TokenCache::default());
        tokio::spawn(listen_for_revocations(pool.clone(), cache.clone(), shutdown));
        Self {
            pool,
            cache: Some(cache),
        }
    }

    /// Forgets a token in this process at once (the revoking call also announces it).
    pub fn forget(&self, id: &str) {
        if let Some(cache) = &self.cache {
            cache.evict(id);
        }
    }

    /// The caller behind an `authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>, now: DateTime<Utc>) -> Result<Caller, ApiError> {
        let presented = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthenticated("missing bearer token"))?;
        let parts =
            cairn_secrets::parse_token(presented).ok_or(ApiError::Unauthenticated("invalid token"))?;
        let generation = self
            .cache
            .as_ref()
            .map(|c| c.generation.load(std::sync::atomic::Ordering::SeqCst));
        if let Some(cache) = &self.cache {
            let hit = cache
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(parts.id)
                .cloned();
            if let Some(hit) = hit.filter(|h| h.cached_at.elapsed() < CACHE_TTL) {
                if !cairn_secrets::verify_token(presented, &hit.hash) {
                    return Err(ApiError::Unauthenticated("invalid token"));
                }
                if hit.expires_at.is_some_and(|at| at <= now) {
                    return Err(ApiError::Unauthenticated("the token is revoked or expired"));
                }
                return Ok(hit.caller);
            }
        }
        let row = sqlx::query(
            "SELECT instance_id, org_id, principal_id, roles, hash, expires_at, revoked_at FROM api.tokens WHERE id = $1",
        )
        .bind(parts.id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(ApiError::Unauthenticated("invalid token"))?;
        let hash: String = row.try_get("hash")?;
        if !cairn_secrets::verify_token(presented, &hash) {
            return Err(ApiError::Unauthenticated("invalid token"));
        }
        let revoked: Option<DateTime<Utc>> = row.try_get("revoked_at")?;
        let expires: Option<DateTime<Utc>> = row.try_get("expires_at")?;
        if revoked.is_some() || expires.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthenticated("the token is revoked or expired"));
        }
        let roles: Vec<String> = row.try_get("roles")?;
        let caller = Caller {
            token_id: parts.id.to_owned(),
            instance_id: InstanceId::from_uuid(row.try_get("instance_id")?),
            org_id: row
                .try_get::<Option<Uuid>, _>("org_id")?
                .map(AggregateId::from_uuid),
            principal_id: AggregateId::from_uuid(row.try_get("principal_id")?),
            roles: roles.iter().filter_map(|r| r.parse().ok()).collect(),
        };
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            let mut entries = cache.entries.lock().unwrap_or_else(|p| p.into_inner());
            // A revocation announced while this lookup ran may concern this token: do not cache.
            if cache.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
                entries.insert(
                    parts.id.to_owned(),
                    Cached {
                        caller: caller.clone(),
                        hash,
                        expires_at: expires,
                        cached_at: std::time::Instant::now(),
                    },
                );
            }
        }
        Ok(caller)
    }
}

async fn listen_for_revocations(
    pool: PgPool,
    cache: std::sync::Arc<TokenCache>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    cairn_eventstore::listen_forever(&pool, TOKEN_CHANNEL, "token revocations", &shutdown, |heard| {
        match heard {
            // Anything announced while not listening is unknown: forget everything.
            cairn_eventstore::Heard::Listening | cairn_eventstore::Heard::Lost => cache.evict("*"),
            cairn_eventstore::Heard::Notification(n) => cache.evict(n.payload()),
        }
    })
    .await;
    // Not listening any more: nothing cached can be trusted to be current.
    cache.evict("*");
}

/// Announces (in the caller's transaction) that `id` — or `*`, every token — was revoked.
pub async fn announce_revocation(conn: &mut sqlx::PgConnection, id: &str) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(TOKEN_CHANNEL)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A token to store: the row of `api.tokens` without the secret.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The tenant.
    pub instance_id: InstanceId,
    /// Organisation binding.
    pub org_id: Option<AggregateId>,
    /// The user it acts as.
    pub principal_id: AggregateId,
    /// `pat`, `api` or `scim`.
    pub kind: &'static str,
    /// Its roles.
    pub roles: Vec<Role>,
    /// A note for operators.
    pub description: Option<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Issues a token and stores its hash (in the caller's transaction); returns (id, plaintext).
pub async fn store_token(
    conn: &mut sqlx::PgConnection,
    token: &NewToken,
) -> Result<(String, cairn_secrets::Zeroizing<String>), ApiError> {
    let prefix = if token.kind == "scim" {
        cairn_secrets::SCIM_PREFIX
    } else {
        cairn_secrets::PAT_PREFIX
    };
    let issued = cairn_secrets::issue_token(prefix).map_err(|e| ApiError::Internal(e.to_string()))?;
    let roles: Vec<&str> = token.roles.iter().map(|r| r.as_str()).collect();
    sqlx::query(
        "INSERT INTO api.tokens (id, instance_id, org_id, principal_id, kind, roles, hash, description, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&issued.id)
    .bind(token.instance_id.as_uuid())
    .bind(token.org_id.map(|o| o.as_uuid()))
    .bind(token.principal_id.as_uuid())
    .bind(token.kind)
    .bind(&roles)
    .bind(&issued.hash)
    .bind(&token.description)
    .bind(token.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok((issued.id.clone(), issued.plaintext))
}
