//! The `eventstore` service against the real PostgreSQL and NATS JetStream: ordered, lossless,
//! duplicate-free publication (DESIGN.md guarantee 4) and the gRPC event API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use async_nats::jetstream::{self, consumer::pull};
use cairn_domain::{AggregateId, AggregateType, EventDraft, EventId, EventType, InstanceId, Position};
use cairn_eventstore::{CommitListener, EventFilter, EventStore, ExpectedSequence, PgEventStore, Push};
use cairn_eventstore_service::metrics::RelayMetrics;
use cairn_eventstore_service::relay::{HEADER_OFFSET, HEADER_POSITION, Relay, RelayConfig, RelayError};
use cairn_proto::eventstore::v1 as pb;
use cairn_testkit::{TestDb, eventually};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

struct Fixture {
    db: TestDb,
    store: PgEventStore,
    js: jetstream::Context,
    stream: String,
    prefix: String,
    shutdown: CancellationToken,
    commits: CommitListener,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(async_nats::connect(cairn_testkit::nats_url()).await.unwrap()).await
    }

    /// A fixture whose own reads of the stream go through `client` (the shared server or a
    /// [`PrivateNats`]).
    async fn on(client: async_nats::Client) -> Self {
        let db = TestDb::new(24).await.unwrap();
        let store = PgEventStore::new(db.pool.clone());
        let js = jetstream::new(client);
        let (stream, prefix) = cairn_testkit::unique_stream();
        let shutdown = CancellationToken::new();
        let commits = CommitListener::start(db.pool.clone(), shutdown.clone());
        Self {
            db,
            store,
            js,
            stream,
            prefix,
            shutdown,
            commits,
        }
    }

    fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            stream_name: self.stream.clone(),
            subject_prefix: self.prefix.clone(),
            max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(1),
            batch: 1000,
            fallback_poll: Duration::from_millis(500),
            abort_after_publishes: None,
        }
    }

    fn relay(&self, config: RelayConfig, js: jetstream::Context) -> (Relay, RelayMetrics) {
        let metrics = RelayMetrics::default();
        (
            Relay::new(
                self.store.clone(),
                js,
                config,
                self.commits.subscribe(),
                metrics.clone(),
            ),
            metrics,
        )
    }

    /// Pushes `n` single-event pushes from `writers` concurrent writers; returns the events' ids.
    async fn write(&self, writers: usize, per_writer: usize) -> Vec<EventId> {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let store = self.store.clone();
            tasks.spawn(async move {
                let instance = InstanceId::new();
                let mut ids = Vec::new();
                for i in 0..per_writer {
                    let event = EventDraft::new(
                        EventType::parse("user.human.added").unwrap(),
                        serde_json::json!({ "writer": w, "i": i }),
                        "system",
                        AggregateId::new(),
                    );
                    let stored = store
                        .push(Push::single(
                            instance,
                            AggregateType::parse("user").unwrap(),
                            AggregateId::new(),
                            ExpectedSequence::Exact(0),
                            vec![event],
                        ))
                        .await
                        .unwrap();
                    ids.push(stored[0].id);
                }
                ids
            });
        }
        let mut ids = Vec::new();
        while let Some(written) = tasks.join_next().await {
            ids.extend(written.unwrap());
        }
        ids
    }

    /// The table's events in global order.
    async fn table(&self) -> Vec<(EventId, Position)> {
        let mut out = Vec::new();
        let mut after = Position::ZERO;
        loop {
            let page = self.store.filter(&EventFilter::after(after, 5000)).await.unwrap();
            let Some(last) = page.last() else { return out };
            after = last.position;
            out.extend(page.iter().map(|e| (e.id, e.position)));
        }
    }

    async fn stream_count(&self) -> u64 {
        match self.js.get_stream(&self.stream).await {
            Ok(mut stream) => stream.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }

    /// Waits until the stream holds `expected` messages, then reads them all in stream order.
    async fn stream_events(&self, expected: usize) -> Vec<(EventId, Position)> {
        if let Err(error) = eventually(
            &format!("the stream to hold {expected} messages"),
            DEADLINE,
            || async { Ok((self.stream_count().await >= expected as u64).then_some(())) },
        )
        .await
        {
            panic!("{error}; it holds {}", self.stream_count().await);
        }
        let stream = self.js.get_stream(&self.stream).await.unwrap();
        let consumer = stream
            .create_consumer(pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            let message = tokio::time::timeout(DEADLINE, messages.next())
                .await
                .expect("reading the stream timed out")
                .expect("the stream ended")
                .unwrap();
            let headers = message.headers.as_ref().unwrap();
            let id: EventId = headers.get("Nats-Msg-Id").unwrap().as_str().parse().unwrap();
            let position = Position::new(
                headers.get(HEADER_POSITION).unwrap().as_str().parse().unwrap(),
                headers.get(HEADER_OFFSET).unwrap().as_str().parse().unwrap(),
            );
            let body: cairn_domain::StoredEvent = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(
                (body.id, body.position),
                (id, position),
                "headers agree with the body"
            );
            out.push((id, position));
        }
        assert_eq!(
            self.stream_count().await,
            expected as u64,
            "the stream holds nothing more"
        );
        out
    }

    async fn finish(self) {
        self.shutdown.cancel();
        let _ = self.js.delete_stream(&self.stream).await;
        self.db.drop_db().await.unwrap();
    }
}

fn assert_once_in_order(stream: &[(EventId, Position)], table: &[(EventId, Position)], written: &[EventId]) {
    let unique: HashSet<_> = stream.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), stream.len(), "an event was published twice");
    assert_eq!(
        unique,
        written.iter().copied().collect::<HashSet<_>>(),
        "every written event was published"
    );
    assert!(
        stream.windows(2).all(|w| w[0].1 < w[1].1),
        "the stream is in position order"
    );
    assert_eq!(stream, table, "the stream equals the table, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_reach_the_stream_once_in_position_order() {
    let fx = Fixture::new().await;
    let (relay, metrics) = fx.relay(fx.relay_config(), fx.js.clone());
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));
    let written = fx.write(16, 1250).await;
    assert_eq!(written.len(), 20_000);
    let stream = fx.stream_events(written.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &written);
    assert_eq!(metrics.published.get(), 20_000);
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_batch_loses_and_duplicates_nothing() {
    let fx = Fixture::new().await;
    let written = fx.write(4, 1000).await;
    // The first relay publishes 1,000 (one batch, cursor advanced), then 500 of the next batch, and
    // dies before recording them.
    let mut config = fx.relay_config();
    config.abort_after_publishes = Some(1500);
    let (relay, _) = fx.relay(config, fx.js.clone());
    match relay.run(fx.shutdown.clone()).await {
        Err(RelayError::Aborted(1500)) => {}
        other => panic!("expected the hook to abort after 1500 publishes, got {other:?}"),
    }
    assert_eq!(fx.stream_count().await, 1500);
    let cursor: i64 = sqlx::query_scalar("SELECT position FROM eventstore.relay_cursors WHERE stream = $1")
        .bind(&fx.stream)
        .fetch_one(&fx.db.pool)
        .await
        .unwrap();
    let table = fx.table().await;
    assert_eq!(
        cursor, table[999].1.position,
        "the cursor stayed behind the unrecorded publishes"
    );
    assert_eq!(
        fx.recorded_stream_sequence().await,
        1000,
        "the recorded stream sequence is the cursor's"
    );

    // Its lease expires; a new relay takes over and resumes without a duplicate or a gap.
    let (relay, _) = fx.relay(fx.relay_config(), fx.js.clone());
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));
    let stream = fx.stream_events(written.len()).await;
    assert_once_in_order(&stream, &table, &written);
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_while_nats_is_unreachable_and_the_stream_catches_up() {
    let fx = Fixture::new().await;
    // A relay pointed at a port where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://{closed}"))
        .await
        .unwrap();
    let dead_js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(dead_client);
    let blind_shutdown = CancellationToken::new();
    let (relay, metrics) = fx.relay(fx.relay_config(), dead_js);
    let blind = tokio::spawn(relay.run(blind_shutdown.clone()));

    let written = fx.write(8, 250).await;
    assert_eq!(written.len(), 2000, "every write succeeded without NATS");
    eventually("the blind relay to report a publish error", DEADLINE, || async {
        Ok((metrics.publish_errors.get() > 0).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(fx.stream_count().await, 0);
    blind_shutdown.cancel();
    blind.await.unwrap().unwrap();

    // Pointed at the real server, the relay publishes everything.
    let (relay, _) = fx.relay(fx.relay_config(), fx.js.clone());
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));
    let more = fx.write(2, 100).await;
    let all: Vec<EventId> = written.into_iter().chain(more).collect();
    let stream = fx.stream_events(all.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &all);
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_one_publishes_and_the_other_takes_over() {
    let fx = Fixture::new().await;
    let (a, a_metrics) = fx.relay(fx.relay_config(), fx.js.clone());
    let (b, b_metrics) = fx.relay(fx.relay_config(), fx.js.clone());
    let a_task = tokio::spawn(a.run(fx.shutdown.clone()));
    let b_task = tokio::spawn(b.run(fx.shutdown.clone()));
    let first = fx.write(4, 250).await;
    fx.stream_events(first.len()).await;
    let leaders = (a_metrics.leader.get(), b_metrics.leader.get());
    assert!(
        leaders == (1, 0) || leaders == (0, 1),
        "exactly one leader, got {leaders:?}"
    );
    assert_eq!(
        a_metrics.published.get() + b_metrics.published.get(),
        1000,
        "only the leader published, each event once"
    );
    let (leader_task, standby_metrics, standby_task) = if leaders.0 == 1 {
        (a_task, b_metrics, b_task)
    } else {
        (b_task, a_metrics, a_task)
    };

    // The leader dies without releasing its lease; the standby takes over once it expires.
    leader_task.abort();
    let second = fx.write(4, 250).await;
    eventually("the standby to take the lease", DEADLINE, || async {
        Ok((standby_metrics.leader.get() == 1).then_some(()))
    })
    .await
    .unwrap();
    let all: Vec<EventId> = first.into_iter().chain(second).collect();
    let stream = fx.stream_events(all.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &all);
    fx.shutdown.cancel();
    standby_task.await.unwrap().unwrap();
    fx.finish().await;
}

async fn start_service(fx: &Fixture) -> cairn_eventstore_service::Service {
    let config = cairn_eventstore_service::Config {
        database_url: fx.db.url.clone(),
        nats_url: cairn_testkit::nats_url(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        service_token: "test-token-0123456789abcdef0123456789".into(),
        stream_name: fx.stream.clone(),
        subject_prefix: fx.prefix.clone(),
        stream_max_age_hours: 1,
        duplicate_window_secs: 120,
        relay_lease_ttl_secs: 1,
        relay_batch: 1000,
        relay_poll_ms: 500,
    };
    cairn_eventstore_service::start(config, fx.shutdown.clone())
        .await
        .unwrap()
}

fn authed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        "Bearer test-token-0123456789abcdef0123456789".parse().unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_from_zero_delivers_every_event_once_across_the_switch_to_live() {
    let fx = Fixture::new().await;
    let service = start_service(&fx).await;
    let before = fx.write(4, 500).await;
    let mut client = pb::event_store_service_client::EventStoreServiceClient::connect(format!(
        "http://{}",
        service.grpc_addr
    ))
    .await
    .unwrap();
    let mut subscription = client
        .subscribe_events(authed(pb::SubscribeEventsRequest { filter: None }))
        .await
        .unwrap()
        .into_inner();
    // Writes continue while the subscriber catches up and goes live.
    let writer = {
        let store = fx.store.clone();
        tokio::spawn(async move {
            let fx_store = store;
            let mut ids = Vec::new();
            for i in 0..2000 {
                let stored = fx_store
                    .push(Push::single(
                        InstanceId::new(),
                        AggregateType::parse("user").unwrap(),
                        AggregateId::new(),
                        ExpectedSequence::Exact(0),
                        vec![EventDraft::new(
                            EventType::parse("user.human.added").unwrap(),
                            serde_json::json!({ "i": i }),
                            "system",
                            AggregateId::new(),
                        )],
                    ))
                    .await
                    .unwrap();
                ids.push(stored[0].id);
            }
            ids
        })
    };
    let during = writer.await.unwrap();
    let total = before.len() + during.len();
    let mut received = Vec::with_capacity(total);
    while received.len() < total {
        let event = tokio::time::timeout(DEADLINE, subscription.message())
            .await
            .expect("the subscription stalled")
            .unwrap()
            .expect("the subscription ended");
        let position = event.position.unwrap();
        received.push((
            event.id.parse::<EventId>().unwrap(),
            Position::new(position.position, position.offset),
        ));
    }
    let written: Vec<EventId> = before.into_iter().chain(during).collect();
    assert_once_in_order(&received, &fx.table().await, &written);

    // The other calls, and authentication.
    let head = client
        .get_head_position(authed(pb::GetHeadPositionRequest {
            instance_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    assert_eq!(
        Position::new(head.position, head.offset),
        received.last().unwrap().1
    );
    let page = client
        .list_events(authed(pb::ListEventsRequest {
            filter: None,
            up_to: None,
            limit: 10,
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(page.len(), 10);
    assert_eq!(page[0].id, received[0].0.to_string());
    let denied = client
        .get_head_position(pb::GetHeadPositionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::GetHeadPositionRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.get_head_position(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let bad = client
        .list_events(authed(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                event_types: vec!["Not.Valid".into()],
                ..Default::default()
            }),
            up_to: None,
            limit: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // Operations endpoints.
    let (status, _) = cairn_testkit::http_get(service.http_addr, "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = cairn_testkit::http_get(service.http_addr, "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = cairn_testkit::http_get(service.http_addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    for name in [
        "cairn_relay_published_total",
        "cairn_relay_lag_events",
        "cairn_relay_lag_milliseconds",
        "cairn_relay_cursor_position",
        "cairn_relay_publish_errors_total",
        "cairn_relay_stream_sequence",
        "cairn_relay_stream_regressions_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // The service's relay published everything too.
    fx.stream_events(total).await;

    fx.shutdown.cancel();
    service.wait().await.unwrap();
    fx.finish().await;
}

/// A nats-server process that one test owns: its own port and store directory, so the test can
/// stop it and start it again on the same store without touching the machine's shared server.
/// The binary is `CAIRN_TEST_NATS_SERVER`, else `nats-server` on the `PATH`, else
/// `/usr/sbin/nats-server`. The process is killed and its directory removed on drop.
struct PrivateNats {
    binary: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
    /// A configuration file (accounts, permissions) instead of plain `-js`, if given.
    config: Option<String>,
    child: Option<tokio::process::Child>,
}

impl PrivateNats {
    async fn start(config: Option<&str>) -> Self {
        let binary = std::env::var_os("CAIRN_TEST_NATS_SERVER")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|dir| dir.join("nats-server"))
                    .find(|path| path.is_file())
            })
            .unwrap_or_else(|| "/usr/sbin/nats-server".into());
        assert!(binary.is_file(), "no nats-server binary at {}", binary.display());
        let dir = std::env::temp_dir().join(format!("cairn-test-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Self {
            binary,
            dir,
            port,
            config: config.map(str::to_owned),
            child: None,
        };
        nats.start_again().await;
        nats
    }

    fn store(&self) -> std::path::PathBuf {
        self.dir.join("store")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client of this server (user and password if the configuration has accounts). It
    /// reconnects by itself across restarts, as the service's client does.
    async fn client(&self, user: Option<(&str, &str)>) -> async_nats::Client {
        let options = match user {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            }
            None => async_nats::ConnectOptions::new(),
        };
        options.connect(self.url()).await.unwrap()
    }

    /// A JetStream context with a short request timeout, as the service builds it.
    async fn jetstream(&self, user: Option<(&str, &str)>) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(1))
            .build(self.client(user).await)
    }

    /// Starts the server (again) on the same port and store, and waits until it answers
    /// JetStream requests.
    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private nats-server is already running");
        let mut command = tokio::process::Command::new(&self.binary);
        command.kill_on_drop(true);
        command.arg("-l").arg(self.dir.join("nats.log"));
        match &self.config {
            Some(config) => {
                let text = config
                    .replace("{PORT}", &self.port.to_string())
                    .replace("{STORE}", &self.store().display().to_string());
                let path = self.dir.join("nats.conf");
                std::fs::write(&path, text).unwrap();
                command.arg("-c").arg(path);
            }
            None => {
                command
                    .args(["-js", "-a", "127.0.0.1", "-p"])
                    .arg(self.port.to_string())
                    .arg("-sd")
                    .arg(self.store());
            }
        }
        self.child = Some(command.spawn().unwrap());
        let url = self.url();
        let admin = self.config.is_some();
        eventually("the private nats-server to serve JetStream", DEADLINE, || {
            let url = url.clone();
            async move {
                let options = if admin {
                    async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into())
                } else {
                    async_nats::ConnectOptions::new()
                };
                let Ok(client) = options.connect(url).await else {
                    return Ok(None);
                };
                // The account-info request (answered once JetStream is up); read as plain JSON,
                // since the client's typed answer expects fields older servers do not send.
                let ready = match client.request("$JS.API.INFO", "".into()).await {
                    Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
                        .is_ok_and(|info| info.get("error").is_none()),
                    Err(_) => false,
                };
                let _ = client.drain().await;
                Ok(ready.then_some(()))
            }
        })
        .await
        .unwrap();
    }

    /// Stops the server the way an operator does (SIGTERM) and waits until the process is gone.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("the private nats-server is not running");
        let pid = child.id().expect("the private nats-server already exited");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("the private nats-server did not stop")
            .unwrap();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The duplicate window of the stream in the private-server tests: short, so that a quiet period
/// longer than it fits in a test. (The service's configuration insists on at least 120 s; the
/// relay itself takes what it is given.)
const SHORT_WINDOW: Duration = Duration::from_secs(2);

impl Fixture {
    fn short_window_config(&self) -> RelayConfig {
        RelayConfig {
            duplicate_window: SHORT_WINDOW,
            ..self.relay_config()
        }
    }

    /// The durable cursor's transaction position (0 before the relay's first lease).
    async fn cursor_position(&self) -> i64 {
        sqlx::query_scalar("SELECT position FROM eventstore.relay_cursors WHERE stream = $1")
            .bind(&self.stream)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// The stream sequence recorded beside the durable cursor.
    async fn recorded_stream_sequence(&self) -> u64 {
        let sequence: i64 =
            sqlx::query_scalar("SELECT stream_sequence FROM eventstore.relay_cursors WHERE stream = $1")
                .bind(&self.stream)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        sequence as u64
    }

    /// Waits until the durable cursor has reached the table's last event.
    async fn cursor_at_head(&self) {
        let head = self.table().await.last().map_or(0, |(_, p)| p.position);
        eventually("the relay's cursor to reach the head", DEADLINE, || async {
            Ok((self.cursor_position().await >= head).then_some(()))
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publication_resumes_after_a_nats_restart_that_follows_a_quiet_period_longer_than_the_duplicate_window()
 {
    let mut nats = PrivateNats::start(None).await;
    let fx = Fixture::on(nats.client(None).await).await;
    let (relay, metrics) = fx.relay(fx.short_window_config(), nats.jetstream(None).await);
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));

    let first = fx.write(2, 5).await;
    fx.stream_events(first.len()).await;
    fx.cursor_at_head().await;

    // The scenario itself, not a synchronisation: nothing is written for longer than the
    // duplicate window, so that on restart JetStream no longer remembers the last message's id.
    tokio::time::sleep(SHORT_WINDOW * 2).await;
    nats.stop().await;
    nats.start_again().await;

    let second = fx.write(2, 5).await;
    let all: Vec<EventId> = first.into_iter().chain(second).collect();
    let stream = fx.stream_events(all.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &all);
    fx.cursor_at_head().await;
    assert_eq!(
        fx.recorded_stream_sequence().await,
        all.len() as u64,
        "the cursor records the stream sequence of its last event"
    );
    assert_eq!(
        metrics.stream_regressions.get(),
        0,
        "a restart is not a regression"
    );
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_lost_acknowledged_messages_gets_the_lost_tail_published_again() {
    let mut nats = PrivateNats::start(None).await;
    let fx = Fixture::on(nats.client(None).await).await;
    let (relay, metrics) = fx.relay(fx.short_window_config(), nats.jetstream(None).await);
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));

    let first = fx.write(2, 100).await;
    fx.stream_events(first.len()).await;
    fx.cursor_at_head().await;
    // A copy of the store as it is now stands for what a host crash leaves on disk: JetStream
    // acknowledges before it fsyncs, so the messages published after this point are the
    // acknowledged tail such a crash loses.
    nats.stop().await;
    let snapshot = nats.dir.join("snapshot");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(nats.store())
        .arg(&snapshot)
        .status()
        .unwrap();
    assert!(copied.success());
    nats.start_again().await;

    let second = fx.write(2, 150).await;
    fx.stream_events(first.len() + second.len()).await;
    fx.cursor_at_head().await;

    nats.stop().await;
    std::fs::remove_dir_all(nats.store()).unwrap();
    std::fs::rename(&snapshot, nats.store()).unwrap();
    nats.start_again().await;

    let third = fx.write(2, 50).await;
    let all: Vec<EventId> = first.into_iter().chain(second).chain(third).collect();
    let stream = fx.stream_events(all.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &all);
    assert_eq!(
        metrics.stream_regressions.get(),
        1,
        "the relay noticed that the stream lost acknowledged messages"
    );
    fx.cursor_at_head().await;
    assert_eq!(fx.recorded_stream_sequence().await, all.len() as u64);
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}

/// Accounts for [`PrivateNats`]: `admin` may do everything; `relay` may do everything but read a
/// message by sequence, so every lookup of the stream's last message fails (with a permissions
/// violation, which the client sees as a request timeout) while publishing still works.
const NO_MESSAGE_GET: &str = r#"
listen: 127.0.0.1:{PORT}
jetstream { store_dir: "{STORE}" }
accounts {
  CAIRN {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: relay, password: relay, permissions: { publish: { allow: [">"], deny: ["$JS.API.STREAM.MSG.GET.>"] } } }
    ]
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_cannot_look_up_the_streams_last_message_publishes_nothing_rather_than_duplicates() {
    let nats = PrivateNats::start(Some(NO_MESSAGE_GET)).await;
    let admin = Some(("admin", "admin"));
    let fx = Fixture::on(nats.client(admin).await).await;
    let written = fx.write(4, 500).await;

    // A relay publishes 1,500 events and dies having recorded only the first 1,000.
    let mut config = fx.short_window_config();
    config.abort_after_publishes = Some(1500);
    let (relay, _) = fx.relay(config, nats.jetstream(admin).await);
    match relay.run(fx.shutdown.clone()).await {
        Err(RelayError::Aborted(1500)) => {}
        other => panic!("expected the hook to abort after 1500 publishes, got {other:?}"),
    }
    assert_eq!(fx.stream_count().await, 1500);
    // The scenario, not a synchronisation: the unrecorded publishes age out of the duplicate
    // window, so JetStream would store a second copy of each.
    tokio::time::sleep(SHORT_WINDOW * 2).await;

    // The next relay cannot read the stream's last message. It must not guess where the stream
    // ends: it reports the failure and publishes nothing.
    let blind_shutdown = CancellationToken::new();
    // (Its lease outlives a few timed-out requests, as the service's default of 5 s does.)
    let config = RelayConfig {
        lease_ttl: Duration::from_secs(5),
        ..fx.short_window_config()
    };
    let (relay, metrics) = fx.relay(config, nats.jetstream(Some(("relay", "relay"))).await);
    let blind = tokio::spawn(relay.run(blind_shutdown.clone()));
    eventually(
        "the relay to fail its reconciliation twice, or to publish",
        DEADLINE,
        || async { Ok((metrics.publish_errors.get() >= 2 || fx.stream_count().await > 1500).then_some(())) },
    )
    .await
    .unwrap();
    assert_eq!(
        fx.stream_count().await,
        1500,
        "a relay that could not tell where the stream ends published anyway"
    );
    blind_shutdown.cancel();
    blind.await.unwrap().unwrap();

    // Once the lookup works, publication resumes where the stream really ends.
    let (relay, _) = fx.relay(fx.short_window_config(), nats.jetstream(admin).await);
    let running = tokio::spawn(relay.run(fx.shutdown.clone()));
    let stream = fx.stream_events(written.len()).await;
    assert_once_in_order(&stream, &fx.table().await, &written);
    fx.shutdown.cancel();
    running.await.unwrap().unwrap();
    fx.finish().await;
}
