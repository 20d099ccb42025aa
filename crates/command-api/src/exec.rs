//! Running commands: load the aggregate (snapshot plus tail), let the domain decide, push the
//! decision with the aggregate's sequence as the expected one, and on a conflict re-decide against
//! fresh state when the caller did not pin a sequence. A command with an idempotency key runs in a
//! transaction that commits its events with the key and its response, so a repeated key returns
//! the first response and a crash can never separate the events from the key. The key is looked up
//! before the command reads anything and claimed at the end, so the transaction takes its position
//! (its id) only at its first write. A transaction whose push meets an aggregate that a younger
//! transaction changed first runs again from the start (DESIGN.md guarantee 11).

use crate::error::ApiError;
use cairn_auth::Caller;
use cairn_domain::{Aggregate, AggregateId, Clock, Decision, InstanceId, Position, StoredEvent, personal};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push, Snapshot, StoreError};
use cairn_personal::{Db, SubjectKey};
use sha2::Digest;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::future::Future;
use std::sync::Arc;

/// How often an unpinned command decides against fresh state after a concurrent change of its
/// aggregate before it gives up with `ABORTED`.
const DECISIONS: usize = 4;

/// Aggregates with more events than this since their snapshot get a new one.
const SNAPSHOT_EVERY: usize = 200;

/// What a command plans for its aggregate.
pub struct Plan {
    /// The aggregate's decision.
    pub decision: Decision,
    /// The resource owner recorded on the events.
    pub owner: AggregateId,
    /// Further pushes for other aggregates, committed in the same transaction.
    pub also: Vec<Push>,
}

impl Plan {
    /// A plan with only the aggregate's own decision.
    pub fn new(decision: Decision, owner: AggregateId) -> Self {
        Self {
            decision,
            owner,
            also: Vec::new(),
        }
    }
}

/// The aggregate after a command, and the events it committed (empty when nothing changed).
pub struct Written<A> {
    /// The state after the command.
    pub state: A,
    /// The committed events of this aggregate and of `Plan::also`.
    pub events: Vec<StoredEvent>,
}

impl<A> Written<A> {
    /// The position of the last event, if any.
    pub fn position(&self) -> Option<Position> {
        self.events.last().map(|e| e.position)
    }
}

/// The connection a command writes through: a transaction (begun lazily) or, for a command that
/// needs nothing but its push, none at all — the push is then one autocommit statement, one round
/// trip.
///
/// A command with an idempotency key *requires* its transaction (its events commit with the key),
/// but begins it only at its first push: reads before that go through the pool without the command
/// holding a connection meanwhile, so a burst of keyed commands larger than the pool cannot leave
/// every connection held by a command that waits for one more.
pub struct Tx {
    pool: PgPool,
    inner: Option<Transaction<'static, Postgres>>,
    required: bool,
}

impl Tx {
    /// A lazy transaction on `pool`.
    pub fn lazy(pool: PgPool) -> Self {
        Self {
            pool,
            inner: None,
            required: false,
        }
    }

    /// A lazy transaction on `pool` that every push of the command goes through.
    pub fn required(pool: PgPool) -> Self {
        Self {
            pool,
            inner: None,
            required: true,
        }
    }

    /// The transaction's connection, beginning the transaction if needed: everything written
    /// through it, and every later push of this command, commits together.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, ApiError> {
        if self.inner.is_none() {
            self.inner = Some(cairn_eventstore::begin(&self.pool).await?);
        }
        match self.inner.as_mut() {
            Some(tx) => Ok(&mut **tx),
            None => Err(ApiError::Internal("transaction not begun".into())),
        }
    }

    /// Commits the transaction, if one was begun.
    pub async fn commit(self) -> Result<(), ApiError> {
        if let Some(tx) = self.inner {
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Runs commands against the event store.
#[derive(Clone)]
pub struct Executor {
    /// The store.
    pub store: PgEventStore,
    /// The pool transactions come from.
    pub pool: PgPool,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Seals personal data before a push and opens it after a load.
    pub vault: cairn_personal::Vault,
}

impl Executor {
    /// Loads an aggregate: its snapshot (if one of the current schema exists) plus the events after
    /// it; refreshes the snapshot when the tail is long.
    pub async fn load<A: Aggregate>(&self, instance: InstanceId, id: AggregateId) -> Result<A, ApiError> {
        self.load_on(None, instance, id).await
    }

    /// [`Executor::load`] on `conn` when given: a command that holds a transaction reads through
    /// it, never through a second connection from the pool (with as many such commands as the pool
    /// has connections, each would wait for another forever). Snapshots are then only read; the
    /// next load outside a transaction refreshes them.
    async fn load_on<A: Aggregate>(
        &self,
        conn: Option<&mut PgConnection>,
        instance: InstanceId,
        id: AggregateId,
    ) -> Result<A, ApiError> {
        let in_transaction = conn.is_some();
        let mut pooled;
        let conn: &mut PgConnection = match conn {
            Some(conn) => conn,
            None => {
                pooled = self.pool.acquire().await?;
                &mut pooled
            }
        };
        let kind = A::aggregate_type();
        let snapshot = self
            .store
            .load_snapshot_in(conn, instance, &kind, id, A::SNAPSHOT_VERSION)
            .await?;
        // A user's key is read once per load, for its snapshot and its events alike.
        let mut key = None;
        let opened = match &snapshot {
            Some(s) => {
                if personal::is_sealed(&s.state) {
                    key = Some(self.vault.user_key(conn, instance, id).await?);
                }
                let none = SubjectKey::Missing;
                self.vault
                    .open_snapshot_with(key.as_ref().unwrap_or(&none), s)?
                    .and_then(|state| serde_json::from_value::<A>(state).ok())
                    .map(|state| (state, s.sequence))
            }
            None => None,
        };
        let (mut state, after) = opened.unwrap_or_else(|| (A::default(), 0));
        let mut tail = self
            .store
            .load_aggregate_in(conn, instance, &kind, id, after)
            .await?;
        if tail.iter().any(|e| personal::is_sealed(&e.payload)) {
            let key = match key {
                Some(key) => key,
                None => self.vault.user_key(conn, instance, id).await?,
            };
            for event in tail.iter_mut().filter(|e| personal::is_sealed(&e.payload)) {
                self.vault.open_event(&key, event)?;
            }
        }
        for event in &tail {
            state.apply(event)?;
        }
        if !in_transaction
            && tail.len() > SNAPSHOT_EVERY
            && let Ok(value) = serde_json::to_value(&state)
        {
            let mut snapshot = Snapshot {
                instance_id: instance,
                aggregate_type: kind,
                aggregate_id: id,
                sequence: state.sequence(),
                schema_version: A::SNAPSHOT_VERSION,
                state: value,
            };
            let saved = match self.vault.seal_snapshot(conn, &mut snapshot).await {
                Ok(()) => self
                    .store
                    .save_snapshot(snapshot)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = saved {
                tracing::warn!(%error, "could not save a snapshot");
            }
        }
        Ok(state)
    }

    /// Decides and pushes one command on aggregate `id` inside `tx`. With `expected` the
    /// aggregate must be at that sequence (`ABORTED` otherwise); without it, a concurrent change
    /// makes the command decide once more against the fresh state.
    pub async fn change<A, F>(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        id: AggregateId,
        expected: Option<i64>,
        decide: F,
    ) -> Result<Written<A>, ApiError>
    where
        A: Aggregate,
        F: Fn(&A) -> Result<Plan, ApiError>,
    {
        self.change_new(tx, caller, id, expected, false, decide).await
    }

    /// [`Executor::change`] for an aggregate the caller knows to be new (an id the server just
    /// generated): nothing is loaded, the push expects sequence 0.
    pub async fn change_new<A, F>(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        id: AggregateId,
        expected: Option<i64>,
        fresh: bool,
        decide: F,
    ) -> Result<Written<A>, ApiError>
    where
        A: Aggregate,
        F: Fn(&A) -> Result<Plan, ApiError>,
    {
        let instance = caller.instance_id;
        for attempt in 0..DECISIONS {
            let mut state: A = if fresh && attempt == 0 {
                A::default()
            } else {
                let conn = tx.inner.as_deref_mut();
                self.load_on(conn, instance, id).await?
            };
            if let Some(expected) = expected
                && expected != state.sequence()
            {
                return Err(ApiError::Aborted(format!(
                    "the resource is at version {}, not {expected}; read it again and retry",
                    state.sequence()
                )));
            }
            let plan = decide(&state)?;
            if plan.decision.is_empty() && plan.also.is_empty() {
                return Ok(Written {
                    state,
                    events: Vec::new(),
                });
            }
            let own = plan.decision.events.len();
            let mut push = Push::from_decision(
                instance,
                A::aggregate_type(),
                id,
                ExpectedSequence::Exact(state.sequence()),
                plan.decision,
                &caller.creator(),
                plan.owner,
            );
            if own == 0 {
                push.aggregates.clear();
            }
            for other in plan.also {
                push = push.and(other);
            }
            let mut push = push.traced(cairn_telemetry::propagation::traceparent());
            if tx.required && tx.inner.is_none() {
                tx.conn().await?;
            }
            let unsealed = match tx.inner.as_mut() {
                Some(conn) => self.vault.seal(&mut Db::Conn(conn), &mut push).await?,
                None => self.vault.seal(&mut Db::pool(&self.pool), &mut push).await?,
            };
            let result = match tx.inner.as_mut() {
                // Inside a transaction: a savepoint lets a conflict be retried in it.
                Some(conn) => {
                    sqlx::query("SAVEPOINT command").execute(&mut **conn).await?;
                    let result = self.store.push_in(conn, push).await;
                    let end = if result.is_ok() {
                        "RELEASE SAVEPOINT command"
                    } else {
                        "ROLLBACK TO SAVEPOINT command"
                    };
                    sqlx::query(end).execute(&mut **conn).await?;
                    result
                }
                None => self.store.push(push).await,
            };
            match result {
                Ok(mut events) => {
                    unsealed.restore(&mut events);
                    for event in events
                        .iter()
                        .filter(|e| e.aggregate_id == id && e.aggregate_type == A::aggregate_type())
                    {
                        state.apply(event)?;
                    }
                    return Ok(Written { state, events });
                }
                Err(StoreError::Conflict { .. }) if attempt + 1 < DECISIONS && expected.is_none() => {
                    tracing::debug!(aggregate = %id, "concurrent change; deciding again");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ApiError::Aborted(
            "the resource keeps changing concurrently; retry".into(),
        ))
    }

    /// Runs `body` in a transaction guarded by the idempotency key, if any: a key seen before with
    /// the same request returns the stored response without running `body`; with another request
    /// it is `FAILED_PRECONDITION`. `body` returns the transaction, the response and the position to
    /// announce.
    ///
    /// When a push inside the transaction meets an aggregate that a younger transaction changed
    /// first ([`ApiError::Restart`]), the transaction is rolled back and the whole command, key
    /// claim included, runs again in a new transaction, up to [`RESTARTS`] times: its events then
    /// get a position above the other transaction's (DESIGN.md guarantee 11). So `body` must do
    /// every read its decision depends on itself, and may run more than once.
    pub async fn run<R, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        key: Option<String>,
        request: &impl prost::Message,
        body: F,
    ) -> Result<R, ApiError>
    where
        R: prost::Message + Default + Clone,
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, R, Option<Position>), ApiError>>,
    {
        self.run_storing(caller, method, key, request, body, R::clone)
            .await
    }

    /// [`Executor::run`] for a response that holds something shown once (a token): `stored` makes
    /// the copy kept for the key without it, so a replay answers without the secret.
    pub async fn run_storing<R, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        key: Option<String>,
        request: &impl prost::Message,
        body: F,
        stored: fn(&R) -> R,
    ) -> Result<R, ApiError>
    where
        R: prost::Message + Default,
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, R, Option<Position>), ApiError>>,
    {
        let fingerprint = {
            let mut hasher = sha2::Sha256::new();
            hasher.update(method.as_bytes());
            hasher.update(request.encode_to_vec());
            hex(&hasher.finalize())
        };
        if let Some(key) = &key
            && (key.is_empty() || key.len() > 200)
        {
            return Err(ApiError::invalid(
                "idempotency-key",
                "must be 1 to 200 characters",
            ));
        }
        let mut restarts = 0;
        loop {
            match self
                .run_once(caller, method, key.as_deref(), &fingerprint, &body, stored)
                .await
            {
                Err(ApiError::Restart(reason)) if restarts < RESTARTS => {
                    restarts += 1;
                    tracing::debug!(%reason, restarts, "command meets a younger transaction's change; running it again");
                }
                Err(ApiError::Restart(_)) => {
                    return Err(ApiError::Aborted(
                        "the resource keeps changing concurrently; retry".into(),
                    ));
                }
                other => return other,
            }
        }
    }

    async fn run_once<R, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        key: Option<&str>,
        fingerprint: &str,
        body: &F,
        stored: fn(&R) -> R,
    ) -> Result<R, ApiError>
    where
        R: prost::Message + Default,
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, R, Option<Position>), ApiError>>,
    {
        let mut tx = Tx::lazy(self.pool.clone());
        if let Some(key) = key {
            if let Some(stored) = self.stored_response(caller, key, fingerprint).await? {
                return Ok(stored);
            }
            // The events and the key commit together; the transaction begins at the first push
            // (or at the key's claim), so the command holds no connection while it reads.
            tx = Tx::required(self.pool.clone());
        }
        let (mut tx, response, position) = match body(tx).await {
            Ok(done) => done,
            Err(error) => {
                // A concurrent call with the same key may have committed meanwhile; this one then
                // failed on what that one did (a taken name, a removed user): answer as that one.
                if let Some(key) = key
                    && !matches!(error, ApiError::Restart(_))
                    && let Some(stored) = self.stored_response(caller, key, fingerprint).await?
                {
                    return Ok(stored);
                }
                return Err(error);
            }
        };
        if let Some(key) = key {
            let claimed = sqlx::query(
                "INSERT INTO api.commands (instance_id, key, method, request_hash, status, response, expires_at) \
                 VALUES ($1, $2, $3, $4, 'processed', $5, clock_timestamp() + interval '24 hours') \
                 ON CONFLICT (instance_id, key) DO NOTHING",
            )
            .bind(caller.instance_id.as_uuid())
            .bind(key)
            .bind(method)
            .bind(fingerprint)
            .bind(stored(&response).encode_to_vec())
            .execute(tx.conn().await?)
            .await?
            .rows_affected();
            if claimed == 0 {
                // A concurrent call with the same key committed first (the insert waited for it):
                // roll this one back and answer with that one's response.
                drop(tx);
                return match self.stored_response(caller, key, fingerprint).await? {
                    Some(stored) => Ok(stored),
                    None => Err(ApiError::Restart("a concurrent call with this key ended".into())),
                };
            }
        }
        tx.commit().await?;
        if let Some(position) = position {
            self.store.announce(position);
        }
        Ok(response)
    }

    /// The response stored for `key`, if a call with it committed; `FAILED_PRECONDITION` when that
    /// call was another request.
    async fn stored_response<R: prost::Message + Default>(
        &self,
        caller: &Caller,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<R>, ApiError> {
        let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT request_hash, response FROM api.commands WHERE instance_id = $1 AND key = $2",
        )
        .bind(caller.instance_id.as_uuid())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((hash, response)) = row else {
            return Ok(None);
        };
        if hash != fingerprint {
            return Err(ApiError::FailedPrecondition(
                "this idempotency key was used with a different request".into(),
            ));
        }
        match response {
            Some(bytes) => R::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| ApiError::Internal(e.to_string())),
            None => Ok(None),
        }
    }
}

/// Maps the conflict of a create with a caller-chosen id (expected sequence 0, the aggregate
/// exists) to `ALREADY_EXISTS` naming `what` ("a user").
pub fn already_exists(what: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |error| match error {
        ApiError::Aborted(_) => ApiError::AlreadyExists(format!("{what} with this id already exists")),
        other => other,
    }
}

/// Serialises commands that make users members against the removal of those users, so that a
/// removed user can never stay a member of a group (the removal takes the user out of every group
/// it is in, and a concurrent add must not slip in between): a command that adds members takes a
/// shared lock per member, then checks that they exist; `RemoveUser` takes the user's lock
/// exclusively, then reads the user's groups. Transaction-scoped advisory locks on a hash of
/// (instance, user): released at commit or rollback, nothing written, no transaction id taken; a
/// hash collision only makes two unrelated commands wait for each other. Locks are taken in key
/// order, so two commands cannot deadlock on them.
pub async fn lock_users(
    conn: &mut PgConnection,
    instance: InstanceId,
    users: &[AggregateId],
    exclusive: bool,
) -> Result<(), ApiError> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let lock = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    sqlx::query(&format!(
        "SELECT {lock}(k) FROM (SELECT DISTINCT hashtextextended($1::text || '/' || u::text, 0) AS k \
           FROM unnest($2::uuid[]) AS u ORDER BY k) AS keys"
    ))
    .bind(instance.as_uuid())
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// How often [`Executor::run`] runs a command again after it met a younger transaction's change.
/// Each restart gets a new transaction id above every transaction committed so far, so a restart
/// fails again only if yet another younger transaction changes the same aggregate first.
pub const RESTARTS: u32 = 10;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
