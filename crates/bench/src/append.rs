//! `append`: event store push throughput and latency, beside plain INSERTs of the same rows into a
//! table of the same definition (`LIKE eventstore.events INCLUDING ALL`) measured in the same run.

use crate::harness::{BenchDb, Settings, bench, interleaved};
use cairn_domain::{AggregateId, AggregateType, EventDraft, EventType, InstanceId};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use uuid::Uuid;

fn payload(n: u64) -> serde_json::Value {
    json!({ "userName": format!("user{n}@example.com"), "givenName": "Ada", "familyName": "Lovelace" })
}

/// The mode's name, concurrency and events per push.
const MODES: [(&str, usize, usize); 3] = [
    ("single_c1", 1, 1),
    ("single_c16", 16, 1),
    ("batch100_c4", 4, 100),
];

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let db = BenchDb::create(settings, 24).await?;
    sqlx::raw_sql("CREATE TABLE public.raw_events (LIKE eventstore.events INCLUDING ALL)")
        .execute(&db.pool)
        .await?;
    let store = PgEventStore::new(db.pool.clone());
    let user = AggregateType::parse("user")?;
    let changed = EventType::parse("user.changed")?;

    let position = Arc::new(AtomicI64::new(1));
    for (mode, concurrency, batch) in MODES {
        // Raw: plain INSERTs of the same rows (sent the same way, as arrays), one autocommit
        // statement per push.
        let pool = db.pool.clone();
        let position = position.clone();
        let raw_op = move |worker: usize, i: u64| {
            let pool = pool.clone();
            let position = position.clone();
            async move {
                let p = position.fetch_add(1, Ordering::Relaxed);
                let instance = Uuid::now_v7();
                let aggregate = Uuid::now_v7();
                let payloads: Vec<serde_json::Value> = (0..batch)
                    .map(|_| payload(worker as u64 * 1_000_000 + i))
                    .collect();
                let ids: Vec<Uuid> = (0..batch).map(|_| Uuid::now_v7()).collect();
                sqlx::query(
                    "INSERT INTO public.raw_events (instance_id, aggregate_type, aggregate_id, sequence, event_type, \
                       revision, payload, creator, resource_owner, created_at, position, in_tx_order, id) \
                     SELECT $1, 'user', $2, x.ord, 'user.changed', 1, x.payload, 'system', $1, \
                            statement_timestamp(), $3, (x.ord - 1)::int, x.id \
                       FROM unnest($4::jsonb[], $5::uuid[]) WITH ORDINALITY AS x(payload, id, ord)",
                )
                .bind(instance)
                .bind(aggregate)
                .bind(p)
                .bind(&payloads)
                .bind(&ids)
                .execute(&pool)
                .await?;
                Ok(())
            }
        };

        // The event store: each worker appends to its own aggregates with the expected sequence.
        let store = store.clone();
        let (user, changed) = (user.clone(), changed.clone());
        let instance = InstanceId::new();
        let cairn_op = move |worker: usize, i: u64| {
            let store = store.clone();
            let (user, changed) = (user.clone(), changed.clone());
            async move {
                let events = (0..batch)
                    .map(|_| {
                        EventDraft::new(
                            changed.clone(),
                            payload(worker as u64 * 1_000_000 + i),
                            "system",
                            AggregateId::new(),
                        )
                    })
                    .collect();
                store
                    .push(Push::single(
                        instance,
                        user,
                        AggregateId::new(),
                        ExpectedSequence::Exact(0),
                        events,
                    ))
                    .await?;
                Ok(())
            }
        };
        let (raw, cairn) = interleaved(concurrency, settings.phase, 3, raw_op, cairn_op).await?;

        bench(
            &format!("append.{mode}.events_per_s"),
            cairn.ops_per_s() * batch as f64,
        );
        bench(
            &format!("append.{mode}.raw_events_per_s"),
            raw.ops_per_s() * batch as f64,
        );
        bench(
            &format!("append.{mode}.ratio_to_raw"),
            cairn.ops_per_s() / raw.ops_per_s(),
        );
        if mode == "single_c16" {
            bench("append.single_c16.p50_ms", cairn.p(0.50));
            bench("append.single_c16.p99_ms", cairn.p(0.99));
            bench("append.single_c16.raw_p99_ms", raw.p(0.99));
        }
    }
    sealed(settings, &store).await?;
    db.drop_db().await?;
    without_statistics(settings).await
}

/// A push of `users` new users' first events (one each), sealed as command-api seals them when
/// `vault` is given (personal fields under a new data key per user, the keys stored by the push's
/// own statement), or pushed as they are.
fn new_users_op(
    store: PgEventStore,
    vault: Option<cairn_personal::Vault>,
    users: usize,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
+ Clone
+ Send
+ 'static {
    let instance = InstanceId::new();
    move |worker: usize, i: u64| {
        let (store, vault) = (store.clone(), vault.clone());
        Box::pin(async move {
            let mut push = Push::default();
            for n in 0..users {
                let owner = AggregateId::new();
                let event = EventDraft::new(
                    EventType::parse("user.human.added")?,
                    payload(worker as u64 * 1_000_000 + i * 1_000 + n as u64),
                    "system",
                    owner,
                );
                push = push.and(Push::single(
                    instance,
                    AggregateType::parse("user")?,
                    AggregateId::new(),
                    ExpectedSequence::Exact(0),
                    vec![event],
                ));
            }
            if let Some(vault) = &vault {
                vault
                    .seal(&mut cairn_personal::Db::pool(store.pool()), &mut push)
                    .await?;
            }
            store.push(push).await?;
            Ok(())
        })
    }
}

/// The price of sealing personal data: new users' events pushed sealed beside the same pushes
/// unsealed (what the store did before sealing), interleaved in the same run.
async fn sealed(settings: &Settings, store: &PgEventStore) -> anyhow::Result<()> {
    let keys = cairn_secrets::Keyring::generate_key_string()?;
    let vault = cairn_personal::Vault::new(cairn_secrets::Keyring::parse(&format!("k1:{}", keys.as_str()))?);
    for (mode, concurrency, users) in [("single_c16", 16, 1), ("bulk100_c4", 4, 100)] {
        let unsealed = new_users_op(store.clone(), None, users);
        let sealed = new_users_op(store.clone(), Some(vault.clone()), users);
        let (plain, sealed) = interleaved(concurrency, settings.phase, 3, unsealed, sealed).await?;
        bench(
            &format!("append.sealed_{mode}.events_per_s"),
            sealed.ops_per_s() * users as f64,
        );
        bench(
            &format!("append.sealed_{mode}.unsealed_events_per_s"),
            plain.ops_per_s() * users as f64,
        );
        bench(
            &format!("append.sealed_{mode}.ratio_to_unsealed"),
            sealed.ops_per_s() / plain.ops_per_s(),
        );
        if mode == "single_c16" {
            bench("append.sealed_single_c16.p99_ms", sealed.p(0.99));
            bench("append.sealed_single_c16.unsealed_p99_ms", plain.p(0.99));
        }
    }
    Ok(())
}

/// Events already in the instance of `append.single_c1_200k_no_stats`.
const FILL: i64 = 200_000;

/// One-event pushes, each claiming a unique value, into an instance that already holds 200,000
/// events, in a database where ANALYZE never ran (autovacuum off), through a connection whose
/// plans were cached while the table was empty: what a new deployment meets once it has grown.
/// Beside it, plain INSERTs into a table of the same definition, filled the same way.
async fn without_statistics(settings: &Settings) -> anyhow::Result<()> {
    let db = BenchDb::create(settings, 1).await?;
    sqlx::raw_sql("CREATE TABLE public.raw_events (LIKE eventstore.events INCLUDING ALL)")
        .execute(&db.pool)
        .await?;
    let store = PgEventStore::new(db.pool.clone());
    let user = AggregateType::parse("user")?;
    let changed = EventType::parse("user.changed")?;
    let instance = InstanceId::new();
    let push = move |store: PgEventStore, n: u64| {
        let (user, changed) = (user.clone(), changed.clone());
        async move {
            let event = EventDraft::new(changed, payload(n), "system", AggregateId::new());
            let mut push = Push::single(
                instance,
                user,
                AggregateId::new(),
                ExpectedSequence::Exact(0),
                vec![event],
            );
            push.unique_ops.push(cairn_eventstore::UniqueOp::Add {
                instance_id: instance,
                unique_type: "user.username".into(),
                value: format!("user{n}@example.com"),
            });
            store.push(push).await?;
            anyhow::Ok(())
        }
    };
    // Plans are cached by the session while the tables are empty.
    for n in 0..10 {
        push(store.clone(), u64::MAX - n).await?;
    }
    for table in ["eventstore.events", "public.raw_events"] {
        sqlx::query(&format!(
            "INSERT INTO {table} (instance_id, aggregate_type, aggregate_id, sequence, event_type, revision, \
               payload, creator, resource_owner, created_at, position, in_tx_order, id) \
             SELECT $1, 'user', gen_random_uuid(), 1, 'user.changed', 1, '{{}}', 'system', $1, \
                    statement_timestamp(), -g, 0, gen_random_uuid() FROM generate_series(1, $2) g"
        ))
        .bind(instance.as_uuid())
        .bind(FILL)
        .execute(&db.pool)
        .await?;
    }
    sqlx::query(
        "INSERT INTO eventstore.unique_constraints (instance_id, unique_type, unique_value) \
         SELECT $1, 'user.username', 'filled' || g FROM generate_series(1, $2) g",
    )
    .bind(instance.as_uuid())
    .bind(FILL)
    .execute(&db.pool)
    .await?;

    let pool = db.pool.clone();
    let raw_op = move |_worker: usize, _i: u64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO public.raw_events (instance_id, aggregate_type, aggregate_id, sequence, event_type, \
                   revision, payload, creator, resource_owner, created_at, position, in_tx_order, id) \
                 VALUES ($1, 'user', $2, 1, 'user.changed', 1, '{}', 'system', $1, statement_timestamp(), \
                         pg_current_xact_id()::text::bigint, 0, $2)",
            )
            .bind(instance.as_uuid())
            .bind(Uuid::now_v7())
            .execute(&pool)
            .await?;
            Ok(())
        }
    };
    let cairn_op = move |_worker: usize, i: u64| push(store.clone(), i);
    let (raw, cairn) = interleaved(1, settings.phase, 3, raw_op, cairn_op).await?;
    bench("append.single_c1_200k_no_stats.events_per_s", cairn.ops_per_s());
    bench("append.single_c1_200k_no_stats.raw_events_per_s", raw.ops_per_s());
    bench("append.single_c1_200k_no_stats.p99_ms", cairn.p(0.99));
    db.drop_db().await
}
