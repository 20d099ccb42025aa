//! `api.tokens`: every statement over the table is in this module, so the rules of guarantee 9
//! (random, shown once, stored only as a hash, revocable, expiring) are kept in one place whoever
//! issues the token (command-api, `cairn token`, the bootstrap, test stacks).
//!
//! The token's format and hash are `cairn-secrets`' ([`cairn_secrets::issue_token`]); this module
//! stores what it issues, and every revocation is announced on [`TOKEN_CHANNEL`] in the revoking
//! transaction, so every process's cache ([`crate::Authenticator::cached`]) forgets the token when
//! the revocation commits.

use crate::{AuthError, Role};
use cairn_domain::{AggregateId, InstanceId};
use cairn_secrets::Zeroizing;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The `NOTIFY` channel on which a revoked token's id (or `*` for "forget every cached token") is
/// announced, in the revoking transaction.
pub const TOKEN_CHANNEL: &str = "cairn_tokens";

/// The columns of a [`TokenRecord`].
const COLUMNS: &str =
    "id, instance_id, principal_id, org_id, roles, description, created_at, expires_at, revoked_at, kind";

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A personal access token of a user, added with the user's `AddPersonalAccessToken`.
    Pat,
    /// An API token made by an administrator (`CreateToken`, `cairn token create`).
    Api,
    /// An identity provider's SCIM token.
    Scim,
    /// A system token: the system API (instances) only, valid for no instance's API
    /// (`cairn system-token create`).
    System,
}

impl TokenKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pat => "pat",
            Self::Api => "api",
            Self::Scim => "scim",
            Self::System => "system",
        }
    }

    /// A kind an administrator may ask for: `api` or `scim` (personal access tokens come with
    /// their user's event, through `AddPersonalAccessToken`).
    pub fn requested(kind: &str) -> Result<Self, AuthError> {
        match kind {
            "api" => Ok(Self::Api),
            "scim" => Ok(Self::Scim),
            other => Err(AuthError::Invalid {
                field: "kind",
                reason: format!("{other:?} is not api or scim"),
            }),
        }
    }

    fn stored(kind: &str) -> Result<Self, AuthError> {
        match kind {
            "pat" => Ok(Self::Pat),
            "api" => Ok(Self::Api),
            "scim" => Ok(Self::Scim),
            "system" => Ok(Self::System),
            other => Err(AuthError::Internal(format!(
                "api.tokens holds a token of kind {other:?}"
            ))),
        }
    }

    /// The prefix of its plaintext: `cairn_scim_` for SCIM tokens, `cairn_sys_` for system
    /// tokens, `cairn_pat_` for the others.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Scim => cairn_secrets::SCIM_PREFIX,
            Self::System => cairn_secrets::SYSTEM_PREFIX,
            Self::Pat | Self::Api => cairn_secrets::PAT_PREFIX,
        }
    }
}

/// A token to issue: its row of `api.tokens` without the secret.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The tenant.
    pub instance_id: InstanceId,
    /// Organisation binding.
    pub org_id: Option<AggregateId>,
    /// The user it acts as.
    pub principal_id: AggregateId,
    /// What it is for.
    pub kind: TokenKind,
    /// Its roles.
    pub roles: Vec<Role>,
    /// A note for operators.
    pub description: Option<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token just issued: its id, and the plaintext to show once (only its hash was stored).
pub struct Issued {
    /// The token id (the lookup key, not secret).
    pub id: String,
    /// The whole token; shown to its owner once, then forgotten.
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A stored token as administrators see it: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token id.
    pub id: String,
    /// The tenant ([`InstanceId::SYSTEM`] for a system token, which belongs to none).
    pub instance_id: InstanceId,
    /// The user it acts as (nil for a system token).
    pub principal_id: AggregateId,
    /// Organisation binding.
    pub org_id: Option<AggregateId>,
    /// Its roles as stored.
    pub roles: Vec<String>,
    /// A note for operators.
    pub description: Option<String>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it expires, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// What it is for.
    pub kind: TokenKind,
}

impl TokenRecord {
    fn from_row(row: &PgRow) -> Result<Self, AuthError> {
        Ok(Self {
            id: row.try_get("id")?,
            instance_id: row
                .try_get::<Option<Uuid>, _>("instance_id")?
                .map_or(InstanceId::SYSTEM, InstanceId::from_uuid),
            principal_id: AggregateId::from_uuid(row.try_get("principal_id")?),
            org_id: row
                .try_get::<Option<Uuid>, _>("org_id")?
                .map(AggregateId::from_uuid),
            roles: row.try_get("roles")?,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            kind: TokenKind::stored(row.try_get("kind")?)?,
        })
    }
}

/// Issues a token and stores its hash, in the caller's transaction (so a token and the event that
/// records it commit together).
pub async fn issue(conn: &mut PgConnection, token: &NewToken) -> Result<Issued, AuthError> {
    let issued =
        cairn_secrets::issue_token(token.kind.prefix()).map_err(|e| AuthError::Internal(e.to_string()))?;
    let roles: Vec<&str> = token.roles.iter().map(|r| r.as_str()).collect();
    sqlx::query(
        "INSERT INTO api.tokens (id, instance_id, org_id, principal_id, kind, roles, hash, description, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&issued.id)
    .bind(token.instance_id.as_uuid())
    .bind(token.org_id.map(|o| o.as_uuid()))
    .bind(token.principal_id.as_uuid())
    .bind(token.kind.as_str())
    .bind(&roles)
    .bind(&issued.hash)
    .bind(&token.description)
    .bind(token.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(Issued {
        id: issued.id.clone(),
        secret: issued.plaintext,
    })
}

/// Issues a system token (valid for the system API only, for no instance) and stores its hash, in
/// the caller's transaction.
pub async fn issue_system(
    conn: &mut PgConnection,
    description: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Issued, AuthError> {
    let issued = cairn_secrets::issue_token(TokenKind::System.prefix())
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO api.tokens (id, instance_id, org_id, principal_id, kind, roles, hash, description, expires_at) \
         VALUES ($1, NULL, NULL, $2, 'system', '{}', $3, $4, $5)",
    )
    .bind(&issued.id)
    .bind(Uuid::nil())
    .bind(&issued.hash)
    .bind(description)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(Issued {
        id: issued.id.clone(),
        secret: issued.plaintext,
    })
}

/// The system tokens, oldest first (revoked ones too with `include_revoked`).
pub async fn list_system<'c, E>(executor: E, include_revoked: bool) -> Result<Vec<TokenRecord>, AuthError>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api.tokens WHERE kind = 'system' AND ($1 OR revoked_at IS NULL) ORDER BY created_at"
    ))
    .bind(include_revoked)
    .fetch_all(executor)
    .await?
    .iter()
    .map(TokenRecord::from_row)
    .collect()
}

/// Revokes every token of `instance` (it is being removed) and tells every cache to forget all
/// tokens, in the caller's transaction. Returns how many it revoked.
pub async fn revoke_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<u64, AuthError> {
    let revoked = sqlx::query(
        "UPDATE api.tokens SET revoked_at = clock_timestamp() WHERE instance_id = $1 AND revoked_at IS NULL",
    )
    .bind(instance.as_uuid())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    announce_revocation(conn, "*").await?;
    Ok(revoked)
}

/// Tells every process's token cache to forget every token, in the caller's transaction (an
/// instance was deactivated or reactivated: its tokens' validity changed).
pub async fn forget_all(conn: &mut PgConnection) -> Result<(), AuthError> {
    announce_revocation(conn, "*").await
}

/// Token `id` of `instance`, if it exists there.
pub async fn get(
    conn: &mut PgConnection,
    instance: InstanceId,
    id: &str,
) -> Result<Option<TokenRecord>, AuthError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api.tokens WHERE id = $1 AND instance_id = $2"
    ))
    .bind(id)
    .bind(instance.as_uuid())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(TokenRecord::from_row)
    .transpose()
}

/// Which tokens [`list`] returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter {
    /// Only this instance's (`None`: every instance's, for the operator's command line).
    pub instance: Option<InstanceId>,
    /// Only the tokens acting as this user.
    pub principal: Option<AggregateId>,
    /// Revoked tokens too.
    pub include_revoked: bool,
}

/// The tokens `filter` selects, oldest first.
pub async fn list<'c, E>(executor: E, filter: ListFilter) -> Result<Vec<TokenRecord>, AuthError>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api.tokens \
         WHERE ($1::uuid IS NULL OR instance_id = $1) AND ($2::uuid IS NULL OR principal_id = $2) \
           AND ($3 OR revoked_at IS NULL) \
         ORDER BY created_at"
    ))
    .bind(filter.instance.map(|i| i.as_uuid()))
    .bind(filter.principal.map(|p| p.as_uuid()))
    .bind(filter.include_revoked)
    .fetch_all(executor)
    .await?
    .iter()
    .map(TokenRecord::from_row)
    .collect()
}

/// Revokes token `id` of `instance` (`None`: of whichever instance, for the operator's command
/// line) and announces it, in the caller's transaction. Revoking a revoked token keeps its first
/// revocation time. `None` when there is no such token.
pub async fn revoke(
    conn: &mut PgConnection,
    instance: Option<InstanceId>,
    id: &str,
) -> Result<Option<TokenRecord>, AuthError> {
    let row = sqlx::query(&format!(
        "UPDATE api.tokens SET revoked_at = coalesce(revoked_at, clock_timestamp()) \
         WHERE id = $1 AND ($2::uuid IS NULL OR instance_id = $2) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(instance.map(|i| i.as_uuid()))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    announce_revocation(conn, id).await?;
    TokenRecord::from_row(&row).map(Some)
}

/// Revokes the *active* token `id` acting as `principal` in `instance` and announces it, in the
/// caller's transaction: `false` when there is none (unknown, another user's, revoked already).
pub async fn revoke_active(
    conn: &mut PgConnection,
    instance: InstanceId,
    principal: AggregateId,
    id: &str,
) -> Result<bool, AuthError> {
    let revoked = sqlx::query(
        "UPDATE api.tokens SET revoked_at = clock_timestamp() \
         WHERE id = $1 AND instance_id = $2 AND principal_id = $3 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(instance.as_uuid())
    .bind(principal.as_uuid())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if revoked == 0 {
        return Ok(false);
    }
    announce_revocation(conn, id).await?;
    Ok(true)
}

/// Revokes every active token acting as `principal` in `instance` (its user is being removed) and
/// tells every cache to forget all tokens, in the caller's transaction. Returns how many it
/// revoked.
pub async fn revoke_all_of(
    conn: &mut PgConnection,
    instance: InstanceId,
    principal: AggregateId,
) -> Result<u64, AuthError> {
    let revoked = sqlx::query(
        "UPDATE api.tokens SET revoked_at = clock_timestamp() \
         WHERE instance_id = $1 AND principal_id = $2 AND revoked_at IS NULL",
    )
    .bind(instance.as_uuid())
    .bind(principal.as_uuid())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    announce_revocation(conn, "*").await?;
    Ok(revoked)
}

/// Announces (in the caller's transaction) that `id` — or `*`, every token — was revoked.
async fn announce_revocation(conn: &mut PgConnection, id: &str) -> Result<(), AuthError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(TOKEN_CHANNEL)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What authentication needs of a stored token.
pub(crate) struct Credential {
    /// `None` for a system token.
    pub(crate) instance_id: Option<Uuid>,
    /// `active`, `inactive` or `removed`; `None` for a system token (and for an instance the
    /// registry does not list: every instance is made by `cairn-instances`, which lists it).
    pub(crate) instance_state: Option<String>,
    pub(crate) kind: TokenKind,
    pub(crate) settings: cairn_domain::InstanceSettings,
    pub(crate) org_id: Option<Uuid>,
    pub(crate) principal_id: Uuid,
    pub(crate) roles: Vec<String>,
    pub(crate) hash: String,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// The stored credential of token `id`, revoked or not.
pub(crate) async fn credential(pool: &sqlx::PgPool, id: &str) -> Result<Option<Credential>, AuthError> {
    let Some(row) = sqlx::query(
        "SELECT t.instance_id, t.org_id, t.principal_id, t.roles, t.hash, t.expires_at, t.revoked_at, t.kind, \
                i.state AS instance_state, i.email_code_ttl_secs, i.email_code_max_attempts, \
                i.scim_emails_verified, i.default_language, i.scim_erase_on_delete \
           FROM api.tokens t LEFT JOIN api.instances i ON i.id = t.instance_id WHERE t.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(Credential {
        instance_id: row.try_get("instance_id")?,
        instance_state: row.try_get("instance_state")?,
        kind: TokenKind::stored(row.try_get("kind")?)?,
        settings: cairn_domain::InstanceSettings {
            email_code_ttl_secs: row.try_get("email_code_ttl_secs")?,
            email_code_max_attempts: row.try_get("email_code_max_attempts")?,
            scim_emails_verified: row.try_get("scim_emails_verified")?,
            default_language: row.try_get("default_language")?,
            scim_erase_on_delete: row.try_get("scim_erase_on_delete")?,
        },
        org_id: row.try_get("org_id")?,
        principal_id: row.try_get("principal_id")?,
        roles: row.try_get("roles")?,
        hash: row.try_get("hash")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    }))
}

/// The domain id of a personal access token (the `token_id` of `user.pat.added` and
/// `user.pat.removed`): its 12-byte token id, zero-padded.
pub fn pat_uuid(token_id: &str) -> Uuid {
    let mut bytes = [0_u8; 16];
    for (i, chunk) in token_id.as_bytes().chunks(2).take(12).enumerate() {
        bytes[i] = std::str::from_utf8(chunk)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pat_id_is_its_token_id_zero_padded() {
        assert_eq!(
            pat_uuid("0123456789abcdef01234567").to_string(),
            "01234567-89ab-cdef-0123-456700000000"
        );
    }

    #[test]
    fn administrators_ask_for_api_or_scim_tokens_only() {
        assert_eq!(TokenKind::requested("api").unwrap(), TokenKind::Api);
        assert_eq!(TokenKind::requested("scim").unwrap(), TokenKind::Scim);
        assert!(matches!(
            TokenKind::requested("pat"),
            Err(AuthError::Invalid { field: "kind", .. })
        ));
        assert_eq!(TokenKind::Scim.prefix(), cairn_secrets::SCIM_PREFIX);
        assert_eq!(TokenKind::Api.prefix(), cairn_secrets::PAT_PREFIX);
    }
}
