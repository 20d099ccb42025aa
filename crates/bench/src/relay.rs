//! `relay`: how fast committed events reach JetStream.
//!
//! - `relay.lag_p50_ms` / `relay.lag_p99_ms`: at a steady 1,000 events/s, from the moment the
//!   writer's push returned (committed) to the moment a NATS subscriber on the stream's subjects
//!   receives the message (the relay publishes it and JetStream stores it; the PubAck follows within
//!   the same round trip).
//! - `relay.drain_events_per_s`: a relay started over a 200,000-event backlog, until the stream
//!   holds all of them.
//! - beside them, the raw limits measured in the same run: reading the same rows from PostgreSQL by
//!   keyset pages (`relay.raw_read_events_per_s`) and publishing same-sized messages to JetStream,
//!   pipelined the same way (`relay.raw_publish_events_per_s`).

use crate::harness::{BenchDb, Settings, bench, relay_config};
use async_nats::jetstream::{self, stream};
use cairn_domain::{AggregateId, AggregateType, EventDraft, EventId, EventType, InstanceId};
use cairn_eventstore::{CommitListener, EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_eventstore_service::metrics::RelayMetrics;
use cairn_eventstore_service::relay::Relay;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BACKLOG: usize = 200_000;

fn draft(n: usize) -> EventDraft {
    EventDraft::new(
        EventType::parse("user.human.added").unwrap_or_else(|_| unreachable!()),
        json!({ "userName": format!("user{n}@example.com"), "givenName": "Ada", "familyName": "Lovelace" }),
        "system",
        AggregateId::new(),
    )
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> anyhow::Result<u64> {
    Ok(match js.get_stream(name).await {
        Ok(mut s) => s.info().await?.state.messages,
        Err(_) => 0,
    })
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let db = BenchDb::create(settings, 16).await?;
    let store = PgEventStore::new(db.pool.clone());
    let client = async_nats::connect(settings.nats_url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let shutdown = CancellationToken::new();
    let commits = CommitListener::start(db.pool.clone(), shutdown.clone());
    let user = AggregateType::parse("user")?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();

    // Lag at a steady 1,000 events/s.
    let lag_stream = format!("BENCH_LAG_{run_id}");
    let config = relay_config(&lag_stream);
    let mut subscription = client.subscribe(format!("{}.>", config.subject_prefix)).await?;
    let relay = Relay::new(
        store.clone(),
        js.clone(),
        config,
        commits.subscribe(),
        RelayMetrics::default(),
    );
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    let committed: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let total = (settings.phase.as_secs_f64() * 1000.0) as usize;
    let receiver = {
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut pending: HashMap<EventId, Instant> = HashMap::new();
            while (histogram.len() as usize) < total {
                let Ok(Some(message)) =
                    tokio::time::timeout(Duration::from_secs(30), subscription.next()).await
                else {
                    anyhow::bail!("the relay stopped delivering after {} events", histogram.len());
                };
                let arrived = Instant::now();
                let id: EventId = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .and_then(|v| v.as_str().parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("message without an event id"))?;
                pending.insert(id, arrived);
                let mut committed = committed.lock().unwrap_or_else(|p| p.into_inner());
                pending.retain(|id, arrived| match committed.remove(id) {
                    Some(at) => {
                        let _ = histogram.record(arrived.saturating_duration_since(at).as_micros() as u64);
                        false
                    }
                    None => true,
                });
            }
            anyhow::Ok(histogram)
        })
    };
    let instance = InstanceId::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..total {
        ticker.tick().await; // pacing: a steady 1,000 events/s
        let stored = store
            .push(Push::single(
                instance,
                user.clone(),
                AggregateId::new(),
                ExpectedSequence::Exact(0),
                vec![draft(n)],
            ))
            .await?;
        committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stored[0].id, Instant::now());
    }
    let histogram = receiver.await??;
    bench(
        "relay.lag_p50_ms",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
    );
    bench(
        "relay.lag_p99_ms",
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    );
    relay_stop.cancel();
    relay_task.await??;
    js.delete_stream(&lag_stream).await.ok();

    // A 200,000-event backlog.
    let fill_instance = InstanceId::new();
    for chunk in 0..BACKLOG / 1000 {
        let events = (0..1000).map(|i| draft(chunk * 1000 + i)).collect();
        store
            .push(Push::single(
                fill_instance,
                user.clone(),
                AggregateId::new(),
                ExpectedSequence::Exact(0),
                events,
            ))
            .await?;
    }
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM eventstore.events")
        .fetch_one(&db.pool)
        .await?;

    // Raw: read the same rows by keyset pages, without the store.
    let started = Instant::now();
    let (mut position, mut offset, mut read) = (0_i64, 0_i32, 0_usize);
    loop {
        let rows = sqlx::query(
            "SELECT id, instance_id, aggregate_type, aggregate_id, sequence, event_type, revision, payload, \
                    creator, resource_owner, created_at, position, in_tx_order, trace_context \
               FROM eventstore.events WHERE (position, in_tx_order) > ($1, $2) \
              ORDER BY position, in_tx_order LIMIT 1000",
        )
        .bind(position)
        .bind(offset)
        .fetch_all(&db.pool)
        .await?;
        let Some(last) = rows.last() else { break };
        position = last.try_get("position")?;
        offset = last.try_get("in_tx_order")?;
        read += rows.len();
    }
    bench(
        "relay.raw_read_events_per_s",
        read as f64 / started.elapsed().as_secs_f64(),
    );

    // Raw: publish same-sized messages to JetStream, pipelined 1,000 at a time.
    let raw_stream = format!("BENCH_RAW_{run_id}");
    js.create_stream(stream::Config {
        name: raw_stream.clone(),
        subjects: vec![format!("bench_raw_{run_id}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let sample = store
        .filter(&cairn_eventstore::EventFilter::after(
            cairn_domain::Position::ZERO,
            1,
        ))
        .await?;
    let body = bytes_of(sample.first())?;
    let started = Instant::now();
    for _ in 0..BACKLOG / 1000 {
        let mut acks = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let message = jetstream::message::PublishMessage::build()
                .payload(body.clone().into())
                .message_id(EventId::new().to_string());
            acks.push(
                js.send_publish(format!("bench_raw_{run_id}.user.user.human.added"), message)
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    bench(
        "relay.raw_publish_events_per_s",
        BACKLOG as f64 / started.elapsed().as_secs_f64(),
    );
    js.delete_stream(&raw_stream).await.ok();

    // The relay drains the backlog.
    let drain_stream = format!("BENCH_DRAIN_{run_id}");
    let relay = Relay::new(
        store.clone(),
        js.clone(),
        relay_config(&drain_stream),
        commits.subscribe(),
        RelayMetrics::default(),
    );
    let relay_stop = CancellationToken::new();
    let started = Instant::now();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    loop {
        if stream_messages(&js, &drain_stream).await? >= backlog as u64 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the relay did not drain the backlog in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll_interval while measuring
    }
    bench(
        "relay.drain_events_per_s",
        backlog as f64 / started.elapsed().as_secs_f64(),
    );
    relay_stop.cancel();
    relay_task.await??;
    js.delete_stream(&drain_stream).await.ok();

    shutdown.cancel();
    db.drop_db().await
}

fn bytes_of(event: Option<&cairn_domain::StoredEvent>) -> anyhow::Result<Vec<u8>> {
    let event = event.ok_or_else(|| anyhow::anyhow!("no event to size the raw messages by"))?;
    Ok(serde_json::to_vec(event)?)
}
