//! The projection framework against the real PostgreSQL (and NATS for wake-ups): exactly-once
//! application, failure isolation, leases across replicas, fencing, read-your-writes and rebuilds
//! (DESIGN.md guarantees 5–7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_domain::{AggregateId, AggregateType, EventDraft, EventType, InstanceId, Position, StoredEvent};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_projection::lease::Leases;
use cairn_projection::projector::{Projector, ProjectorConfig, ProjectorMetrics};
use cairn_projection::worker::{Step, WorkerConfig, WorkerError, step};
use cairn_projection::{Projection, ReduceError, failed, health};
use cairn_testkit::{TestDb, eventually};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

/// A read model that counts and sums `counter.added` events per aggregate, in its own table; it
/// fails on events whose payload says `"poison": true`.
struct Counter {
    name: &'static str,
    table: &'static str,
}

impl Counter {
    async fn create(pool: &PgPool, table: &str) {
        sqlx::raw_sql(&format!(
            "CREATE TABLE {table} (instance_id uuid NOT NULL, aggregate_id uuid NOT NULL, n bigint NOT NULL, \
             total bigint NOT NULL, PRIMARY KEY (instance_id, aggregate_id))"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn event_types(&self) -> Vec<EventType> {
        vec![EventType::parse("counter.added").unwrap()]
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            if event.payload["poison"].as_bool() == Some(true) {
                return Err(ReduceError::Rejected("poisoned event".into()));
            }
            let value = event.payload["value"]
                .as_i64()
                .ok_or_else(|| ReduceError::Rejected("no value".into()))?;
            sqlx::query(&format!(
                "INSERT INTO {} (instance_id, aggregate_id, n, total) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (instance_id, aggregate_id) DO UPDATE SET n = {0}.n + 1, total = {0}.total + $3",
                self.table
            ))
            .bind(event.instance_id.as_uuid())
            .bind(event.aggregate_id.as_uuid())
            .bind(value)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(&format!("DELETE FROM {} WHERE instance_id = $1", self.table))
                .bind(instance.as_uuid())
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec![self.table]
    }
}

fn counter_push(instance: InstanceId, aggregate: AggregateId, value: i64, poison: bool) -> Push {
    Push::single(
        instance,
        AggregateType::parse("counter").unwrap(),
        aggregate,
        ExpectedSequence::Any,
        vec![EventDraft::new(
            EventType::parse("counter.added").unwrap(),
            serde_json::json!({ "value": value, "poison": poison }),
            "system",
            AggregateId::new(),
        )],
    )
}

/// The table's contents, in a stable order, as one string: equal strings mean equal tables.
async fn checksum(pool: &PgPool, table: &str) -> String {
    sqlx::query_scalar(&format!(
        "SELECT coalesce(md5(string_agg(format('%s|%s|%s|%s', instance_id, aggregate_id, n, total), ',' \
           ORDER BY instance_id, aggregate_id)), 'empty') FROM {table}"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn position_of(pool: &PgPool, name: &str, instance: InstanceId) -> Position {
    let row: Option<(i64, i32)> = sqlx::query_as(
        "SELECT position, position_offset FROM projections.projection_states WHERE name = $1 AND instance_id = $2",
    )
    .bind(name)
    .bind(instance.as_uuid())
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map_or(Position::ZERO, |(p, o)| Position::new(p, o))
}

/// The position of the instance's last committed event, visible to readers or not yet: the
/// store's `head_position` stops below any transaction still running anywhere in the cluster (a
/// projector's own batch, another test's), so waiting for it could end before the last writes.
async fn last_committed(pool: &PgPool, instance: InstanceId) -> Position {
    let row: Option<(i64, i32)> = sqlx::query_as(
        "SELECT position, in_tx_order FROM eventstore.events WHERE instance_id = $1 \
         ORDER BY position DESC, in_tx_order DESC LIMIT 1",
    )
    .bind(instance.as_uuid())
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map_or(Position::ZERO, |(p, o)| Position::new(p, o))
}

/// Waits until `name` has applied every event committed so far on each instance.
async fn caught_up(pool: &PgPool, name: &str, instances: &[InstanceId]) {
    for instance in instances {
        let head = last_committed(pool, *instance).await;
        eventually(
            &format!("{name} to reach {head} for {instance}"),
            DEADLINE,
            || async { Ok((position_of(pool, name, *instance).await >= head).then_some(())) },
        )
        .await
        .unwrap();
    }
}

fn config(ttl: Duration) -> ProjectorConfig {
    ProjectorConfig {
        lease_ttl: ttl,
        batch: 100,
        max_attempts: 3,
        head_check: Duration::from_millis(200),
        stream: None,
        crash_every: None,
        vault: None,
    }
}

fn projector(
    db: &TestDb,
    store: &PgEventStore,
    projections: Vec<Arc<dyn Projection>>,
    config: ProjectorConfig,
) -> Projector {
    Projector::new(
        db.pool.clone(),
        store.clone(),
        projections,
        config,
        None,
        ProjectorMetrics::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_abandoned_before_commit_apply_every_event_exactly_once() {
    let db = TestDb::new(24).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "crashy").await;
    Counter::create(&db.pool, "steady").await;
    let instances: Vec<InstanceId> = (0..3).map(|_| InstanceId::new()).collect();

    // "crashy" abandons every second batch after its reduce and before its commit, again and again,
    // while events flow; "steady" is the reference.
    let mut crashy = config(Duration::from_secs(2));
    crashy.crash_every = Some(2);
    let shutdown = CancellationToken::new();
    let a = tokio::spawn(
        projector(
            &db,
            &store,
            vec![Arc::new(Counter {
                name: "crashy",
                table: "crashy",
            })],
            crashy,
        )
        .run(shutdown.clone()),
    );
    let b = tokio::spawn(
        projector(
            &db,
            &store,
            vec![Arc::new(Counter {
                name: "steady",
                table: "steady",
            })],
            config(Duration::from_secs(2)),
        )
        .run(shutdown.clone()),
    );
    let aggregates: Vec<AggregateId> = (0..20).map(|_| AggregateId::new()).collect();
    let mut expected_total = 0;
    for i in 0..3000_i64 {
        let instance = instances[i as usize % instances.len()];
        store
            .push(counter_push(
                instance,
                aggregates[i as usize % aggregates.len()],
                i,
                false,
            ))
            .await
            .unwrap();
        expected_total += i;
    }
    caught_up(&db.pool, "crashy", &instances).await;
    caught_up(&db.pool, "steady", &instances).await;
    let (n, total): (i64, i64) = sqlx::query_as("SELECT sum(n)::bigint, sum(total)::bigint FROM crashy")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (n, total),
        (3000, expected_total),
        "each event applied exactly once"
    );
    assert_eq!(
        checksum(&db.pool, "crashy").await,
        checksum(&db.pool, "steady").await
    );
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_at_random_moments_resumes_without_loss_or_duplicates() {
    let db = TestDb::new(24).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "killed").await;
    let instance = InstanceId::new();
    let aggregate = AggregateId::new();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..2000_i64 {
                store
                    .push(counter_push(instance, aggregate, 1, false))
                    .await
                    .unwrap();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Start and abort the projector task repeatedly (its lease expires; the next one takes over).
    for round in 0..8_u64 {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            projector(
                &db,
                &store,
                vec![Arc::new(Counter {
                    name: "killed",
                    table: "killed",
                })],
                config(Duration::from_millis(600)),
            )
            .run(shutdown.clone()),
        );
        // Let it make some progress, then kill it mid-flight.
        let before = position_of(&db.pool, "killed", instance).await;
        let _ = eventually("progress before the kill", Duration::from_secs(10), || async {
            Ok((position_of(&db.pool, "killed", instance).await > before).then_some(()))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(7 * round)).await; // fault injection: vary the kill point
        task.abort();
        let _ = task.await;
    }
    writer.await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        projector(
            &db,
            &store,
            vec![Arc::new(Counter {
                name: "killed",
                table: "killed",
            })],
            config(Duration::from_millis(600)),
        )
        .run(shutdown.clone()),
    );
    caught_up(&db.pool, "killed", &[instance]).await;
    let n: i64 = sqlx::query_scalar("SELECT n FROM killed")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2000, "every event applied exactly once across the kills");
    shutdown.cancel();
    task.await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_event_is_retried_then_skipped_alone_and_health_shows_it() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "counts").await;
    let instance = InstanceId::new();
    let aggregate = AggregateId::new();
    store
        .push(counter_push(instance, aggregate, 1, false))
        .await
        .unwrap();
    let poison = store
        .push(counter_push(instance, aggregate, 100, true))
        .await
        .unwrap();
    store
        .push(counter_push(instance, aggregate, 2, false))
        .await
        .unwrap();
    let last = store
        .push(counter_push(instance, aggregate, 3, false))
        .await
        .unwrap();
    cairn_testkit::eventually("events visible", DEADLINE, || async {
        Ok((store.head_position(Some(instance)).await? >= last[0].position).then_some(()))
    })
    .await
    .unwrap();

    let owner = Uuid::new_v4();
    let leases = Leases::new(db.pool.clone(), owner, Duration::from_secs(30));
    assert!(leases.acquire("counts", instance).await.unwrap());
    let projection = Counter {
        name: "counts",
        table: "counts",
    };
    let worker = WorkerConfig {
        owner,
        batch: 100,
        max_attempts: 3,
        crash_every: None,
        vault: None,
    };
    let mut batches = 0;

    // First attempt: the event before the poison is applied, the batch stops before the poison.
    let first = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(first, Step::Progressed { .. }), "{first:?}");
    assert!(position_of(&db.pool, "counts", instance).await < poison[0].position);
    let health = health::report(&db.pool, Some(instance.as_uuid())).await.unwrap();
    assert_eq!(health[0].status, "retrying");
    assert_eq!(health[0].error_count, 1);
    assert_eq!(health[0].last_error.as_deref(), Some("poisoned event"));

    // Second attempt fails again; the third exhausts the attempts and skips it.
    assert!(matches!(
        step(&db.pool, &store, &projection, instance, &worker, &mut batches)
            .await
            .unwrap(),
        Step::Retrying(_)
    ));
    let third = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(third, Step::Progressed { .. }), "{third:?}");
    assert_eq!(
        position_of(&db.pool, "counts", instance).await,
        last[0].position,
        "moved past the skipped event"
    );
    let (n, total): (i64, i64) = sqlx::query_as("SELECT n, total FROM counts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (n, total),
        (3, 6),
        "the rest of the events applied, the poisoned one alone rolled back"
    );
    let (count, status): (i32, String) = sqlx::query_as(
        "SELECT failure_count, status FROM projections.projection_failed_events WHERE position = $1 AND position_offset = $2",
    )
    .bind(poison[0].position.position)
    .bind(poison[0].position.offset)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((count, status.as_str()), (3, "skipped"));
    let health = health::report(&db.pool, Some(instance.as_uuid())).await.unwrap();
    assert_eq!(health[0].status, "active");
    assert_eq!(health[0].skipped_events, 1);
    assert_eq!(health[0].lag_events, 0);
    assert_eq!(health[0].lease_owner, Some(owner));
    db.drop_db().await.unwrap();
}

/// Pushes `values` (one event each, in order) to one aggregate and waits until the last is
/// visible; returns each event's position.
async fn push_values(
    store: &PgEventStore,
    instance: InstanceId,
    aggregate: AggregateId,
    values: &[(i64, bool)],
) -> Vec<Position> {
    let mut positions = Vec::new();
    for (value, poison) in values {
        let pushed = store
            .push(counter_push(instance, aggregate, *value, *poison))
            .await
            .unwrap();
        positions.push(pushed[0].position);
    }
    let last = *positions.last().unwrap();
    eventually("events visible", DEADLINE, || async {
        Ok((store.head_position(Some(instance)).await? >= last).then_some(()))
    })
    .await
    .unwrap();
    positions
}

async fn counter_totals(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as(&format!("SELECT n, total FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_skip_passes_over_the_event_without_reducing_it_and_loses_nothing_else() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "skips").await;
    let instance = InstanceId::new();
    let aggregate = AggregateId::new();
    let positions = push_values(
        &store,
        instance,
        aggregate,
        &[(1, false), (100, true), (2, false), (3, false)],
    )
    .await;
    let poison = positions[1];

    let owner = Uuid::new_v4();
    let leases = Leases::new(db.pool.clone(), owner, Duration::from_secs(30));
    assert!(leases.acquire("skips", instance).await.unwrap());
    let projection = Counter {
        name: "skips",
        table: "skips",
    };
    // Attempts enough that the worker would keep retrying the poisoned event for a long time.
    let worker = WorkerConfig {
        owner,
        batch: 100,
        max_attempts: 1000,
        crash_every: None,
        vault: None,
    };
    let mut batches = 0;
    let first = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(first, Step::Progressed { .. }), "{first:?}");
    let second = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(second, Step::Retrying(_)), "{second:?}");
    assert_eq!(position_of(&db.pool, "skips", instance).await, positions[0]);

    let key = failed::FailedEventKey {
        projection: "skips".into(),
        instance_id: instance.as_uuid(),
        position: poison,
    };
    let listed = failed::list(
        &db.pool,
        &failed::ListFilter {
            instance: Some(instance.as_uuid()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].status.as_str(),
            listed[0].failure_count,
            listed[0].passed
        ),
        ("retrying", 2, false)
    );
    assert_eq!(listed[0].position, poison.to_string());
    assert_eq!(listed[0].event_type, "counter.added");

    // The operator skips it; the next batch passes over it and applies the rest.
    let skipped = failed::skip(&db.pool, &key).await.unwrap();
    assert_eq!((skipped.status.as_str(), skipped.passed), ("skipped", false));
    let third = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(third, Step::Progressed { .. }), "{third:?}");
    assert_eq!(position_of(&db.pool, "skips", instance).await, positions[3]);
    assert_eq!(
        counter_totals(&db.pool, "skips").await,
        (3, 6),
        "every event but the skipped one applied, once"
    );
    let after = failed::get(&db.pool, &key).await.unwrap().unwrap();
    assert_eq!(
        (after.status.as_str(), after.failure_count, after.passed),
        ("skipped", 2, true),
        "not reduced again"
    );
    let health = health::report(&db.pool, Some(instance.as_uuid())).await.unwrap();
    assert_eq!(health[0].status, "active");
    assert_eq!(
        (
            health[0].skipped_events,
            health[0].error_count,
            health[0].lag_events
        ),
        (1, 1, 0)
    );

    // Skipping again changes nothing; a retry of a passed event is refused (a rebuild applies it).
    assert_eq!(failed::skip(&db.pool, &key).await.unwrap().status, "skipped");
    assert!(matches!(
        failed::retry(&db.pool, &key).await,
        Err(failed::ActionError::Passed)
    ));
    let missing = failed::FailedEventKey {
        position: Position::new(poison.position, poison.offset + 7),
        ..key.clone()
    };
    assert!(matches!(
        failed::skip(&db.pool, &missing).await,
        Err(failed::ActionError::NotFound)
    ));

    // Later events still flow.
    let more = push_values(&store, instance, aggregate, &[(10, false)]).await;
    let fourth = step(&db.pool, &store, &projection, instance, &worker, &mut batches)
        .await
        .unwrap();
    assert!(matches!(fourth, Step::Progressed { .. }), "{fourth:?}");
    assert_eq!(position_of(&db.pool, "skips", instance).await, more[0]);
    assert_eq!(counter_totals(&db.pool, "skips").await, (4, 16));
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_retry_gives_a_fresh_attempt_budget_and_the_fixed_event_applies_once() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "retries").await;
    // The cause an operator can fix: a constraint the event's value breaks.
    sqlx::query("ALTER TABLE retries ADD CONSTRAINT small_totals CHECK (total < 50)")
        .execute(&db.pool)
        .await
        .unwrap();
    let instance = InstanceId::new();
    let aggregate = AggregateId::new();
    let positions = push_values(
        &store,
        instance,
        aggregate,
        &[(1, false), (100, false), (2, false), (3, false)],
    )
    .await;

    let owner = Uuid::new_v4();
    let leases = Leases::new(db.pool.clone(), owner, Duration::from_secs(30));
    assert!(leases.acquire("retries", instance).await.unwrap());
    let projection = Counter {
        name: "retries",
        table: "retries",
    };
    let worker = WorkerConfig {
        owner,
        batch: 100,
        max_attempts: 3,
        crash_every: None,
        vault: None,
    };
    let mut batches = 0;
    assert!(matches!(
        step(&db.pool, &store, &projection, instance, &worker, &mut batches)
            .await
            .unwrap(),
        Step::Progressed { .. }
    ));
    assert!(matches!(
        step(&db.pool, &store, &projection, instance, &worker, &mut batches)
            .await
            .unwrap(),
        Step::Retrying(_)
    ));
    let key = failed::FailedEventKey {
        projection: "retries".into(),
        instance_id: instance.as_uuid(),
        position: positions[1],
    };
    assert_eq!(
        failed::get(&db.pool, &key).await.unwrap().unwrap().failure_count,
        2
    );

    // Retry: attempts back to zero. The cause is not fixed yet, so the next attempt fails again —
    // and without the retry it would have been the third and last, skipping the event.
    let retried = failed::retry(&db.pool, &key).await.unwrap();
    assert_eq!((retried.status.as_str(), retried.failure_count), ("retrying", 0));
    assert!(matches!(
        step(&db.pool, &store, &projection, instance, &worker, &mut batches)
            .await
            .unwrap(),
        Step::Retrying(_)
    ));
    let still = failed::get(&db.pool, &key).await.unwrap().unwrap();
    assert_eq!((still.status.as_str(), still.failure_count), ("retrying", 1));
    assert_eq!(position_of(&db.pool, "retries", instance).await, positions[0]);

    // An operator's skip that the worker has not acted on yet can be taken back by a retry.
    assert_eq!(failed::skip(&db.pool, &key).await.unwrap().status, "skipped");
    assert_eq!(failed::retry(&db.pool, &key).await.unwrap().status, "retrying");

    // The operator fixes the cause and retries: the event applies, once, in order.
    sqlx::query("ALTER TABLE retries DROP CONSTRAINT small_totals")
        .execute(&db.pool)
        .await
        .unwrap();
    failed::retry(&db.pool, &key).await.unwrap();
    assert!(matches!(
        step(&db.pool, &store, &projection, instance, &worker, &mut batches)
            .await
            .unwrap(),
        Step::Progressed { .. }
    ));
    assert_eq!(position_of(&db.pool, "retries", instance).await, positions[3]);
    assert_eq!(counter_totals(&db.pool, "retries").await, (4, 106));
    let resolved = failed::get(&db.pool, &key).await.unwrap().unwrap();
    assert_eq!((resolved.status.as_str(), resolved.passed), ("resolved", true));
    let health = health::report(&db.pool, Some(instance.as_uuid())).await.unwrap();
    assert_eq!(health[0].status, "active");
    assert_eq!((health[0].error_count, health[0].skipped_events), (0, 0));
    assert!(matches!(
        failed::retry(&db.pool, &key).await,
        Err(failed::ActionError::Resolved)
    ));
    assert!(matches!(
        failed::skip(&db.pool, &key).await,
        Err(failed::ActionError::Resolved)
    ));
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_thirty_tenants_and_take_over_from_a_dead_one() {
    let db = TestDb::new(40).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "shared").await;
    let instances: Vec<InstanceId> = (0..30).map(|_| InstanceId::new()).collect();
    for (i, instance) in instances.iter().enumerate() {
        store
            .push(counter_push(*instance, AggregateId::new(), i as i64, false))
            .await
            .unwrap();
    }
    let ttl = Duration::from_secs(2);
    let make = || {
        projector(
            &db,
            &store,
            vec![Arc::new(Counter {
                name: "shared",
                table: "shared",
            })],
            config(ttl),
        )
    };
    let replicas: Vec<(CancellationToken, Uuid, tokio::task::JoinHandle<()>)> = (0..3)
        .map(|_| {
            let p = make();
            let owner = p.owner();
            let token = CancellationToken::new();
            (token.clone(), owner, tokio::spawn(p.run(token)))
        })
        .collect();
    let owners: Vec<Uuid> = replicas.iter().map(|r| r.1).collect();

    let spread = |live: Vec<Uuid>| {
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT instance_id, owner_id FROM projection_locks WHERE projection_name = 'shared' AND expires_at > now()",
            )
            .fetch_all(&pool)
            .await?;
            let mut per_owner: HashMap<Uuid, usize> = HashMap::new();
            for (_, owner) in &rows {
                *per_owner.entry(*owner).or_default() += 1;
            }
            // Settled: every lease held, only by live replicas, each of them holding some and, with
            // three live, none more than half (a replica that started first may hold more until
            // the others have announced themselves and it has handed the surplus back).
            let most = if live.len() >= 3 { 15 } else { 30 };
            let settled = rows.len() == 30
                && per_owner.keys().all(|o| live.contains(o))
                && per_owner.len() == live.len()
                && per_owner.values().all(|n| *n <= most);
            anyhow::Ok(settled.then_some(per_owner))
        }
    };
    let per_owner = eventually("30 leases spread over 3 replicas", DEADLINE, || {
        spread(owners.clone())
    })
    .await
    .unwrap();
    assert!(
        per_owner.values().all(|n| *n <= 15),
        "no replica holds more than half: {per_owner:?}"
    );
    caught_up(&db.pool, "shared", &instances).await;

    // One replica dies without releasing anything: its leases move within the TTL plus one renewal.
    let (_, dead, task) = &replicas[0];
    task.abort();
    let started = std::time::Instant::now();
    let survivors = owners[1..].to_vec();
    let after = eventually("the dead replica's leases to move", DEADLINE, || {
        spread(survivors.clone())
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(!after.contains_key(dead));
    assert!(
        took < ttl * 2 + ttl / 3 + Duration::from_secs(1),
        "takeover took {took:?}"
    );
    // Work continues for every tenant.
    for instance in &instances {
        store
            .push(counter_push(*instance, AggregateId::new(), 1, false))
            .await
            .unwrap();
    }
    caught_up(&db.pool, "shared", &instances).await;
    for (token, _, task) in replicas.into_iter().skip(1) {
        token.cancel();
        task.await.unwrap();
    }
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_paused_past_its_lease_cannot_commit() {
    let db = TestDb::new(8).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "fenced").await;
    let instance = InstanceId::new();
    let pushed = store
        .push(counter_push(instance, AggregateId::new(), 5, false))
        .await
        .unwrap();
    cairn_testkit::eventually("events visible", DEADLINE, || async {
        Ok((store.head_position(Some(instance)).await? >= pushed[0].position).then_some(()))
    })
    .await
    .unwrap();
    let projection = Counter {
        name: "fenced",
        table: "fenced",
    };

    // Replica A holds a short lease, then "pauses" past it; B takes the lease over.
    let a = Uuid::new_v4();
    let a_leases = Leases::new(db.pool.clone(), a, Duration::from_millis(300));
    assert!(a_leases.acquire("fenced", instance).await.unwrap());
    let b_leases = Leases::new(db.pool.clone(), Uuid::new_v4(), Duration::from_secs(30));
    assert!(
        !b_leases.acquire("fenced", instance).await.unwrap(),
        "A's lease is still valid"
    );
    eventually("A's lease to expire", DEADLINE, || async {
        Ok(b_leases.acquire("fenced", instance).await?.then_some(()))
    })
    .await
    .unwrap();

    // A resumes and tries to commit its batch: fenced off, nothing written.
    let mut batches = 0;
    let result = step(
        &db.pool,
        &store,
        &projection,
        instance,
        &WorkerConfig {
            owner: a,
            batch: 100,
            max_attempts: 3,
            crash_every: None,
            vault: None,
        },
        &mut batches,
    )
    .await;
    assert!(matches!(result, Err(WorkerError::LeaseLost)), "{result:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM fenced")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the fenced batch left nothing");
    assert_eq!(position_of(&db.pool, "fenced", instance).await, Position::ZERO);
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_writes_continue_ends_equal_to_the_live_table() {
    let db = TestDb::new(24).await.unwrap();
    let store = PgEventStore::new(db.pool.clone());
    Counter::create(&db.pool, "rebuilt").await;
    Counter::create(&db.pool, "reference").await;
    let instances: Vec<InstanceId> = (0..2).map(|_| InstanceId::new()).collect();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        projector(
            &db,
            &store,
            vec![
                Arc::new(Counter {
                    name: "rebuilt",
                    table: "rebuilt",
                }),
                Arc::new(Counter {
                    name: "reference",
                    table: "reference",
                }),
            ],
            config(Duration::from_secs(2)),
        )
        .run(shutdown.clone()),
    );
    let aggregates: Vec<AggregateId> = (0..10).map(|_| AggregateId::new()).collect();
    for i in 0..1000_i64 {
        store
            .push(counter_push(
                instances[i as usize % 2],
                aggregates[i as usize % 10],
                i,
                false,
            ))
            .await
            .unwrap();
    }
    caught_up(&db.pool, "rebuilt", &instances).await;
    let marked = health::request_rebuild(&db.pool, "rebuilt", None).await.unwrap();
    assert_eq!(marked, 2);
    for i in 1000..2500_i64 {
        store
            .push(counter_push(
                instances[i as usize % 2],
                aggregates[i as usize % 10],
                i,
                false,
            ))
            .await
            .unwrap();
    }
    caught_up(&db.pool, "rebuilt", &instances).await;
    caught_up(&db.pool, "reference", &instances).await;
    let flags: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projections.projection_states WHERE rebuild_requested")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(flags, 0, "the rebuild ran");
    assert_eq!(
        checksum(&db.pool, "rebuilt").await,
        checksum(&db.pool, "reference").await
    );
    let (n,): (i64,) = sqlx::query_as("SELECT sum(n)::bigint FROM rebuilt")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2500);
    shutdown.cancel();
    task.await.unwrap();
    db.drop_db().await.unwrap();
}
