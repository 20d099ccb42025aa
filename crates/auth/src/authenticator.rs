//! Bearer token → [`Caller`]. `authorization: Bearer <token>` is looked up in `api.tokens` by the
//! id embedded in the token, compared in constant time with the stored SHA-256 hash, and refused
//! when revoked or expired. Services that authenticate every request keep resolved tokens in memory
//! ([`Authenticator::cached`]) and forget them when a revocation is announced on
//! [`TOKEN_CHANNEL`](crate::tokens::TOKEN_CHANNEL). A token is valid either for one instance's APIs
//! ([`Authenticator::authenticate`], refused while its instance is deactivated or after it was
//! removed) or, as a system token, for the system API only ([`Authenticator::authenticate_system`]).

use crate::tokens::{TOKEN_CHANNEL, TokenKind, credential};
use crate::{AuthError, Caller, SystemCaller};
use cairn_domain::{AggregateId, InstanceId};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a resolved token may be served from memory at most (a lost notification is bounded by
/// this).
const CACHE_TTL: Duration = Duration::from_secs(30);

/// What a valid token resolves to.
#[derive(Clone, Debug)]
enum Principal {
    Instance(Caller),
    System(SystemCaller),
}

#[derive(Clone, Debug)]
struct Cached {
    caller: Principal,
    hash: String,
    expires_at: Option<DateTime<Utc>>,
    cached_at: Instant,
}

#[derive(Debug, Default)]
struct TokenCache {
    entries: Mutex<HashMap<String, Cached>>,
    /// Bumped by every eviction, so a lookup that raced one does not cache what it read.
    generation: AtomicU64,
}

impl TokenCache {
    fn evict(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
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
    cache: Option<Arc<TokenCache>>,
}

impl Authenticator {
    /// Looks every token up in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, cache: None }
    }

    /// Looks tokens up in `pool` and caches them; the returned listener forgets revoked tokens
    /// and must run for the cache to stay current (a service hands it to its runtime). Until it
    /// runs, and after it stops, nothing is served from the cache for longer than its 30 s limit.
    pub fn cached_listening(pool: PgPool) -> (Self, RevocationListener) {
        let cache = Arc::new(TokenCache::default());
        let listener = RevocationListener {
            pool: pool.clone(),
            cache: cache.clone(),
        };
        let authenticator = Self {
            pool,
            cache: Some(cache),
        };
        (authenticator, listener)
    }

    /// Looks tokens up in `pool` and caches them, listening for revocations in a detached task
    /// until `shutdown` (tools and tests; services use [`Authenticator::cached_listening`]).
    pub fn cached(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (authenticator, listener) = Self::cached_listening(pool);
        tokio::spawn(listener.run(shutdown));
        authenticator
    }

    /// Forgets a token (`*`: every token) in this process at once; the revocation itself announces
    /// it to the other processes when it commits.
    pub fn forget(&self, id: &str) {
        if let Some(cache) = &self.cache {
            cache.evict(id);
        }
    }

    /// The caller behind an `authorization` header value, at `now` (for expiry), for an
    /// instance's APIs: a system token is refused here, as is a token of a deactivated or removed
    /// instance.
    pub async fn authenticate(&self, header: Option<&str>, now: DateTime<Utc>) -> Result<Caller, AuthError> {
        match self.resolve(header, now).await? {
            Principal::Instance(caller) => Ok(caller),
            Principal::System(_) => Err(AuthError::PermissionDenied(
                "a system token is valid for the system API only, not for an instance's API",
            )),
        }
    }

    /// The system caller behind an `authorization` header value, for the system API: only a
    /// system token is accepted.
    pub async fn authenticate_system(
        &self,
        header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<SystemCaller, AuthError> {
        match self.resolve(header, now).await? {
            Principal::System(caller) => Ok(caller),
            Principal::Instance(_) => Err(AuthError::PermissionDenied(
                "the system API takes a system token; an instance's token is not valid here",
            )),
        }
    }

    async fn resolve(&self, header: Option<&str>, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let presented = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(AuthError::Unauthenticated("missing bearer token"))?;
        let parts =
            cairn_secrets::parse_token(presented).ok_or(AuthError::Unauthenticated("invalid token"))?;
        let generation = self.cache.as_ref().map(|c| c.generation.load(Ordering::SeqCst));
        if let Some(cache) = &self.cache {
            let hit = cache
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(parts.id)
                .cloned();
            if let Some(hit) = hit.filter(|h| h.cached_at.elapsed() < CACHE_TTL) {
                if !cairn_secrets::verify_token(presented, &hit.hash) {
                    return Err(AuthError::Unauthenticated("invalid token"));
                }
                if hit.expires_at.is_some_and(|at| at <= now) {
                    return Err(AuthError::Unauthenticated("the token is revoked or expired"));
                }
                return Ok(hit.caller);
            }
        }
        let stored = credential(&self.pool, parts.id)
            .await?
            .ok_or(AuthError::Unauthenticated("invalid token"))?;
        if !cairn_secrets::verify_token(presented, &stored.hash) {
            return Err(AuthError::Unauthenticated("invalid token"));
        }
        if stored.revoked_at.is_some() || stored.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Unauthenticated("the token is revoked or expired"));
        }
        let caller = match (stored.kind, stored.instance_id) {
            (TokenKind::System, None) => Principal::System(SystemCaller {
                token_id: parts.id.to_owned(),
            }),
            (TokenKind::System, Some(_)) | (_, None) => {
                return Err(AuthError::Internal(format!(
                    "token {} has kind {} and instance {:?}",
                    parts.id,
                    stored.kind.as_str(),
                    stored.instance_id
                )));
            }
            (_, Some(instance_id)) => {
                match stored.instance_state.as_deref() {
                    Some("inactive") => {
                        return Err(AuthError::PermissionDenied(
                            "the token's instance is deactivated; its data is kept until it is reactivated",
                        ));
                    }
                    Some("removed") => {
                        return Err(AuthError::Unauthenticated("the token's instance was removed"));
                    }
                    _ => {}
                }
                Principal::Instance(Caller {
                    token_id: parts.id.to_owned(),
                    instance_id: InstanceId::from_uuid(instance_id),
                    org_id: stored.org_id.map(AggregateId::from_uuid),
                    principal_id: AggregateId::from_uuid(stored.principal_id),
                    // A role this build does not know grants nothing.
                    roles: stored.roles.iter().filter_map(|r| r.parse().ok()).collect(),
                    settings: Arc::new(stored.settings),
                })
            }
        };
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            let mut entries = cache.entries.lock().unwrap_or_else(|p| p.into_inner());
            // A revocation announced while this lookup ran may concern this token: do not cache.
            if cache.generation.load(Ordering::SeqCst) == generation {
                entries.insert(
                    parts.id.to_owned(),
                    Cached {
                        caller: caller.clone(),
                        hash: stored.hash,
                        expires_at: stored.expires_at,
                        cached_at: Instant::now(),
                    },
                );
            }
        }
        Ok(caller)
    }
}

/// The `LISTEN` on [`TOKEN_CHANNEL`] that keeps a cached [`Authenticator`] current.
#[derive(Debug)]
pub struct RevocationListener {
    pool: PgPool,
    cache: Arc<TokenCache>,
}

impl RevocationListener {
    /// Listens (reconnecting with backoff) until `stop` is cancelled, then empties the cache.
    pub async fn run(self, stop: CancellationToken) {
        listen_for_revocations(self.pool, self.cache, stop).await;
    }
}

async fn listen_for_revocations(pool: PgPool, cache: Arc<TokenCache>, shutdown: CancellationToken) {
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
