//! The actions service end to end: the whole stack in-process on a fresh database and real NATS,
//! the `actions` service started by each test, and a real HTTP receiver (`receiver.py`) that
//! verifies every signature with the `standardwebhooks` package. DESIGN.md guarantee 13.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_domain::{Clock, FixedClock, SystemClock};
use cairn_proto::action::v1 as pb;
use cairn_proto::action::v1::action_service_client::ActionServiceClient;
use cairn_proto::user::v1 as user;
use cairn_stack::with_token;
use cairn_testkit::eventually;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The receiver

fn python() -> String {
    if let Ok(python) = std::env::var("CAIRN_TEST_PYTHON") {
        return python;
    }
    let venv = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cairn/venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Receiver {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Receiver {
    fn new(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("cairn-receiver-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            port,
            dir,
            child: None,
        }
    }

    async fn started() -> Self {
        let mut receiver = Self::new(free_port());
        receiver.start().await;
        receiver
    }

    async fn start(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("ready"));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/receiver.py");
        let child = Command::new(python())
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the receiver (python with standardwebhooks: scripts/test installs it)");
        self.child = Some(child);
        let ready = self.dir.join("ready");
        eventually("the receiver to listen", Duration::from_secs(15), || {
            let ready = ready.clone();
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("the receiver exited with {status}: is standardwebhooks installed?");
                }
                Ok(ready.exists().then_some(()))
            }
        })
        .await
        .unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn write(&self, name: &str, value: &Value) {
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(value).unwrap()).unwrap();
        std::fs::rename(tmp, self.dir.join(name)).unwrap();
    }

    fn secrets(&self, secrets: &[(&str, Vec<String>)]) {
        let map: serde_json::Map<String, Value> =
            secrets.iter().map(|(p, s)| ((*p).to_owned(), json!(s))).collect();
        self.write("secrets.json", &Value::Object(map));
    }

    fn modes(&self, modes: Value) {
        self.write("modes.json", &modes);
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The stack and the service

struct Harness {
    stack: cairn_stack::Stack,
    token: String,
    clock: Arc<dyn Clock>,
}

struct Running {
    grpc_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// As a crash: the tasks are aborted, claims and leases stay until they expire.
    fn kill(self) {
        self.task.abort();
    }
}

impl Harness {
    async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::start_with_options(cairn_stack::Options::default().clock(clock)).await
    }

    async fn start_with_options(options: cairn_stack::Options) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            // `RUST_LOG=cairn_actions=debug cargo test ...` shows what the service did.
            std::mem::forget(cairn_telemetry::logging::init_with("actions-test", None));
        }
        let clock = options.get_clock();
        let stack = cairn_stack::Stack::start_with(options).await.unwrap();
        let token = stack.admin.token.to_string();
        Self { stack, token, clock }
    }

    fn config(&self) -> cairn_actions::Config {
        let mut config = cairn_actions::Config::for_tests(&self.stack.db.url, self.stack.keys());
        config.nats_url = cairn_testkit::nats_url();
        config.stream_name = self.stack.stream().to_owned();
        config.subject_prefix = self.stack.prefix().to_owned();
        config.lease_ttl_secs = 2;
        config.poll_ms = 100;
        // The Svix schedule a thousand times faster: 5 ms, 300 ms, 1.8 s, 7.2 s, ...
        config.retry_scale = 0.001;
        config.failure_period_secs = 3600;
        config
    }

    async fn actions(&self, config: cairn_actions::Config) -> Running {
        let shutdown = CancellationToken::new();
        let service = cairn_actions::start_with(config, shutdown.clone(), self.clock.clone())
            .await
            .unwrap();
        Running {
            grpc_addr: service.grpc_addr,
            shutdown,
            task: tokio::spawn(service.wait()),
        }
    }

    async fn client(&self, running: &Running) -> ActionServiceClient<Channel> {
        ActionServiceClient::connect(format!("http://{}", running.grpc_addr))
            .await
            .unwrap()
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, &self.token)
    }

    async fn create_target(
        &self,
        client: &mut ActionServiceClient<Channel>,
        name: &str,
        endpoint: &str,
        strict: bool,
    ) -> (String, String) {
        let settings = pb::TargetSettings {
            name: name.into(),
            endpoint: endpoint.into(),
            kind: pb::TargetKind::Webhook as i32,
            timeout_ms: 2000,
            interrupt_on_error: false,
            strict_order: strict,
        };
        self.create_target_with(client, settings).await
    }

    async fn create_target_with(
        &self,
        client: &mut ActionServiceClient<Channel>,
        settings: pb::TargetSettings,
    ) -> (String, String) {
        let created = client
            .create_target(self.req(pb::CreateTargetRequest {
                settings: Some(settings),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(created.signing_secret.starts_with("whsec_"));
        (created.id, created.signing_secret)
    }

    /// Sets an execution; the position of its event.
    async fn set_execution(
        &self,
        client: &mut ActionServiceClient<Channel>,
        condition: &str,
        targets: &[&str],
    ) -> String {
        client
            .set_execution(self.req(pb::SetExecutionRequest {
                condition: condition.into(),
                target_ids: targets.iter().map(|t| (*t).to_owned()).collect(),
            }))
            .await
            .unwrap()
            .into_inner()
            .position
    }

    async fn add_user(&self, name: &str) -> String {
        self.try_add_user(name).await.unwrap()
    }

    async fn try_add_user(&self, name: &str) -> Result<String, tonic::Status> {
        let request = user::AddHumanUserRequest {
            user_name: name.into(),
            profile: Some(user::HumanProfile {
                name: Some(user::Name {
                    given_name: "Ada".into(),
                    family_name: "Lovelace".into(),
                    ..Default::default()
                }),
                display_name: format!("Ada {name}"),
                emails: vec![user::Email {
                    value: format!("{name}@example.test"),
                    r#type: "work".into(),
                    primary: true,
                    verified: false,
                    display: String::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        self.stack
            .users()
            .add_human_user(self.req(request))
            .await
            .map(|r| r.into_inner().user.unwrap().id)
    }

    /// Renames a user, retrying ABORTED (a concurrent change to the same user) as its error
    /// says to: the writers share aggregates on purpose.
    async fn rename(&self, id: &str, name: &str) {
        loop {
            let result = self
                .stack
                .users()
                .change_user_name(self.req(user::ChangeUserNameRequest {
                    user_id: id.into(),
                    user_name: name.into(),
                    expected_sequence: 0,
                }))
                .await;
            match result {
                Ok(_) => return,
                Err(status) if status.code() == tonic::Code::Aborted => continue,
                Err(status) => panic!("renaming {id} to {name}: {status:?}"),
            }
        }
    }

    /// The instance's events of the given types (prefixes) after `after`, from the event store
    /// itself.
    async fn events(&self, prefixes: &[&str], after: &str) -> Vec<(String, String, String, i64)> {
        let after: cairn_domain::Position = after.parse().unwrap();
        let rows: Vec<(uuid::Uuid, String, uuid::Uuid, i64)> = sqlx::query_as(
            "SELECT id, event_type, aggregate_id, sequence FROM eventstore.events WHERE instance_id = $1 \
               AND (position, in_tx_order) > ($2, $3) ORDER BY position, in_tx_order",
        )
        .bind(self.stack.admin.instance_id.as_uuid())
        .bind(after.position)
        .bind(after.offset)
        .fetch_all(&self.stack.db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .filter(|(_, t, _, _)| prefixes.iter().any(|p| t.starts_with(p)))
            .map(|(id, t, a, s)| (id.to_string(), t, a.to_string(), s))
            .collect()
    }

    async fn delivery_states(&self, target: &str) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM actions.deliveries WHERE target_id = $1::uuid GROUP BY state",
        )
        .bind(target)
        .fetch_all(&self.stack.db.pool)
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    /// Waits until `target` has `n` deliveries, all delivered.
    async fn wait_delivered(&self, target: &str, n: i64) {
        eventually(&format!("{n} deliveries to {target} delivered"), WAIT, || async {
            let states = self.delivery_states(target).await;
            Ok((states.get("delivered") == Some(&n) && states.values().sum::<i64>() == n).then_some(()))
        })
        .await
        .unwrap();
    }
}

/// Accepted requests (status 200) of `path`, checked: every signature verifies with every listed
/// secret.
fn accepted(receiver: &Receiver, path: &str) -> Vec<Value> {
    let requests = receiver.requests_to(path);
    for r in &requests {
        let verified = r["verified"].as_array().unwrap();
        assert!(!verified.is_empty(), "no secret to verify with: {r}");
        assert!(
            verified.iter().all(|v| v == true),
            "a signature did not verify: {r}"
        );
    }
    requests.into_iter().filter(|r| r["status"] == 200).collect()
}

/// Per aggregate, the sequences in the order they were accepted must increase.
fn assert_in_order_per_aggregate(requests: &[Value]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    for r in requests {
        let id = r["id"].as_str().unwrap().to_owned();
        if !seen.insert(id) {
            continue; // a repeat of a delivered event (same webhook-id)
        }
        let aggregate = r["aggregateId"].as_str().unwrap().to_owned();
        let sequence = r["sequence"].as_i64().unwrap();
        if let Some(previous) = last.insert(aggregate.clone(), sequence) {
            assert!(
                previous < sequence,
                "aggregate {aggregate}: sequence {sequence} after {previous}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_matching_event_reaches_each_target_once_signed_and_in_order_per_aggregate_through_retries() {
    let seed: u64 = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (CAIRN_TEST_SEED={seed} replays this run)");
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;

    let (users_target, users_secret) = h
        .create_target(&mut client, "users", &receiver.url("/users"), false)
        .await;
    let (all_target, all_secret) = h
        .create_target(&mut client, "all", &receiver.url("/all"), false)
        .await;
    let (strict_target, strict_secret) = h
        .create_target(&mut client, "strict", &receiver.url("/strict"), true)
        .await;
    receiver.secrets(&[
        ("/users", vec![users_secret]),
        ("/all", vec![all_secret]),
        ("/strict", vec![strict_secret]),
    ]);
    // A third of the events fail their first attempt at /users with a 500 and are tried again.
    receiver.modes(json!({"/users": {"status": 500, "every": 3, "first": 1}}));
    let from = h
        .set_execution(&mut client, "event:user.*", &[&users_target, &strict_target])
        .await;
    h.set_execution(&mut client, "event:*", &[&all_target]).await;
    // The most specific condition wins: user events go to /users and /strict, not to /all.
    h.set_execution(
        &mut client,
        "event:user.human.added",
        &[&users_target, &all_target, &strict_target],
    )
    .await;

    // Writers share a few users: concurrent renames of the same aggregates.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(h.add_user(&format!("shared{i}")).await);
    }
    let h = Arc::new(h);
    let mut writers = Vec::new();
    for w in 0..6_u64 {
        let h = h.clone();
        let ids = ids.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(w));
            for n in 0..12 {
                let id = &ids[rng.random_range(0..ids.len())];
                h.rename(id, &format!("w{w}n{n}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let user_events = h.events(&["user."], &from).await;
    let added = user_events.iter().filter(|e| e.1 == "user.human.added").count() as i64;
    h.wait_delivered(&users_target, user_events.len() as i64).await;
    h.wait_delivered(&strict_target, user_events.len() as i64).await;
    // /all: every event after its execution was set that is not a user event, plus user.human.added.
    let to_all: i64 =
        sqlx::query_scalar("SELECT count(*) FROM actions.deliveries WHERE target_id = $1::uuid")
            .bind(&all_target)
            .fetch_one(&h.stack.db.pool)
            .await
            .unwrap();
    assert!(to_all >= added, "user.human.added goes to /all too");
    h.wait_delivered(&all_target, to_all).await;

    // Once per (event, target), each webhook-id an event id, every signature valid.
    for (path, expected) in [("/users", &user_events), ("/strict", &user_events)] {
        let got = accepted(&receiver, path);
        let ids: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{path}: an event was accepted twice");
        let wanted: HashSet<&str> = expected.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            unique, wanted,
            "{path}: the accepted webhook-ids are the user events"
        );
        assert_in_order_per_aggregate(&got);
    }
    let retried = receiver
        .requests_to("/users")
        .iter()
        .filter(|r| r["status"] == 500)
        .count();
    assert!(
        retried > 0,
        "some deliveries were refused once and retried (seed {seed})"
    );
    // The strict target got every event in global order.
    let strict: Vec<String> = accepted(&receiver, "/strict")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let global: Vec<String> = user_events.iter().map(|e| e.0.clone()).collect();
    assert_eq!(
        strict, global,
        "a strict-order target gets the events in position order"
    );
    // /all got user.human.added (most specific) but no other user event.
    let all = accepted(&receiver, "/all");
    assert!(all.iter().all(|r| {
        let t = r["type"].as_str().unwrap();
        !t.starts_with("user.") || t == "user.human.added"
    }));
    assert_eq!(
        all.iter().filter(|r| r["type"] == "user.human.added").count() as i64,
        added
    );
    // The payload carries the event and its personal data opened.
    let first = accepted(&receiver, "/users")
        .into_iter()
        .find(|r| r["type"] == "user.human.added")
        .unwrap();
    assert!(first["payload"].to_string().contains("example.test"), "{first}");
    running.stop().await;
    Arc::try_unwrap(h).ok().unwrap().stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_connections_retry_after_and_410_are_handled_and_every_attempt_is_recorded() {
    let h = Harness::start().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let mut receiver = Receiver::new(free_port());
    let (target, secret) = h
        .create_target(&mut client, "down", &receiver.url("/down"), false)
        .await;
    receiver.secrets(&[("/down", vec![secret.clone()])]);
    h.set_execution(&mut client, "event:user.human.added", &[&target])
        .await;
    let ada = h.add_user("ada").await;

    // Nobody listens: attempts fail with a refused connection and are recorded.
    let pool = h.stack.db.pool.clone();
    eventually("two refused attempts", WAIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM actions.attempts WHERE target_id = $1::uuid")
            .bind(&target)
            .fetch_one(&pool)
            .await?;
        Ok((n >= 2).then_some(()))
    })
    .await
    .unwrap();
    let deliveries = client
        .list_deliveries(h.req(pb::ListDeliveriesRequest {
            target_id: target.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(deliveries.len(), 1);
    let event_id = deliveries[0].event_id.clone();
    let attempts = client
        .list_attempts(h.req(pb::ListAttemptsRequest {
            target_id: target.clone(),
            event_id: event_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert!(
        attempts[0].status == 0 && attempts[0].error.contains("connect"),
        "{:?}",
        attempts[0]
    );

    // It comes up answering 429 with Retry-After: 2 once, then 200.
    receiver.modes(json!({"/down": {"status": 429, "retry_after": "2", "first": 1}}));
    receiver.start().await;
    h.wait_delivered(&target, 1).await;
    let got = receiver.requests_to("/down");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0]["status"].as_i64(), got[1]["status"].as_i64()),
        (Some(429), Some(200))
    );
    assert_eq!(got[0]["id"], got[1]["id"], "the same webhook-id on every attempt");
    assert_eq!(got[0]["id"].as_str().unwrap(), event_id);
    let gap = got[1]["at"].as_f64().unwrap() - got[0]["at"].as_f64().unwrap();
    assert!(
        gap >= 1.9,
        "Retry-After: 2 was honoured (the schedule alone says 5 ms here): {gap}"
    );
    assert!(got.iter().all(|r| r["verified"] == json!([true])));
    let attempts = client
        .list_attempts(h.req(pb::ListAttemptsRequest {
            target_id: target.clone(),
            event_id: event_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    let last = attempts.last().unwrap();
    assert_eq!(last.status, 200);
    assert!(
        last.response.contains("\"status\": 200"),
        "the response body is recorded: {last:?}"
    );
    assert_eq!(attempts[attempts.len() - 2].status, 429);

    // 410 Gone disables the target; its deliveries wait, and go out once it is enabled.
    receiver.modes(json!({"/down": {"status": 410}}));
    h.rename(&ada, "ada2").await;
    h.add_user("grace").await;
    let store = h.stack.db.pool.clone();
    let disabled = eventually("the target disabled by 410", WAIT, || async {
        let target = client
            .clone()
            .get_target(h.req(pb::GetTargetRequest {
                id: target.clone(),
                min_position: String::new(),
            }))
            .await?
            .into_inner();
        Ok((target.state == pb::TargetState::Disabled as i32).then_some(target))
    })
    .await
    .unwrap();
    assert!(disabled.disabled_reason.contains("410"), "{disabled:?}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventstore.events WHERE event_type = 'action.target.disabled' AND aggregate_id = $1::uuid",
    )
    .bind(&target)
    .fetch_one(&store)
    .await
    .unwrap();
    assert_eq!(events, 1, "an action.target.disabled event is recorded");
    let before = receiver.requests_to("/down").len();
    receiver.modes(json!({}));
    client
        .enable_target(h.req(pb::TargetIdRequest { id: target.clone() }))
        .await
        .unwrap();
    h.wait_delivered(&target, 2).await;
    let after = receiver.requests_to("/down");
    assert!(after.len() > before);
    assert_eq!(after.last().unwrap()["type"], "user.human.added");
    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_failing_for_the_failure_period_is_disabled() {
    let clock = Arc::new(FixedClock::new(SystemClock.now()));
    let h = Harness::start_with_clock(clock.clone()).await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (target, _) = h
        .create_target(
            &mut client,
            "dead",
            &format!("http://127.0.0.1:{}/dead", free_port()),
            false,
        )
        .await;
    // Reads wait for the configuration (the target's creation is before it), so a read never
    // races the intake into NOT_FOUND.
    let configured = h.set_execution(&mut client, "event:user.*", &[&target]).await;
    h.add_user("ada").await;
    let get = |client: ActionServiceClient<Channel>| {
        let h = &h;
        let target = target.clone();
        let configured = configured.clone();
        async move {
            client
                .clone()
                .get_target(h.req(pb::GetTargetRequest {
                    id: target,
                    min_position: configured,
                }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let failing = eventually("the target failing", WAIT, || async {
        let t = get(client.clone()).await?;
        Ok(t.failing_since.is_some().then_some(t))
    })
    .await
    .unwrap();
    assert_eq!(
        failing.state,
        pb::TargetState::Active as i32,
        "not yet: the period has not passed"
    );
    assert!(failing.last_error.contains("connect"), "{failing:?}");
    // An hour (the configured period) later by the service's clock, the next failure disables it.
    clock.advance(chrono::Duration::seconds(3601));
    let disabled = eventually("the target disabled after the failure period", WAIT, || async {
        let t = get(client.clone()).await?;
        Ok((t.state == pb::TargetState::Disabled as i32).then_some(t))
    })
    .await
    .unwrap();
    assert!(
        disabled.disabled_reason.contains("failed for 1 hours"),
        "{disabled:?}"
    );
    assert_eq!(
        disabled.open_deliveries, 1,
        "its delivery waits, nothing is dropped"
    );
    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_signs_with_both_and_a_replay_sends_the_range_again_in_order() {
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (target, old) = h
        // Strict order, so the replay's order across aggregates is defined.
        .create_target(&mut client, "rotating", &receiver.url("/r"), true)
        .await;
    receiver.secrets(&[("/r", vec![old.clone()])]);
    h.set_execution(&mut client, "event:user.human.added", &[&target])
        .await;
    h.add_user("before").await;
    h.wait_delivered(&target, 1).await;

    let rotated = client
        .rotate_target_secret(h.req(pb::RotateTargetSecretRequest {
            id: target.clone(),
            grace_seconds: 3600,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.signing_secret, old);
    receiver.secrets(&[("/r", vec![old.clone(), rotated.signing_secret.clone()])]);
    // The rotation's event is applied before the next user's (same projection, in order).
    for name in ["after1", "after2", "after3"] {
        h.add_user(name).await;
    }
    h.wait_delivered(&target, 4).await;
    let got = accepted(&receiver, "/r");
    assert_eq!(got[0]["signatures"], 1);
    for r in &got[1..] {
        assert_eq!(
            r["signatures"], 2,
            "both secrets sign during the grace period: {r}"
        );
        assert_eq!(
            r["verified"],
            json!([true, true]),
            "each secret alone verifies: {r}"
        );
    }

    // Replay every event of the range: the target's four deliveries again, same ids, in order.
    let first = got[0]["position"].as_str().unwrap().to_owned();
    let last = got[3]["position"].as_str().unwrap().to_owned();
    let replayed = client
        .replay_deliveries(h.req(pb::ReplayDeliveriesRequest {
            target_id: target.clone(),
            from_position: first,
            to_position: last,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.deliveries, 4);
    let receiver_ref = &receiver;
    eventually("the replay received", WAIT, || async move {
        Ok((accepted(receiver_ref, "/r").len() >= 8).then_some(()))
    })
    .await
    .unwrap();
    h.wait_delivered(&target, 4).await;
    let all = accepted(&receiver, "/r");
    let ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids[..4],
        ids[4..8],
        "the replay sends the same webhook-ids in the same order"
    );
    // Both rounds are in the delivery log: the replay's attempts do not overwrite the first ones.
    let attempts = client
        .list_attempts(h.req(pb::ListAttemptsRequest {
            target_id: target.clone(),
            event_id: ids[0].to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![200, 200],
        "one attempt before and one after the replay: {attempts:?}"
    );
    let bad = client
        .replay_deliveries(h.req(pb::ReplayDeliveriesRequest {
            target_id: target.clone(),
            from_position: "9.0".into(),
            to_position: "1.0".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_event_waits_while_a_later_event_of_its_aggregate_is_on_the_wire() {
    // Two deliveries of one aggregate are never on the wire together, also when a replay reopens
    // an earlier event while a later one is being delivered (the receiver counts, per aggregate,
    // the requests still unanswered when another arrives).
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (target, secret) = h
        .create_target(&mut client, "slow", &receiver.url("/slow"), false)
        .await;
    receiver.secrets(&[("/slow", vec![secret])]);
    h.set_execution(&mut client, "event:user.*", &[&target]).await;
    let id = h.add_user("ada").await;
    h.wait_delivered(&target, 1).await;
    let first = accepted(&receiver, "/slow")[0]["position"]
        .as_str()
        .unwrap()
        .to_owned();

    receiver.modes(json!({"/slow": {"delay_ms": 1500}}));
    h.rename(&id, "ada-renamed").await;
    eventually("the rename's delivery on the wire", WAIT, || async {
        Ok((h.delivery_states(&target).await.get("delivering") == Some(&1)).then_some(()))
    })
    .await
    .unwrap();
    let replayed = client
        .replay_deliveries(h.req(pb::ReplayDeliveriesRequest {
            target_id: target.clone(),
            from_position: first.clone(),
            to_position: first.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.deliveries, 1);
    h.wait_delivered(&target, 2).await;
    let requests = accepted(&receiver, "/slow");
    assert_eq!(
        requests.len(),
        3,
        "the first event, the rename, the replay: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r["overlap"] == json!(0)),
        "two deliveries of one aggregate were on the wire together: {requests:?}"
    );
    assert_eq!(
        requests[2]["position"],
        json!(first),
        "the replay comes after the rename: {requests:?}"
    );
    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_addresses_are_refused_at_configuration_and_at_every_connection() {
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let mut strict = h.config();
    strict.allowed_hosts = vec![];
    let running = h.actions(strict.clone()).await;
    let mut client = h.client(&running).await;
    for endpoint in [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://localhost/x",
        "ftp://example.test/x",
    ] {
        let refused = client
            .create_target(h.req(pb::CreateTargetRequest {
                settings: Some(pb::TargetSettings {
                    name: "private".into(),
                    endpoint: endpoint.into(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{endpoint}: {refused:?}"
        );
        let details = tonic_types::StatusExt::get_details_bad_request(&refused).unwrap();
        assert_eq!(
            details.field_violations[0].field, "settings.endpoint",
            "{endpoint}"
        );
    }
    let targets = client
        .list_targets(h.req(pb::ListTargetsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert!(targets.is_empty(), "a refused target changes nothing");
    running.stop().await;

    // Allowed when it was configured; refused when the service connects under a stricter guard.
    let allowed = h.actions(h.config()).await;
    let mut client = h.client(&allowed).await;
    let (target, secret) = h
        .create_target(&mut client, "loopback", &receiver.url("/l"), false)
        .await;
    receiver.secrets(&[("/l", vec![secret])]);
    h.set_execution(&mut client, "event:user.*", &[&target]).await;
    allowed.stop().await;
    let running = h.actions(strict).await;
    h.add_user("ada").await;
    let pool = h.stack.db.pool.clone();
    let error: String = eventually("a refused connection recorded", WAIT, || async {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT error FROM actions.attempts WHERE target_id = $1::uuid LIMIT 1",
        )
        .bind(&target)
        .fetch_optional(&pool)
        .await?)
    })
    .await
    .unwrap();
    assert!(error.contains("loopback"), "{error}");
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the private address"
    );
    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_loses_nothing_and_repeats_only_with_the_same_webhook_id() {
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let mut config = h.config();
    // Claims of the killed replica expire quickly (the minimum is above the 60 s timeout bound:
    // the test shortens the wait by giving the target a slow answer instead).
    config.claim_ttl_secs = 61;
    let first = h.actions(config.clone()).await;
    let mut client = h.client(&first).await;
    let (target, secret) = h
        .create_target(&mut client, "crash", &receiver.url("/c"), false)
        .await;
    receiver.secrets(&[("/c", vec![secret])]);
    let from = h.set_execution(&mut client, "event:user.*", &[&target]).await;
    for i in 0..20 {
        h.add_user(&format!("u{i}")).await;
    }
    // Kill the replica while it delivers; a second replica takes over (leases after 2 s).
    let receiver_ref = &receiver;
    eventually("some deliveries made", WAIT, || async move {
        Ok((!receiver_ref.requests().is_empty()).then_some(()))
    })
    .await
    .unwrap();
    first.kill();
    for i in 20..40 {
        h.add_user(&format!("u{i}")).await;
    }
    // Claims the dead replica held are released for the test instead of waiting 61 s.
    sqlx::query(
        "UPDATE actions.deliveries SET claim_expires_at = clock_timestamp() WHERE state = 'delivering'",
    )
    .execute(&h.stack.db.pool)
    .await
    .unwrap();
    let second = h.actions(config).await;
    let users = h.events(&["user."], &from).await;
    h.wait_delivered(&target, users.len() as i64).await;
    let got = accepted(&receiver, "/c");
    let unique: HashSet<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let wanted: HashSet<&str> = users.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        unique, wanted,
        "every event delivered; repeats only with the same webhook-id"
    );
    assert_in_order_per_aggregate(&got);
    second.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_for_several_targets_reaches_each_at_the_first_attempt() {
    // Deliveries of one event to several targets are claimed together; each must get the event
    // (a claim once handed it to the first of them only, and the others failed "not found").
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let mut targets = Vec::new();
    let mut secrets = Vec::new();
    for name in ["one", "two", "three"] {
        let (id, secret) = h
            .create_target(&mut client, name, &receiver.url(&format!("/{name}")), false)
            .await;
        targets.push(id);
        secrets.push((format!("/{name}"), vec![secret]));
    }
    let secrets: Vec<(&str, Vec<String>)> = secrets.iter().map(|(p, s)| (p.as_str(), s.clone())).collect();
    receiver.secrets(&secrets);
    let ids: Vec<&str> = targets.iter().map(String::as_str).collect();
    h.set_execution(&mut client, "event:user.human.added", &ids).await;
    for n in 0..5 {
        h.add_user(&format!("shared{n}")).await;
    }
    for target in &targets {
        h.wait_delivered(target, 5).await;
    }
    let failed: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT target_id::text, status, error FROM actions.attempts WHERE status IS NULL OR status NOT BETWEEN 200 AND 299",
    )
    .fetch_all(&h.stack.db.pool)
    .await
    .unwrap();
    assert!(
        failed.is_empty(),
        "attempts failed although every target answered 200: {failed:?}"
    );
    for path in ["/one", "/two", "/three"] {
        let accepted = accepted(&receiver, path);
        assert_eq!(accepted.len(), 5, "{path}: {accepted:?}");
        assert!(
            accepted.iter().all(|r| r["attempt"] == json!(1)),
            "{path}: {accepted:?}"
        );
    }
    running.stop().await;
    h.stack.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Request conditions (command-api calls the targets before the command runs)

const ADD_HUMAN_USER: &str = "/cairn.user.v1.UserService/AddHumanUser";

fn request_target(name: &str, endpoint: String, timeout_ms: u32, interrupt: bool) -> pb::TargetSettings {
    pb::TargetSettings {
        name: name.into(),
        endpoint,
        kind: pb::TargetKind::Call as i32,
        timeout_ms,
        interrupt_on_error: interrupt,
        strict_order: false,
    }
}

fn condition_settings(
    budget_ms: u64,
    breaker_failures: u32,
) -> cairn_command_api::conditions::ConditionSettings {
    cairn_command_api::conditions::ConditionSettings {
        allowed_hosts: vec!["127.0.0.1".into()],
        conditions_budget_ms: budget_ms,
        breaker_failures,
        breaker_open_secs: 60,
    }
}

/// The `user.human.added` events in the store.
async fn users_added(h: &Harness) -> usize {
    h.events(&["user.human.added"], "0").await.len()
}

/// Adds users named `<prefix>-<n>` until one is refused (command-api learns of a new execution
/// when the intake commits it); the refusal, the name refused and how many were added before.
async fn until_refused(h: &Harness, prefix: &str) -> (tonic::Status, String, usize) {
    let mut n = 0;
    let (status, name) = eventually("a request condition refusing AddHumanUser", WAIT, || {
        n += 1;
        let name = format!("{prefix}-{n}");
        async move {
            match h.try_add_user(&name).await {
                Ok(_) => Ok(None),
                Err(status) => Ok(Some((status, name))),
            }
        }
    })
    .await
    .unwrap();
    (status, name, n - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_condition_vetoes_times_out_and_stays_within_its_budget() {
    let h = Harness::start_with_options(
        cairn_stack::Options::default().request_conditions(condition_settings(1500, 100)),
    )
    .await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (gate, gate_secret) = h
        .create_target_with(
            &mut client,
            request_target("gate", receiver.url("/gate"), 1000, true),
        )
        .await;
    let (observer, observer_secret) = h
        .create_target_with(
            &mut client,
            request_target("observer", receiver.url("/observer"), 1000, false),
        )
        .await;
    receiver.secrets(&[("/gate", vec![gate_secret]), ("/observer", vec![observer_secret])]);
    receiver.modes(json!({
        "/gate": {"status": 403, "message": "no cost centre for this user"},
        "/observer": {"status": 500},
    }));
    h.set_execution(&mut client, &format!("request:{ADD_HUMAN_USER}"), &[&gate])
        .await;
    h.set_execution(&mut client, "request:cairn.user.v1.UserService", &[&observer])
        .await;

    // A veto: FAILED_PRECONDITION with the target's message, and nothing written.
    let before = users_added(&h).await;
    let (status, refused, accepted) = until_refused(&h, "vetoed").await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("target \"gate\" refused the request (403): no cost centre for this user"),
        "{status:?}"
    );
    assert_eq!(
        users_added(&h).await,
        before + accepted,
        "the vetoed user was written"
    );
    // The target got the request, signed (verified by the receiver's own implementation), with
    // the method and the request message as JSON.
    let calls = receiver.requests_to("/gate");
    let call = calls
        .iter()
        .find(|r| r["request"]["userName"] == json!(refused))
        .unwrap_or_else(|| panic!("no call for {refused}: {calls:?}"));
    assert_eq!(call["type"], json!("request"));
    assert_eq!(call["method"], json!(ADD_HUMAN_USER));
    assert_eq!(call["verified"], json!([true]), "{call}");
    // The most specific execution only: the service-wide observer never saw AddHumanUser.
    assert!(
        receiver
            .requests_to("/observer")
            .iter()
            .all(|r| r["method"] != json!(ADD_HUMAN_USER)),
        "the observer was called for AddHumanUser"
    );

    // The target allows: the command runs.
    receiver.modes(json!({"/gate": {"status": 200}, "/observer": {"status": 500}}));
    let before = users_added(&h).await;
    let id = h.add_user("allowed").await;
    assert_eq!(users_added(&h).await, before + 1);
    assert!(
        receiver
            .requests_to("/gate")
            .iter()
            .any(|r| r["request"]["userName"] == json!("allowed"))
    );

    // A non-interrupting target that fails: logged, and the command goes on. (The observer's
    // execution may reach command-api after the gate's: every rename succeeds meanwhile, and one
    // of them is seen by the observer.)
    let mut n = 0;
    let (renamed, observed) = eventually("the observer called for ChangeUserName", WAIT, || {
        n += 1;
        let name = format!("renamed-{n}");
        let (h, receiver, id) = (&h, &receiver, &id);
        async move {
            h.rename(id, &name).await;
            let observed = receiver.requests_to("/observer");
            let seen = observed.iter().any(|r| {
                r["method"] == json!("/cairn.user.v1.UserService/ChangeUserName")
                    && r["request"]["userName"] == json!(name)
            });
            Ok(seen.then_some((name, observed)))
        }
    })
    .await
    .unwrap();
    assert!(
        observed
            .iter()
            .filter(|r| r["request"]["userName"] == json!(renamed))
            .all(|r| r["status"] == json!(500)),
        "{observed:?}"
    );

    // No answer within the target's timeout: refused, nothing written.
    receiver.modes(json!({"/gate": {"delay_ms": 1300}}));
    let before = users_added(&h).await;
    let status = h.try_add_user("slow").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("target \"gate\" did not answer within 1000 ms"),
        "{status:?}"
    );
    assert_eq!(users_added(&h).await, before);

    // The budget: a first target taking 900 ms of the 1,500 leaves the gate less than its own
    // 1,000 ms timeout, so the gate, answering in 800 ms, is cut off.
    let (first, first_secret) = h
        .create_target_with(
            &mut client,
            request_target("first", receiver.url("/first"), 1000, false),
        )
        .await;
    receiver.secrets(&[("/first", vec![first_secret])]);
    receiver.modes(json!({"/first": {"delay_ms": 900}, "/gate": {"delay_ms": 800}}));
    h.set_execution(
        &mut client,
        &format!("request:{ADD_HUMAN_USER}"),
        &[&first, &gate],
    )
    .await;
    let (status, _, _) = until_refused(&h, "budget").await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let message = status.message();
    let limit: u64 = message
        .strip_prefix("target \"gate\" did not answer within ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("{message}"))
        .parse()
        .unwrap();
    assert!(
        limit < 1000,
        "the gate got its whole timeout, not what was left of the budget: {message}"
    );

    running.stop().await;
    h.stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_request_target_opens_its_circuit_and_one_trial_closes_it() {
    let clock = Arc::new(FixedClock::new(SystemClock.now()));
    let h = Harness::start_with_options(
        cairn_stack::Options::default()
            .clock(clock.clone())
            .request_conditions(condition_settings(3000, 2)),
    )
    .await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (flaky, secret) = h
        .create_target_with(
            &mut client,
            request_target("flaky", receiver.url("/flaky"), 1000, true),
        )
        .await;
    receiver.secrets(&[("/flaky", vec![secret])]);
    receiver.modes(json!({"/flaky": {"status": 503}}));
    h.set_execution(&mut client, &format!("request:{ADD_HUMAN_USER}"), &[&flaky])
        .await;

    // The first failure (the first call after command-api learnt of the execution), the second:
    // both called the target; then the circuit is open.
    let (first, _, _) = until_refused(&h, "first").await;
    assert!(first.message().contains("refused the request (503)"), "{first:?}");
    let second = h.try_add_user("second").await.unwrap_err();
    assert!(
        second.message().contains("refused the request (503)"),
        "{second:?}"
    );
    let calls = receiver.requests_to("/flaky").len();
    for n in 0..5 {
        let open = h.try_add_user(&format!("open-{n}")).await.unwrap_err();
        assert_eq!(open.code(), tonic::Code::FailedPrecondition, "{open:?}");
        assert!(
            open.message().contains("target \"flaky\" is unavailable"),
            "{open:?}"
        );
    }
    assert_eq!(
        receiver.requests_to("/flaky").len(),
        calls,
        "an open circuit still called the target"
    );

    // After the open period one trial call goes through; it succeeds, the circuit closes.
    receiver.modes(json!({"/flaky": {"status": 200}}));
    clock.advance(chrono::Duration::seconds(61));
    let before = users_added(&h).await;
    h.add_user("trial").await;
    h.add_user("closed").await;
    assert_eq!(users_added(&h).await, before + 2);
    assert_eq!(receiver.requests_to("/flaky").len(), calls + 2);

    // A failing trial opens it again at once.
    receiver.modes(json!({"/flaky": {"status": 503}}));
    h.try_add_user("fails-1").await.unwrap_err();
    h.try_add_user("fails-2").await.unwrap_err();
    clock.advance(chrono::Duration::seconds(61));
    let calls = receiver.requests_to("/flaky").len();
    let trial = h.try_add_user("failed-trial").await.unwrap_err();
    assert!(trial.message().contains("refused the request (503)"), "{trial:?}");
    let open = h.try_add_user("open-again").await.unwrap_err();
    assert!(open.message().contains("is unavailable"), "{open:?}");
    assert_eq!(receiver.requests_to("/flaky").len(), calls + 1);

    running.stop().await;
    h.stack.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The operator console's actions page (served by command-api)

async fn console_get(h: &Harness, path: &str, token: Option<&str>) -> cairn_stack::Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    cairn_stack::request(h.stack.api_http, "GET", path, &headers, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_targets_their_health_and_recent_failed_calls() {
    let chromium = std::env::var("CAIRN_TEST_CHROMIUM").expect(
        "CAIRN_TEST_CHROMIUM must name Debian's chromium (scripts/test installs it and sets it to /usr/bin/chromium)",
    );
    let h = Harness::start().await;
    let receiver = Receiver::started().await;
    let running = h.actions(h.config()).await;
    let mut client = h.client(&running).await;
    let (good, good_secret) = h
        .create_target(&mut client, "good", &receiver.url("/good"), false)
        .await;
    let (bad, bad_secret) = h
        .create_target(&mut client, "bad", &receiver.url("/bad"), false)
        .await;
    receiver.secrets(&[("/good", vec![good_secret]), ("/bad", vec![bad_secret])]);
    // The answer carries markup, to prove the page renders it as text.
    receiver.modes(json!({"/bad": {"status": 500, "message": "<b id=\"injected\">markup</b>"}}));
    h.set_execution(&mut client, "event:user.*", &[&good, &bad]).await;
    h.add_user("ada").await;

    let token = h.token.clone();
    let targets = eventually(
        "the good target delivered and the bad one failing",
        WAIT,
        || async {
            let response = console_get(&h, "/api/v1/admin/actions/targets", Some(&token)).await;
            assert_eq!(response.status, 200, "{}", response.body);
            let targets = response.json()["targets"].as_array().cloned().unwrap_or_default();
            let find = |id: &str| targets.iter().find(|t| t["id"] == json!(id)).cloned();
            let ready = find(&good).is_some_and(|t| !t["last_success_at"].is_null())
                && find(&bad).is_some_and(|t| !t["failing_since"].is_null());
            Ok(ready.then_some(targets))
        },
    )
    .await
    .unwrap();
    assert_eq!(targets.len(), 2, "{targets:?}");
    let bad_row = targets.iter().find(|t| t["id"] == json!(bad)).unwrap();
    assert_eq!(bad_row["state"], json!("active"));
    assert_eq!(bad_row["waiting"], json!(1), "{bad_row}");
    assert!(
        bad_row["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "{bad_row}"
    );
    let good_row = targets.iter().find(|t| t["id"] == json!(good)).unwrap();
    assert!(
        good_row["failing_since"].is_null() && good_row["waiting"] == json!(0),
        "{good_row}"
    );

    let failures = console_get(&h, "/api/v1/admin/actions/failures?limit=50", Some(&token)).await;
    assert_eq!(failures.status, 200, "{}", failures.body);
    let failures = failures.json()["failures"].as_array().cloned().unwrap();
    assert!(!failures.is_empty());
    for failure in &failures {
        assert_eq!(
            failure["target_id"],
            json!(bad),
            "only failed calls are listed: {failure}"
        );
        assert_eq!(failure["target_name"], json!("bad"));
        assert_eq!(failure["status"], json!(500));
        assert_eq!(failure["event_type"], json!("user.human.added"));
        assert!(
            failure["response"].as_str().is_some_and(|r| r.contains("markup")),
            "{failure}"
        );
    }
    let times: Vec<&str> = failures
        .iter()
        .map(|f| f["started_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    // Bad input, no token, another instance: problem JSON, 401, nothing of this instance.
    let bad_limit = console_get(&h, "/api/v1/admin/actions/failures?limit=0", Some(&token)).await;
    assert_eq!(bad_limit.status, 400, "{}", bad_limit.body);
    assert_eq!(bad_limit.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        console_get(&h, "/api/v1/admin/actions/targets", None)
            .await
            .status,
        401
    );
    let other = h.stack.new_instance("other").await.unwrap();
    for path in ["/api/v1/admin/actions/targets", "/api/v1/admin/actions/failures"] {
        let response = console_get(&h, path, Some(other.token.as_str())).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let key = if path.ends_with("targets") {
            "targets"
        } else {
            "failures"
        };
        assert_eq!(
            response.json()[key],
            json!([]),
            "{path} leaks another instance's rows"
        );
    }

    // The page in headless Chromium.
    let url = format!("http://{}/console/actions#token={}", h.stack.api_http, token);
    let output = cairn_stack::chromium(&chromium, &["--dump-dom".into(), url])
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("data-loaded=\"true\""),
        "the page did not load its data; status {:?}\nDOM:\n{dom}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dom.contains(&format!(
            "<tr data-target=\"{good}\" data-state=\"active\" data-health=\"healthy\">"
        )),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<tr data-target=\"{bad}\" data-state=\"active\" data-health=\"failing\">"
        )),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;b id=") && !dom.contains("<b id="),
        "data must be rendered as text, never as markup:\n{dom}"
    );
    assert!(!dom.contains(&token), "the token does not end up in the page");

    running.stop().await;
    h.stack.stop().await.unwrap();
}
