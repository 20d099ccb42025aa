//! `projector`: how fast the read models follow the event log.
//!
//! - `projector.catchup_events_per_s`: the users projection over a backlog of `user.human.added`
//!   events (1,000,000 by default, `CAIRN_BENCH_BACKLOG` to change), one replica, one instance.
//! - `projector.catchup3_events_per_s`: the same number of events spread over 100 instances, three
//!   replicas sharing the leases.
//! - `projector.lag_p50_ms` / `projector.lag_p99_ms`: at a steady 1,000 events/s, from the push's
//!   return to the projector's commit notification for a position at or past it, through the relay
//!   and JetStream.
//! - `projector.raw_insert_rows_per_s`: the raw limit measured in the same run, the same rows
//!   inserted 1,000 per statement into a copy of the users table without the framework.

use crate::harness::{BenchDb, BenchRelay, Settings, bench, start_relay};
use cairn_domain::user::{AddHumanUser, Email, HumanProfile, PersonName};
use cairn_domain::{Aggregate, AggregateId, DisplayName, EmailAddress, InstanceId, Position, User, UserName};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_projection::Projection;
use cairn_projection::projector::{Projector, ProjectorConfig, ProjectorMetrics};
use hdrhistogram::Histogram;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn user_push(instance: InstanceId, n: usize) -> anyhow::Result<Push> {
    let org = AggregateId::from_uuid(instance.as_uuid());
    let decision = User::default().add_human(AddHumanUser {
        org_id: org,
        user_name: UserName::parse(format!("user{n}"))?,
        profile: HumanProfile {
            name: PersonName {
                given_name: Some("Ada".into()),
                family_name: Some(format!("Lovelace {n}")),
                ..Default::default()
            },
            display_name: Some(DisplayName::parse(format!("Ada {n}"))?),
            emails: vec![Email {
                value: EmailAddress::parse(format!("user{n}@example.com"))?,
                kind: Some("work".into()),
                display: None,
                primary: true,
                verified: false,
            }],
            ..Default::default()
        },
        password_hash: None,
        active: true,
    })?;
    Ok(Push::from_decision(
        instance,
        User::aggregate_type(),
        AggregateId::new(),
        ExpectedSequence::Exact(0),
        decision,
        "bench",
        org,
    ))
}

/// Appends `total` user creations over `instances`, 1,000 per push.
async fn fill(store: &PgEventStore, instances: &[InstanceId], total: usize) -> anyhow::Result<()> {
    let per_push = 1000;
    let mut written = 0;
    while written < total {
        let instance = instances[(written / per_push) % instances.len()];
        let mut push = user_push(instance, written)?;
        for k in 1..per_push.min(total - written) {
            push = push.and(user_push(instance, written + k)?);
        }
        written += push.event_count();
        store.push(push).await?;
    }
    Ok(())
}

async fn caught_up(pool: &sqlx::PgPool, instances: &[InstanceId]) -> anyhow::Result<bool> {
    for instance in instances {
        // Every committed event, not only those below the visibility horizon, which the
        // projector's own transactions can hold back.
        let head: Option<(i64, i32)> = sqlx::query_as(
            "SELECT position, in_tx_order FROM eventstore.events WHERE instance_id = $1 \
             ORDER BY position DESC, in_tx_order DESC LIMIT 1",
        )
        .bind(instance.as_uuid())
        .fetch_optional(pool)
        .await?;
        let head = head.map_or(Position::ZERO, |(p, o)| Position::new(p, o));
        let at: Option<(i64, i32)> = sqlx::query_as(
            "SELECT position, position_offset FROM projections.projection_states WHERE name = 'users' AND instance_id = $1",
        )
        .bind(instance.as_uuid())
        .fetch_optional(pool)
        .await?;
        if at.map_or(Position::ZERO, |(p, o)| Position::new(p, o)) < head {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn catch_up(
    db: &BenchDb,
    store: &PgEventStore,
    instances: &[InstanceId],
    replicas: usize,
    total: usize,
) -> anyhow::Result<f64> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..replicas {
        let projector = Projector::new(
            db.pool.clone(),
            store.clone(),
            vec![Arc::new(cairn_readmodel::UsersProjection) as Arc<dyn Projection>],
            ProjectorConfig {
                lease_ttl: Duration::from_secs(3),
                stream: None,
                ..ProjectorConfig::default()
            },
            None,
            ProjectorMetrics::default(),
        );
        tasks.push(tokio::spawn(projector.run(shutdown.clone())));
    }
    while !caught_up(&db.pool, instances).await? {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "catch-up took over 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll_interval while measuring
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    for task in tasks {
        task.await?;
    }
    Ok(rate)
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let total: usize = std::env::var("CAIRN_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    // Raw limit: the same rows, 1,000 per statement, into a copy of the users table.
    {
        let db = BenchDb::create(settings, 8).await?;
        sqlx::raw_sql("CREATE TABLE public.raw_users (LIKE projections.users INCLUDING ALL)")
            .execute(&db.pool)
            .await?;
        let instance = InstanceId::new();
        let rows: Vec<serde_json::Value> = (0..1000)
            .map(|n| {
                serde_json::json!({
                    "instance_id": instance, "org_id": instance, "kind": "human", "user_name": format!("user{n}"),
                    "state": "active", "display_name": format!("Ada {n}"), "given_name": "Ada",
                    "family_name": format!("Lovelace {n}"), "primary_email": format!("user{n}@example.com"),
                    "email_verified": false, "profile": {"emails": [{"value": format!("user{n}@example.com")}]},
                    "created_at": "2026-01-01T00:00:00Z", "changed_at": "2026-01-01T00:00:00Z", "sequence": 1,
                })
            })
            .collect();
        let started = Instant::now();
        let rounds = (total / 1000).clamp(1, 200);
        for _ in 0..rounds {
            let batch: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r["id"] = serde_json::json!(uuid::Uuid::now_v7());
                    r
                })
                .collect();
            sqlx::query("INSERT INTO public.raw_users SELECT * FROM jsonb_populate_recordset(NULL::public.raw_users, $1)")
                .bind(serde_json::Value::Array(batch))
                .execute(&db.pool)
                .await?;
        }
        bench(
            "projector.raw_insert_rows_per_s",
            (rounds * 1000) as f64 / started.elapsed().as_secs_f64(),
        );
        db.drop_db().await?;
    }

    // One replica, one instance.
    {
        let db = BenchDb::create(settings, 16).await?;
        let store = PgEventStore::new(db.pool.clone());
        let instance = InstanceId::new();
        fill(&store, &[instance], total).await?;
        bench(
            "projector.catchup_events_per_s",
            catch_up(&db, &store, &[instance], 1, total).await?,
        );
        db.drop_db().await?;
    }

    // Three replicas, 100 instances.
    {
        let db = BenchDb::create(settings, 32).await?;
        let store = PgEventStore::new(db.pool.clone());
        let instances: Vec<InstanceId> = (0..100).map(|_| InstanceId::new()).collect();
        fill(&store, &instances, total).await?;
        bench(
            "projector.catchup3_events_per_s",
            catch_up(&db, &store, &instances, 3, total).await?,
        );
        db.drop_db().await?;
    }

    // Live lag at 1,000 events/s through the relay and JetStream.
    {
        let db = BenchDb::create(settings, 24).await?;
        let store = PgEventStore::new(db.pool.clone());
        let shutdown = CancellationToken::new();
        let BenchRelay {
            js,
            name,
            prefix,
            task: relay_task,
        } = start_relay(settings, &db.pool, &store, "PROJ", &shutdown).await?;
        let instance = InstanceId::new();
        // Create the instance's lease and stream before measuring.
        store.push(user_push(instance, 0)?).await?;
        let projector = Projector::new(
            db.pool.clone(),
            store.clone(),
            vec![Arc::new(cairn_readmodel::UsersProjection) as Arc<dyn Projection>],
            ProjectorConfig {
                lease_ttl: Duration::from_secs(5),
                stream: Some((name.clone(), prefix)),
                ..ProjectorConfig::default()
            },
            Some(js.clone()),
            ProjectorMetrics::default(),
        );
        let projector_task = tokio::spawn(projector.run(shutdown.clone()));
        while !caught_up(&db.pool, &[instance]).await? {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll_interval while warming up
        }
        let mut listener = PgListener::connect_with(&db.pool).await?;
        listener.listen(cairn_projection::PROJECTION_CHANNEL).await?;
        let count = (settings.phase.as_secs_f64() * 1000.0) as usize;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Position, Instant)>();
        let listen = tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut pending: Vec<(Position, Instant)> = Vec::new();
            while (histogram.len() as usize) < count {
                let notification = tokio::time::timeout(Duration::from_secs(30), listener.recv()).await??;
                let arrived = Instant::now();
                while let Ok(p) = rx.try_recv() {
                    pending.push(p);
                }
                let Some(position) = notification
                    .payload()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<Position>().ok())
                else {
                    continue;
                };
                pending.retain(|(p, at)| {
                    if *p <= position {
                        let _ = histogram.record(arrived.saturating_duration_since(*at).as_micros() as u64);
                        false
                    } else {
                        true
                    }
                });
            }
            anyhow::Ok(histogram)
        });
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 1..=count {
            ticker.tick().await; // pacing: a steady 1,000 events/s
            let stored = store.push(user_push(instance, n)?).await?;
            let _ = tx.send((stored[0].position, Instant::now()));
        }
        let histogram = listen.await??;
        bench(
            "projector.lag_p50_ms",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
        );
        bench(
            "projector.lag_p99_ms",
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
        );
        shutdown.cancel();
        relay_task.await??;
        projector_task.await?;
        js.delete_stream(&name).await.ok();
        db.drop_db().await?;
    }
    Ok(())
}
