//! `actions`: how fast events go out as signed webhooks, against a local receiver (a minimal
//! HTTP/1.1 server in this process that answers 200 to every POST and notes when each
//! `webhook-id` arrived).
//!
//! - `actions.deliveries_per_s`: a backlog of `user.human.added` events (2,000 by default,
//!   `CAIRN_BENCH_ACTIONS_BACKLOG`) already committed, with one target and an `event:user.*`
//!   execution, when an actions replica starts; from its start until the receiver has every
//!   delivery (intake, claim, sign, call, record, wake the next).
//! - `actions.raw_http_post_per_s`: the raw limit of the same run: the same receiver hit with
//!   bodies of the same size by the same HTTP client without the service, with the replica's
//!   per-target concurrency (16).
//! - `actions.raw_pg_delivery_tx_per_s`: PostgreSQL's limit in the same run for the least a
//!   delivery writes (a transaction inserting an attempt and updating its delivery row), at the
//!   same concurrency.
//! - `actions.event_to_delivery_p50_ms` / `_p99_ms`: at a steady 500 events/s (the rate reached
//!   is printed as `actions.event_rate_per_s`), from the push's return to the receiver, through the
//!   relay, JetStream, the intake and the dispatcher.
//!
//! - `actions.request_condition_added_p99_ms`: what a request condition (an interrupting `call`
//!   target on `AddHumanUser`, at the same receiver) adds to the RPC's p99, one call at a time:
//!   `request_condition_with_p99_ms` minus `request_condition_base_p99_ms` (the same RPC without
//!   it, same run). Beside it the target's own time (`request_condition_target_p99_ms`: the same
//!   client posting a request-sized body to the receiver) and what is left once that is taken off
//!   (`request_condition_overhead_p99_ms`: decoding, signing, the cache; goal under 5 ms).

use crate::harness::{BenchDb, BenchRelay, Settings, bench, start_relay};
use crate::notifier::{add_users, profile};
use cairn_actions::commands::{self, domain_error};
use cairn_domain::action::{Condition, Executions, Target, TargetKind, TargetSettings};
use cairn_domain::user::AddHumanUser;
use cairn_domain::{Aggregate, AggregateId, InstanceId, User, UserName};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_secrets::Keyring;
use cairn_webhooks::client::Client;
use cairn_webhooks::guard::{Endpoint, Guard};
use cairn_webhooks::secret::SigningSecret;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Calls in flight to one target from one replica (`CAIRN_ACTIONS_TARGET_CONCURRENCY`'s default),
/// and the raw client's concurrency.
const CONCURRENCY: usize = 16;

/// What the receiver got: webhook-id → first arrival.
#[derive(Default)]
struct Received {
    at: std::sync::Mutex<HashMap<String, Instant>>,
    count: AtomicUsize,
    changed: Notify,
}

impl Received {
    async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the receiver got {} of {n} requests",
                self.count.load(Ordering::SeqCst)
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await; // poll_interval
        }
    }
}

/// A minimal keep-alive HTTP/1.1 receiver on a free loopback port; runs until `shutdown`.
async fn receiver(shutdown: CancellationToken) -> anyhow::Result<(u16, Arc<Received>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received = Arc::new(Received::default());
    let state = received.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let _ = connection(stream, state).await;
            });
        }
    });
    Ok((port, received))
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<Received>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        // Request line and headers.
        let (mut length, mut id) = (0_usize, None);
        let mut first = true;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            } else if lower.starts_with("webhook-id:") {
                id = line.get(11..).map(|v| v.trim().to_owned());
            }
        }
        let mut body = vec![0_u8; length];
        read.read_exact(&mut body).await?;
        let now = Instant::now();
        if let Some(id) = id {
            state
                .at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id)
                .or_insert(now);
        }
        state.count.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_waiters();
        write
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
            .await?;
    }
}

/// One target at the receiver and an `event:user.*` execution, as ActionService would commit them.
async fn configure(
    store: &PgEventStore,
    keys: &Keyring,
    instance: InstanceId,
    port: u16,
) -> anyhow::Result<()> {
    let settings = TargetSettings {
        name: "bench".into(),
        endpoint: format!("http://127.0.0.1:{port}/hook"),
        kind: TargetKind::Webhook,
        timeout_ms: 10_000,
        interrupt_on_error: false,
        strict_order: false,
    };
    configure_target(store, keys, instance, settings, "event:user.*").await
}

/// A target with `settings` and an execution of `condition` calling it.
async fn configure_target(
    store: &PgEventStore,
    keys: &Keyring,
    instance: InstanceId,
    settings: TargetSettings,
    condition: &str,
) -> anyhow::Result<()> {
    let target = AggregateId::new();
    let secret = SigningSecret::generate();
    let sealed = serde_json::to_value(secret.seal(
        keys,
        instance.as_uuid().as_bytes(),
        target.as_uuid().as_bytes(),
    )?)?;
    commands::execute::<Target>(store, instance, target, "bench", |t| {
        t.add(settings.clone(), sealed.clone()).map_err(domain_error)
    })
    .await
    .map_err(|e| anyhow::anyhow!("adding the target: {e:?}"))?;
    let condition = Condition::parse(condition).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    commands::execute::<Executions>(
        store,
        instance,
        AggregateId::from_uuid(instance.as_uuid()),
        "bench",
        |e| e.set(&condition, vec![target]).map_err(domain_error),
    )
    .await
    .map_err(|e| anyhow::anyhow!("setting the execution: {e:?}"))?;
    Ok(())
}

/// Adds one user; the id of its event (the delivery's webhook-id).
async fn push_user(
    store: &PgEventStore,
    instance: InstanceId,
    org: AggregateId,
    n: usize,
) -> anyhow::Result<String> {
    let decision = User::default().add_human(AddHumanUser {
        org_id: org,
        user_name: UserName::parse(format!("user{n}"))?,
        profile: profile(n)?,
        password_hash: None,
        active: true,
    })?;
    let stored = store
        .push(Push::from_decision(
            instance,
            User::aggregate_type(),
            AggregateId::new(),
            ExpectedSequence::Exact(0),
            decision,
            "bench",
            org,
        ))
        .await?;
    let event = stored
        .first()
        .ok_or_else(|| anyhow::anyhow!("the push stored no event"))?;
    Ok(event.id.as_uuid().to_string())
}

fn actions_config(db: &BenchDb, keys: &str, stream: &str, prefix: &str) -> cairn_actions::Config {
    let mut config = cairn_actions::Config::for_tests(&db.url(), keys);
    config.nats_url = std::env::var("CAIRN_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    config.stream_name = stream.to_owned();
    config.subject_prefix = prefix.to_owned();
    config
}

/// The raw limit: the same client, bodies of the same size, straight to the receiver.
async fn raw_posts(port: u16, count: usize) -> anyhow::Result<f64> {
    let client = Client::new(Guard::allowing(["127.0.0.1"]))
        .map_err(|e| anyhow::anyhow!("setting up the client: {e}"))?;
    let endpoint =
        Endpoint::parse(&format!("http://127.0.0.1:{port}/raw")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = bytes::Bytes::from(serde_json::to_vec(&serde_json::json!({
        "type": "user.human.added",
        "timestamp": "2026-12-04T00:00:00Z",
        "data": {"instanceId": uuid::Uuid::new_v4(), "aggregateType": "user", "aggregateId": uuid::Uuid::new_v4(),
                 "sequence": 1, "position": "1234.0", "creator": "bench",
                 "payload": {"userName": "user1", "profile": {"displayName": "Ada 1",
                   "emails": [{"value": "user1@example.com", "type": "work", "primary": true}]}}},
    }))?);
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, endpoint, body, sent) = (client.clone(), endpoint.clone(), body.clone(), sent.clone());
        workers.spawn(async move {
            while sent.fetch_add(1, Ordering::SeqCst) < count {
                let headers = [
                    ("webhook-id", uuid::Uuid::new_v4().to_string()),
                    ("webhook-timestamp", "1796342400".to_owned()),
                    ("webhook-signature", format!("v1,{}", "A".repeat(44))),
                    ("content-type", "application/json".to_owned()),
                ];
                let response = client
                    .post(&endpoint, &headers, body.clone(), Duration::from_secs(10))
                    .await?;
                anyhow::ensure!(response.is_success(), "the receiver answered {}", response.status);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let backlog: usize = std::env::var("CAIRN_BENCH_ACTIONS_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let key_string = format!("k1:{}", Keyring::generate_key_string()?.as_str());
    let keys = Keyring::parse(&key_string)?;
    let shutdown = CancellationToken::new();
    let (port, received) = receiver(shutdown.clone()).await?;

    bench("actions.raw_http_post_per_s", raw_posts(port, backlog).await?);
    bench(
        "actions.raw_pg_delivery_tx_per_s",
        raw_delivery_transactions(settings).await?,
    );

    // Backlog: every event committed before the replica starts.
    {
        let db = BenchDb::create(settings, 16).await?;
        let store = PgEventStore::new(db.pool.clone());
        let instance = InstanceId::new();
        let org = AggregateId::from_uuid(instance.as_uuid());
        configure(&store, &keys, instance, port).await?;
        add_users(&store, instance, org, 0, backlog).await?;
        let before = received.count.load(Ordering::SeqCst);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let service = cairn_actions::start(
            actions_config(
                &db,
                &key_string,
                "BENCH_ACTIONS_NONE",
                "bench_actions_none.events",
            ),
            stop.clone(),
        )
        .await?;
        // When the intake has made every delivery row, and how many had gone out by then
        // (sampled for the figures, not waited on for correctness).
        let (pool, seen) = (db.pool.clone(), received.clone());
        let intake = tokio::spawn(async move {
            loop {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM actions.deliveries")
                    .fetch_one(&pool)
                    .await?;
                if rows >= backlog as i64 {
                    return anyhow::Ok((started.elapsed(), seen.count.load(Ordering::SeqCst)));
                }
                tokio::time::sleep(Duration::from_millis(5)).await; // sampling interval
            }
        });
        received
            .wait_for(before + backlog, Duration::from_secs(600))
            .await?;
        let total = started.elapsed();
        let (intake, delivered_by_then) = intake.await??;
        bench("actions.deliveries_per_s", backlog as f64 / total.as_secs_f64());
        // The same run split: the intake turning the backlog into delivery rows, and the
        // dispatchers' own rate once it had (what went out after, over the time after).
        bench(
            "actions.intake_events_per_s",
            backlog as f64 / intake.as_secs_f64(),
        );
        let rest = (before + backlog).saturating_sub(delivered_by_then);
        if rest > 0 && total > intake {
            bench(
                "actions.dispatch_after_intake_per_s",
                rest as f64 / (total - intake).as_secs_f64(),
            );
        }
        stop.cancel();
        service.wait().await?;
        db.drop_db().await?;
    }

    // Event-to-delivery latency at a steady 500 events/s, through relay and JetStream.
    {
        let db = BenchDb::create(settings, 24).await?;
        let store = PgEventStore::new(db.pool.clone());
        let stop = CancellationToken::new();
        let BenchRelay {
            js,
            name,
            prefix,
            task: relay_task,
        } = start_relay(settings, &db.pool, &store, "ACTIONS", &stop).await?;
        let instance = InstanceId::new();
        let org = AggregateId::from_uuid(instance.as_uuid());
        configure(&store, &keys, instance, port).await?;
        let service =
            cairn_actions::start(actions_config(&db, &key_string, &name, &prefix), stop.clone()).await?;
        // Warm up: the first delivery takes the intake lease and opens a connection.
        let base = received.count.load(Ordering::SeqCst);
        add_users(&store, instance, org, 0, 1).await?;
        received.wait_for(base + 1, Duration::from_secs(60)).await?;
        let count = ((settings.phase.as_secs_f64() * 500.0) as usize).max(500);
        let mut pushed: Vec<(String, Instant)> = Vec::with_capacity(count);
        let mut ticker = tokio::time::interval(Duration::from_millis(2));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for n in 1..=count {
            ticker.tick().await; // pacing: a steady 500 events/s
            let id = push_user(&store, instance, org, n).await?;
            pushed.push((id, Instant::now()));
        }
        bench(
            "actions.event_rate_per_s",
            count as f64 / started.elapsed().as_secs_f64(),
        );
        received
            .wait_for(base + 1 + count, Duration::from_secs(120))
            .await?;
        let mut histogram = Histogram::<u64>::new(3)?;
        {
            let at = received.at.lock().unwrap_or_else(|p| p.into_inner());
            for (id, pushed_at) in &pushed {
                let arrived = at
                    .get(id)
                    .ok_or_else(|| anyhow::anyhow!("no delivery with webhook-id {id}"))?;
                histogram.record(arrived.saturating_duration_since(*pushed_at).as_micros() as u64)?;
            }
        }
        bench(
            "actions.event_to_delivery_p50_ms",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
        );
        bench(
            "actions.event_to_delivery_p99_ms",
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
        );
        stop.cancel();
        service.wait().await?;
        relay_task.await??;
        js.delete_stream(&name).await.ok();
        db.drop_db().await?;
    }
    request_conditions(settings, port, &received).await?;
    shutdown.cancel();
    Ok(())
}

/// The PostgreSQL limit of the same run for what a delivery must write at the least: one
/// transaction per delivery that records an attempt and marks its row delivered, at the
/// dispatcher's per-target concurrency, on tables shaped like `actions.attempts` and
/// `actions.deliveries` (no claim, no event read, no HTTP).
async fn raw_delivery_transactions(settings: &Settings) -> anyhow::Result<f64> {
    let db = BenchDb::create(settings, CONCURRENCY as u32 + 2).await?;
    sqlx::raw_sql(
        "CREATE TABLE public.raw_deliveries (LIKE actions.deliveries INCLUDING ALL); \
         CREATE TABLE public.raw_attempts (LIKE actions.attempts INCLUDING ALL); \
         INSERT INTO public.raw_deliveries (instance_id, target_id, event_id, event_type, aggregate_type, aggregate_id, \
           sequence, event_position, event_offset, event_created_at, state) \
         SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', gen_random_uuid(), 'user.human.added', 'user', \
                gen_random_uuid(), 1, n, 0, now(), 'delivering' FROM generate_series(1, 200000) AS n;",
    )
    .execute(&db.pool)
    .await?;
    let events: Arc<Vec<uuid::Uuid>> = Arc::new(
        sqlx::query_scalar("SELECT event_id FROM public.raw_deliveries")
            .fetch_all(&db.pool)
            .await?,
    );
    let pool = db.pool.clone();
    let run = crate::harness::closed_loop(CONCURRENCY, settings.phase, move |worker, i| {
        let (pool, events) = (pool.clone(), events.clone());
        async move {
            let event = events[(worker + CONCURRENCY * i as usize) % events.len()];
            let mut tx = cairn_eventstore::begin(&pool).await?;
            sqlx::query(
                "INSERT INTO public.raw_attempts (instance_id, target_id, event_id, attempt, started_at, status, latency_ms) \
                 VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', $1, $2, now(), 200, 1.0)",
            )
            .bind(event)
            .bind(i as i32)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE public.raw_deliveries SET state = 'delivered', delivered_at = now() \
                  WHERE target_id = '00000000-0000-0000-0000-000000000001' AND event_id = $1",
            )
            .bind(event)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await?;
    db.drop_db().await?;
    Ok(run.ops_per_s())
}

/// Sequential `AddHumanUser` calls; their latencies (microseconds).
async fn add_users_one_by_one(
    stack: &cairn_stack::Stack,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Histogram<u64>> {
    use cairn_proto::user::v1 as pb;
    let mut client = stack.users();
    let token = stack.admin.token.to_string();
    let mut histogram = Histogram::<u64>::new(3)?;
    for n in 0..count {
        let request = pb::AddHumanUserRequest {
            user_name: format!("{prefix}{n}"),
            profile: Some(pb::HumanProfile {
                name: Some(pb::Name {
                    given_name: "Ada".into(),
                    family_name: format!("Lovelace {n}"),
                    ..Default::default()
                }),
                emails: vec![pb::Email {
                    value: format!("{prefix}{n}@example.com"),
                    primary: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        client
            .add_human_user(cairn_stack::with_token(request, &token))
            .await?;
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram)
}

/// The target's own time: the same client, a request-sized body, one call at a time.
async fn target_time(port: u16, count: usize) -> anyhow::Result<Histogram<u64>> {
    let client = Client::new(Guard::allowing(["127.0.0.1"]))
        .map_err(|e| anyhow::anyhow!("setting up the client: {e}"))?;
    let endpoint =
        Endpoint::parse(&format!("http://127.0.0.1:{port}/raw")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = bytes::Bytes::from(serde_json::to_vec(&serde_json::json!({
        "type": "request",
        "timestamp": "2026-12-04T00:00:00Z",
        "data": {"instanceId": uuid::Uuid::new_v4(), "method": "/cairn.user.v1.UserService/AddHumanUser",
                 "caller": {"tokenId": "t", "principalId": uuid::Uuid::new_v4(), "orgId": null},
                 "request": {"userName": "user1", "profile": {"name": {"givenName": "Ada", "familyName": "Lovelace 1"},
                   "emails": [{"value": "user1@example.com", "primary": true}]}}},
    }))?);
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..count {
        let headers = [
            ("webhook-id", uuid::Uuid::new_v4().to_string()),
            ("webhook-timestamp", "1796342400".to_owned()),
            ("webhook-signature", format!("v1,{}", "A".repeat(44))),
        ];
        let started = Instant::now();
        let response = client
            .post(&endpoint, &headers, body.clone(), Duration::from_secs(10))
            .await?;
        anyhow::ensure!(response.is_success(), "the receiver answered {}", response.status);
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram)
}

/// What a request condition adds to an RPC (see the module documentation).
async fn request_conditions(settings: &Settings, port: u16, received: &Received) -> anyhow::Result<()> {
    let count = ((settings.phase.as_secs_f64() * 100.0) as usize).clamp(200, 2000);
    let stack = cairn_stack::Stack::start_with(cairn_stack::Options::default().request_conditions(
        cairn_command_api::conditions::ConditionSettings {
            allowed_hosts: vec!["127.0.0.1".into()],
            ..Default::default()
        },
    ))
    .await?;
    let stop = CancellationToken::new();
    let mut config = cairn_actions::Config::for_tests(&stack.db.url, stack.keys());
    config.nats_url = settings.nats_url.clone();
    config.stream_name = stack.stream().to_owned();
    config.subject_prefix = stack.prefix().to_owned();
    let service = cairn_actions::start(config, stop.clone()).await?;
    // Warm up the connections and the cache, then the RPC alone.
    add_users_one_by_one(&stack, "warm", 20).await?;
    let base = add_users_one_by_one(&stack, "base", count).await?;

    // An interrupting call target on AddHumanUser, committed as ActionService would.
    let keys = Keyring::parse(stack.keys())?;
    let gate = TargetSettings {
        name: "gate".into(),
        endpoint: format!("http://127.0.0.1:{port}/gate"),
        kind: TargetKind::Call,
        timeout_ms: 10_000,
        interrupt_on_error: true,
        strict_order: false,
    };
    configure_target(
        &stack.api().exec.store,
        &keys,
        stack.admin.instance_id,
        gate,
        "request:/cairn.user.v1.UserService/AddHumanUser",
    )
    .await?;
    // Until command-api calls the target (it learns of the execution when the intake commits).
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = received.count.load(Ordering::SeqCst);
    let mut n = 0;
    while received.count.load(Ordering::SeqCst) == before {
        anyhow::ensure!(
            Instant::now() < deadline,
            "command-api never called the request target"
        );
        add_users_one_by_one(&stack, &format!("wait{n}-"), 1).await?;
        n += 1;
    }
    let target_own = target_time(port, count).await?;
    let calls = received.count.load(Ordering::SeqCst);
    let with = add_users_one_by_one(&stack, "with", count).await?;
    anyhow::ensure!(
        received.count.load(Ordering::SeqCst) >= calls + count,
        "not every AddHumanUser called the target"
    );
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    bench("actions.request_condition_base_p99_ms", p99(&base));
    bench("actions.request_condition_with_p99_ms", p99(&with));
    bench("actions.request_condition_target_p99_ms", p99(&target_own));
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
    bench("actions.request_condition_added_p50_ms", p50(&with) - p50(&base));
    bench("actions.request_condition_added_p99_ms", p99(&with) - p99(&base));
    bench(
        "actions.request_condition_overhead_p99_ms",
        p99(&with) - p99(&base) - p99(&target_own),
    );
    stop.cancel();
    service.wait().await?;
    stack.stop().await?;
    Ok(())
}
