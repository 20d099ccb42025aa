//! State shared by every API surface (gRPC services and REST routes).

use crate::error::ApiError;
use crate::exec::Executor;
use cairn_auth::{Authenticator, Caller};
use cairn_domain::{Aggregate, Position, StoredEvent};
use cairn_readmodel::PositionWaiter;
use cairn_secrets::{CodeSpec, Keyring};
use std::time::Duration;

/// Settings of the email verification flow.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// How long a code is valid.
    pub code_expiry: Duration,
    /// Failed attempts after which a code is void.
    pub max_attempts: u32,
    /// Code length and alphabet.
    pub code_spec: CodeSpec,
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct Api {
    /// Runs commands.
    pub exec: Executor,
    /// Resolves tokens.
    pub auth: Authenticator,
    /// Read-your-writes.
    pub waiter: PositionWaiter,
    /// Encrypts verification codes and SMTP passwords.
    pub keys: Keyring,
    /// Email verification settings.
    pub email: EmailSettings,
    /// How long a query waits for its minimum position.
    pub wait_timeout: Duration,
    /// Whether SCIM provisioners may mark emails verified (the instance trusts its IdP).
    pub trust_idp_emails: bool,
    /// Recently resolved target organisations.
    pub org_cache: OrgCache,
    /// Permits for `RemoveUser` commands running at once (see `REMOVALS_AT_ONCE`).
    pub removals: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Key: (instance, requested org id text, caller's org binding).
type OrgKey = (
    cairn_domain::InstanceId,
    String,
    Option<cairn_domain::AggregateId>,
);

/// A few seconds' memory of which organisation a create goes to (see `users::target_org`).
#[derive(Clone, Debug, Default)]
pub struct OrgCache {
    entries: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<OrgKey, (cairn_domain::AggregateId, std::time::Instant)>>,
    >,
}

impl OrgCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(5);

    /// A remembered resolution younger than the TTL.
    pub fn get(&self, key: &OrgKey) -> Option<cairn_domain::AggregateId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(org, _)| *org)
    }

    /// Remembers a resolution.
    pub fn put(&self, key: OrgKey, org: cairn_domain::AggregateId) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(key, (org, std::time::Instant::now()));
    }
}

impl Api {
    /// The caller of a gRPC request.
    pub async fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, ApiError> {
        // Authenticated at the server's edge (`crate::authn`).
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(caller.clone());
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.auth.authenticate(header, self.exec.clock.now()).await?)
    }

    /// The request's `idempotency-key`, if any.
    pub fn idempotency_key<T>(request: &tonic::Request<T>) -> Option<String> {
        request
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Waits until `projections` reached `position` for the caller's instance.
    pub async fn wait(
        &self,
        caller: &Caller,
        projections: &[&str],
        position: Option<Position>,
    ) -> Result<(), ApiError> {
        if let Some(position) = position {
            self.waiter
                .wait_for_position(projections, caller.instance_id, position, self.wait_timeout)
                .await?;
        }
        Ok(())
    }
}

/// Applies a decision to a copy of `state` in memory, as if its events were committed: for
/// commands that decide in two steps against the intermediate state (set an email, then add a code
/// for it).
pub fn preview<A: Aggregate>(
    state: &A,
    decision: &cairn_domain::Decision,
    template: &StoredEvent,
) -> Result<A, ApiError> {
    let mut next: A =
        serde_json::from_value(serde_json::to_value(state).map_err(|e| ApiError::Internal(e.to_string()))?)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    for (sequence, (event_type, payload)) in (state.sequence() + 1..).zip(decision.events.iter()) {
        let event = StoredEvent {
            sequence,
            event_type: event_type.clone(),
            payload: payload.clone(),
            ..template.clone()
        };
        next.apply(&event)?;
    }
    Ok(next)
}
