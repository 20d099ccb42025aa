//! `notifier`: how fast verification emails go out, against a local SMTP sink (a minimal SMTP
//! server in this process that accepts everything and notes when each Message-ID arrived).
//!
//! - `notifier.emails_per_s`: a backlog of code events (2,000 by default,
//!   `CAIRN_BENCH_NOTIFIER_BACKLOG` to change) already committed when a notifier replica starts;
//!   from its start until the sink has accepted every message (intake, compose, SMTP, record).
//! - `notifier.raw_smtp_per_s`: the raw limit of the same run: messages of the same size sent with
//!   lettre straight to the same sink, with the same concurrency, without the notifier.
//!
//! Concurrency (workers and pooled connections) is `CAIRN_BENCH_NOTIFIER_CONCURRENCY` (8). Each
//! connection carries one message at a time, and lettre ends a message with a second small write
//! (`\r\n.\r\n`) that Nagle's algorithm holds until the body is acknowledged, which a delayed ACK
//! postpones by up to 40 ms on Linux: per connection the rate is bounded near 25 messages/s, for
//! the raw sender and the notifier alike.
//! - `notifier.event_to_accept_p50_ms` / `_p99_ms`: at a steady 50 code events/s, from the push's
//!   return to the sink's acceptance, through the relay, JetStream, the intake and a sender.

use crate::harness::{BenchDb, BenchRelay, Settings, bench, start_relay};
use cairn_domain::user::{AddHumanUser, Email, EmailCode, HumanProfile};
use cairn_domain::{Aggregate, AggregateId, DisplayName, EmailAddress, InstanceId, User, UserName};
use cairn_eventstore::{EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_secrets::Keyring;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Messages in flight (notifier workers, raw senders, pooled SMTP connections):
/// `CAIRN_BENCH_NOTIFIER_CONCURRENCY`, 8 by default.
fn concurrency() -> usize {
    std::env::var("CAIRN_BENCH_NOTIFIER_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// What the sink accepted: Message-ID → arrival.
#[derive(Default)]
struct Accepted {
    at: std::sync::Mutex<HashMap<String, Instant>>,
    count: AtomicUsize,
    changed: Notify,
}

impl Accepted {
    async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the sink got {} of {n} messages",
                self.count.load(Ordering::SeqCst)
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await; // poll_interval
        }
    }
}

/// A minimal SMTP server on a free loopback port; runs until `shutdown`.
async fn sink(shutdown: CancellationToken) -> anyhow::Result<(u16, Arc<Accepted>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(Accepted::default());
    let state = accepted.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = session(stream, state).await;
            });
        }
    });
    Ok((port, accepted))
}

async fn session(stream: tokio::net::TcpStream, state: Arc<Accepted>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink.bench ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => write.write_all(b"250-sink.bench\r\n250 8BITMIME\r\n").await?,
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut id = None;
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    if id.is_none() && line.to_ascii_lowercase().starts_with("message-id:") {
                        id = line.get(11..).map(|v| v.trim().to_owned());
                    }
                }
                let now = Instant::now();
                if let Some(id) = id {
                    state.at.lock().unwrap_or_else(|p| p.into_inner()).insert(id, now);
                }
                state.count.fetch_add(1, Ordering::SeqCst);
                state.changed.notify_waiters();
                write.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"250 OK\r\n").await?,
        }
    }
}

pub(crate) fn profile(n: usize) -> anyhow::Result<HumanProfile> {
    Ok(HumanProfile {
        display_name: Some(DisplayName::parse(format!("Ada {n}"))?),
        preferred_language: None,
        emails: vec![Email {
            value: EmailAddress::parse(format!("user{n}@example.com"))?,
            kind: Some("work".into()),
            display: None,
            primary: true,
            verified: false,
        }],
        ..Default::default()
    })
}

/// Adds `count` users (1,000 per push); returns their ids and states.
pub(crate) async fn add_users(
    store: &PgEventStore,
    instance: InstanceId,
    org: AggregateId,
    from: usize,
    count: usize,
) -> anyhow::Result<Vec<(AggregateId, User)>> {
    let mut users = Vec::with_capacity(count);
    let mut start = from;
    while start < from + count {
        let end = (start + 1000).min(from + count);
        let mut push: Option<Push> = None;
        let mut ids = Vec::new();
        for n in start..end {
            let id = AggregateId::new();
            let decision = User::default().add_human(AddHumanUser {
                org_id: org,
                user_name: UserName::parse(format!("user{n}"))?,
                profile: profile(n)?,
                password_hash: None,
                active: true,
            })?;
            let one = Push::from_decision(
                instance,
                User::aggregate_type(),
                id,
                ExpectedSequence::Exact(0),
                decision,
                "bench",
                org,
            );
            push = Some(match push {
                None => one,
                Some(p) => p.and(one),
            });
            ids.push(id);
        }
        let Some(push) = push else { break };
        let stored = store.push(push).await?;
        for id in ids {
            let events: Vec<_> = stored.iter().filter(|e| e.aggregate_id == id).cloned().collect();
            users.push((id, cairn_domain::rebuild::<User>(&events)?));
        }
        start = end;
    }
    Ok(users)
}

/// The push that adds a fresh, sealed code for one user.
fn code_push(
    keys: &Keyring,
    instance: InstanceId,
    org: AggregateId,
    (id, user): &(AggregateId, User),
) -> anyhow::Result<Push> {
    let aad = cairn_secrets::email_code_aad(instance.as_uuid().as_bytes(), id.as_uuid().as_bytes());
    let sealed = keys.encrypt_str("K7M2Q9XA", &aad)?;
    let decision = user.add_email_code(EmailCode {
        encrypted: serde_json::to_value(sealed)?,
        expires_at: cairn_domain::Clock::now(&cairn_domain::SystemClock) + chrono::Duration::hours(24),
        url_template: None,
        return_code: false,
    })?;
    Ok(Push::from_decision(
        instance,
        User::aggregate_type(),
        *id,
        ExpectedSequence::Exact(user.sequence()),
        decision,
        "bench",
        org,
    ))
}

fn notifier_config(
    db: &BenchDb,
    keys: &str,
    port: u16,
    stream: &str,
    prefix: &str,
) -> cairn_notifier::Config {
    let mut config = cairn_notifier::Config::for_tests(&db.url(), keys);
    config.nats_url = std::env::var("CAIRN_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    config.stream_name = stream.to_owned();
    config.subject_prefix = prefix.to_owned();
    config.concurrency = concurrency();
    config.smtp_host = Some("127.0.0.1".into());
    config.smtp_port = port;
    config.smtp_tls = cairn_notifier::TlsMode::None;
    config.smtp_from = "bench@notifier.test".into();
    config
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let backlog: usize = std::env::var("CAIRN_BENCH_NOTIFIER_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let key_string = format!("k1:{}", Keyring::generate_key_string()?.as_str());
    let keys = Keyring::parse(&key_string)?;
    let shutdown = CancellationToken::new();
    let (port, accepted) = sink(shutdown.clone()).await?;

    // Raw limit: lettre straight to the sink, same concurrency, messages of the same size.
    {
        use lettre::message::{Mailbox, MultiPart};
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(concurrency() as u32))
            .build();
        let text =
            "Hello Ada,\n\nplease confirm your email address for Default with this code:\n\n    K7M2Q9XA\n\n"
                .repeat(3);
        let html = format!("<html><body><p>{text}</p></body></html>");
        let sent = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency() {
            let (transport, text, html, sent) = (transport.clone(), text.clone(), html.clone(), sent.clone());
            workers.spawn(async move {
                while sent.fetch_add(1, Ordering::SeqCst) < backlog {
                    let message = Message::builder()
                        .from("bench@notifier.test".parse::<Mailbox>()?)
                        .to("user@example.com".parse::<Mailbox>()?)
                        .subject("Default: verify your email address")
                        .message_id(Some(format!("<{}@raw.bench>", uuid::Uuid::new_v4())))
                        .multipart(MultiPart::alternative_plain_html(text.clone(), html.clone()))?;
                    transport.send(message).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        bench(
            "notifier.raw_smtp_per_s",
            backlog as f64 / started.elapsed().as_secs_f64(),
        );
    }

    // Backlog: every code committed before the replica starts.
    {
        let db = BenchDb::create(settings, 16).await?;
        let store = PgEventStore::new(db.pool.clone());
        let instance = InstanceId::new();
        let org = AggregateId::from_uuid(instance.as_uuid());
        let users = add_users(&store, instance, org, 0, backlog).await?;
        for chunk in users.chunks(500) {
            let mut push: Option<Push> = None;
            for user in chunk {
                let one = code_push(&keys, instance, org, user)?;
                push = Some(match push {
                    None => one,
                    Some(p) => p.and(one),
                });
            }
            if let Some(push) = push {
                store.push(push).await?;
            }
        }
        let before = accepted.count.load(Ordering::SeqCst);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let service = cairn_notifier::start(
            notifier_config(
                &db,
                &key_string,
                port,
                "BENCH_NOTIFIER_NONE",
                "bench_notifier_none.events",
            ),
            stop.clone(),
        )
        .await?;
        accepted
            .wait_for(before + backlog, Duration::from_secs(600))
            .await?;
        bench(
            "notifier.emails_per_s",
            backlog as f64 / started.elapsed().as_secs_f64(),
        );
        stop.cancel();
        service.wait().await?;
        db.drop_db().await?;
    }

    // Event-to-accept latency at a steady 50 events/s, through relay and JetStream.
    {
        let db = BenchDb::create(settings, 24).await?;
        let store = PgEventStore::new(db.pool.clone());
        let stop = CancellationToken::new();
        let BenchRelay {
            js,
            name,
            prefix,
            task: relay_task,
        } = start_relay(settings, &db.pool, &store, "NOTIFIER", &stop).await?;
        let instance = InstanceId::new();
        let org = AggregateId::from_uuid(instance.as_uuid());
        let count = ((settings.phase.as_secs_f64() * 50.0) as usize).max(50);
        let users = add_users(&store, instance, org, 0, count + 1).await?;
        let service = cairn_notifier::start(
            notifier_config(&db, &key_string, port, &name, &prefix),
            stop.clone(),
        )
        .await?;
        // Warm up: the first message takes the intake lease and opens SMTP connections.
        let base = accepted.count.load(Ordering::SeqCst);
        store
            .push(code_push(&keys, instance, org, &users[count])?)
            .await?;
        accepted.wait_for(base + 1, Duration::from_secs(60)).await?;
        let mut pushed: Vec<(String, Instant)> = Vec::with_capacity(count);
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for user in users.iter().take(count) {
            ticker.tick().await; // pacing: a steady 50 events/s
            let stored = store.push(code_push(&keys, instance, org, user)?).await?;
            pushed.push((
                cairn_notifier::intake::message_id(stored[0].id.as_uuid()),
                Instant::now(),
            ));
        }
        accepted
            .wait_for(base + 1 + count, Duration::from_secs(120))
            .await?;
        let mut histogram = Histogram::<u64>::new(3)?;
        {
            let at = accepted.at.lock().unwrap_or_else(|p| p.into_inner());
            for (id, pushed_at) in &pushed {
                let arrived = at
                    .get(id)
                    .ok_or_else(|| anyhow::anyhow!("no message with Message-ID {id}"))?;
                histogram.record(arrived.saturating_duration_since(*pushed_at).as_micros() as u64)?;
            }
        }
        bench(
            "notifier.event_to_accept_p50_ms",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
        );
        bench(
            "notifier.event_to_accept_p99_ms",
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
        );
        stop.cancel();
        service.wait().await?;
        relay_task.await??;
        js.delete_stream(&name).await.ok();
        db.drop_db().await?;
    }
    shutdown.cancel();
    Ok(())
}
