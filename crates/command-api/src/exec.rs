//! Running commands: load the aggregate (snapshot plus tail), let the domain decide, push the
//! decision with the aggregate's sequence as the expected one, and on a conflict re-decide once
//! against fresh state when the caller did not pin a sequence. Every command runs in a transaction
//! that also holds its idempotency key and, when given one, its stored response, so a repeated
//! key returns the first response and a crash can never separate the events from the key.

use crate::auth::Caller;
use crate::error::ApiError;
use cairn_domain::{Aggregate, AggregateId, Clock, Decision, InstanceId, Position, StoredEvent};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push, Snapshot, StoreError};
use sha2::Digest;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::future::Future;
use std::sync::Arc;

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
pub struct Tx {
    pool: PgPool,
    inner: Option<Transaction<'static, Postgres>>,
}

impl Tx {
    /// A lazy transaction on `pool`.
    pub fn lazy(pool: PgPool) -> Self {
        Self { pool, inner: None }
    }

    /// The transaction's connection, beginning the transaction if needed: everything written
    /// through it, and every later push of this command, commits together.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, ApiError> {
        if self.inner.is_none() {
            self.inner = Some(self.pool.begin().await?);
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
}

impl Executor {
    /// Loads an aggregate: its snapshot (if one of the current schema exists) plus the events after
    /// it; refreshes the snapshot when the tail is long.
    pub async fn load<A: Aggregate>(&self, instance: InstanceId, id: AggregateId) -> Result<A, ApiError> {
        let kind = A::aggregate_type();
        let snapshot = self
            .store
            .load_snapshot(instance, &kind, id, A::SNAPSHOT_VERSION)
            .await?;
        let (mut state, after) = match snapshot {
            Some(s) => match serde_json::from_value::<A>(s.state) {
                Ok(state) => (state, s.sequence),
                Err(_) => (A::default(), 0),
            },
            None => (A::default(), 0),
        };
        let tail = self.store.load_aggregate(instance, &kind, id, after).await?;
        for event in &tail {
            state.apply(event)?;
        }
        if tail.len() > SNAPSHOT_EVERY
            && let Ok(value) = serde_json::to_value(&state)
        {
            let snapshot = Snapshot {
                instance_id: instance,
                aggregate_type: kind,
                aggregate_id: id,
                sequence: state.sequence(),
                schema_version: A::SNAPSHOT_VERSION,
                state: value,
            };
            if let Err(error) = self.store.save_snapshot(snapshot).await {
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
        for attempt in 0..2 {
            let mut state: A = if fresh && attempt == 0 {
                A::default()
            } else {
                self.load(instance, id).await?
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
            let push = push.traced(cairn_telemetry::propagation::traceparent());
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
                Ok(events) => {
                    for event in events
                        .iter()
                        .filter(|e| e.aggregate_id == id && e.aggregate_type == A::aggregate_type())
                    {
                        state.apply(event)?;
                    }
                    return Ok(Written { state, events });
                }
                Err(StoreError::Conflict { .. }) if attempt == 0 && expected.is_none() => {
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
    pub async fn run<R, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        key: Option<String>,
        request: &impl prost::Message,
        body: F,
    ) -> Result<R, ApiError>
    where
        R: prost::Message + Default,
        F: FnOnce(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, R, Option<Position>), ApiError>>,
    {
        let mut tx = Tx::lazy(self.pool.clone());
        let fingerprint = {
            let mut hasher = sha2::Sha256::new();
            hasher.update(method.as_bytes());
            hasher.update(request.encode_to_vec());
            hex(&hasher.finalize())
        };
        if let Some(key) = &key {
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::invalid(
                    "idempotency-key",
                    "must be 1 to 200 characters",
                ));
            }
            let conn = tx.conn().await?;
            let claimed = sqlx::query(
                "INSERT INTO api.commands (instance_id, key, method, request_hash, status, expires_at) \
                 VALUES ($1, $2, $3, $4, 'pending', clock_timestamp() + interval '24 hours') \
                 ON CONFLICT (instance_id, key) DO NOTHING",
            )
            .bind(caller.instance_id.as_uuid())
            .bind(key)
            .bind(method)
            .bind(&fingerprint)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if claimed == 0 {
                let (hash, response): (String, Option<Vec<u8>>) = sqlx::query_as(
                    "SELECT request_hash, response FROM api.commands WHERE instance_id = $1 AND key = $2",
                )
                .bind(caller.instance_id.as_uuid())
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
                if hash != fingerprint {
                    return Err(ApiError::FailedPrecondition(
                        "this idempotency key was used with a different request".into(),
                    ));
                }
                let response = response
                    .ok_or_else(|| ApiError::Aborted("a request with this key is in flight".into()))?;
                return R::decode(response.as_slice()).map_err(|e| ApiError::Internal(e.to_string()));
            }
        }
        let (mut tx, response, position) = body(tx).await?;
        if let Some(key) = &key {
            sqlx::query("UPDATE api.commands SET status = 'processed', response = $3 WHERE instance_id = $1 AND key = $2")
                .bind(caller.instance_id.as_uuid())
                .bind(key)
                .bind(response.encode_to_vec())
                .execute(tx.conn().await?)
                .await?;
        }
        tx.commit().await?;
        if let Some(position) = position {
            self.store.announce(position);
        }
        Ok(response)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
