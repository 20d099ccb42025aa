//! Fixtures of the notifier's tests: a real SMTP server (aiosmtpd, `smtp_sink.py`) per test, the
//! whole stack in-process (`crates/stack`, plus the notifiers a test starts) on a fresh database,
//! and a log capture that the tests search for secrets.

use cairn_domain::{Clock, SystemClock};
use cairn_proto::notification::v1 as notification;
use cairn_proto::user::v1 as user;
use cairn_testkit::eventually;
use serde_json::Value;
use std::io::Write;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Log capture

/// Everything every test of this process logged (JSON lines, debug level and up).
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buffer.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,sqlx=info,h2=info,hyper=info,hyper_util=info,tower=info,async_nats=info,tonic=info",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails if any of `secrets` appears in the captured logs; returns how many lines were searched.
pub fn assert_logs_free_of(secrets: &[&str]) -> usize {
    let logs = logs();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for secret in secrets {
        assert!(secret.len() >= 6, "a secret too short to search for: {secret:?}");
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("a secret appears in the logs: {line}");
        }
    }
    text.lines().count()
}

// ---------------------------------------------------------------------------------------------
// The SMTP server

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

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An aiosmtpd server writing what it accepts to a directory.
pub struct Sink {
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Sink {
    /// A sink on `port` (not started).
    pub fn new(port: u16, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("cairn-sink-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            port,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        }
    }

    /// Starts a sink on a free port.
    pub async fn started(args: &[&str]) -> Self {
        let mut sink = Self::new(free_port(), args);
        sink.start().await;
        sink
    }

    /// Starts the server and waits until it listens.
    pub async fn start(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("ready"));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let child = Command::new(python())
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink (python with aiosmtpd: scripts/test installs it)");
        self.child = Some(child);
        let ready = self.dir.join("ready");
        let started = eventually("the SMTP sink to listen", Duration::from_secs(15), || {
            let ready = ready.clone();
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("the SMTP sink exited with {status}: is aiosmtpd installed?");
                }
                Ok(ready.exists().then_some(()))
            }
        })
        .await;
        if let Err(error) = started {
            let mut stderr = String::new();
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
            }
            panic!("{error}: {stderr}");
        }
    }

    /// Stops the server (SIGKILL: the port is free at once).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("msg-") && n.ends_with(".json"))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The messages for one address.
    pub fn messages_to(&self, address: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.as_str() == Some(address))
            })
            .collect()
    }

    /// Waits until at least `n` messages for `address` arrived; returns them.
    pub async fn wait_for(&self, address: &str, n: usize) -> Vec<Value> {
        eventually(&format!("{n} message(s) for {address}"), WAIT, || async {
            let got = self.messages_to(address);
            Ok((got.len() >= n).then_some(got))
        })
        .await
        .unwrap()
    }

    /// Every RCPT TO the server was offered.
    pub fn rcpts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("rcpt.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The alphabet of the codes in these tests.
pub const CODE_ALPHABET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The code in a verification message's text: the line that is only the code.
pub fn code_in(message: &Value) -> String {
    message["text"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 8 && l.chars().all(|c| CODE_ALPHABET.contains(c)))
        .unwrap_or_else(|| panic!("no code in {message}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The stack

/// The whole system from `crates/stack` (relay, projector, command-api, SCIM gateway) on a fresh
/// database, with the notifiers of a test beside it.
pub struct Stack(cairn_stack::Stack);

impl Deref for Stack {
    type Target = cairn_stack::Stack;

    fn deref(&self) -> &cairn_stack::Stack {
        &self.0
    }
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        logs();
        let options = cairn_stack::Options::default()
            .clock(clock)
            .instance_name("Analytical Engines")
            // Long codes from an alphabet that log lines hardly use, so searching the logs for a
            // code cannot match a timestamp or a position by chance.
            .email_codes(8, CODE_ALPHABET);
        Self(cairn_stack::Stack::start_with(options).await.unwrap())
    }

    /// Notifier settings for this stack, sending to `smtp_port` without TLS, with short timeouts,
    /// backoffs and claims.
    pub fn notifier_config(&self, smtp_port: u16) -> cairn_notifier::Config {
        let mut config = cairn_notifier::Config::for_tests(&self.db.url, self.keys());
        config.nats_url = cairn_testkit::nats_url();
        config.stream_name = self.stream().to_owned();
        config.subject_prefix = self.prefix().to_owned();
        config.lease_ttl_secs = 2;
        config.head_check_ms = 500;
        config.concurrency = 2;
        config.backoff_base_ms = 100;
        config.backoff_max_ms = 800;
        config.smtp_timeout_secs = 2;
        config.claim_ttl_secs = 5;
        config.poll_ms = 200;
        config.smtp_host = Some("127.0.0.1".into());
        config.smtp_port = smtp_port;
        config.smtp_tls = cairn_notifier::TlsMode::None;
        config.smtp_from = "cairn@notifier.test".into();
        config
    }

    /// Starts a notifier replica.
    pub async fn notifier(&self, config: cairn_notifier::Config) -> Notifier {
        self.notifier_with(config, cairn_notifier::Hooks::default()).await
    }

    /// Starts a notifier replica with test hooks.
    pub async fn notifier_with(
        &self,
        config: cairn_notifier::Config,
        hooks: cairn_notifier::Hooks,
    ) -> Notifier {
        let shutdown = CancellationToken::new();
        let service = cairn_notifier::start_with(config, shutdown.clone(), self.clock(), hooks)
            .await
            .unwrap();
        Notifier {
            http_addr: service.http_addr,
            grpc_addr: service.grpc_addr,
            metrics: service.metrics.clone(),
            shutdown,
            task: tokio::spawn(service.wait()),
        }
    }

    pub async fn stop(self) {
        self.0.stop().await.unwrap();
    }

    /// Adds a human user (email unverified) with a preferred language; returns the id.
    pub async fn add_user(&self, name: &str, language: &str) -> String {
        let request = user::AddHumanUserRequest {
            user_name: name.into(),
            profile: Some(user::HumanProfile {
                name: Some(user::Name {
                    given_name: "Ada".into(),
                    family_name: "Lovelace".into(),
                    ..Default::default()
                }),
                display_name: format!("Ada {name}"),
                preferred_language: language.into(),
                emails: vec![user::Email {
                    value: format!("{name}@old.test"),
                    r#type: "work".into(),
                    primary: true,
                    verified: false,
                    display: String::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        self.users()
            .add_human_user(authed(&self.admin.token, request))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .id
    }

    /// Sets a user's email with the given verification mode; returns the code if one was returned.
    pub async fn set_email(&self, id: &str, email: &str, mode: user::EmailVerification) -> String {
        self.users()
            .set_email(authed(
                &self.admin.token,
                user::SetEmailRequest {
                    user_id: id.into(),
                    email: email.into(),
                    verification: mode as i32,
                    url_template: "https://id.test/verify?user={{userId}}&code={{code}}".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .verification_code
    }

    /// The delivery rows of a user: (status, attempts, last_error, smtp_reply, message_id).
    pub async fn deliveries(&self, user: &str) -> Vec<DeliveryRow> {
        sqlx::query_as(
            "SELECT event_id, status, attempts, last_error, smtp_reply, message_id, language, code IS NOT NULL AS holds_code \
               FROM notification.deliveries WHERE user_id = $1::uuid ORDER BY event_position, event_offset",
        )
        .bind(user)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Waits until the user's latest delivery is in `status`.
    pub async fn wait_status(&self, user: &str, status: &str) -> DeliveryRow {
        eventually(
            &format!("a delivery for {user} in status {status}"),
            WAIT,
            || async { Ok(self.deliveries(user).await.pop().filter(|d| d.status == status)) },
        )
        .await
        .unwrap()
    }
}

/// One row of `notification.deliveries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub event_id: uuid::Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub smtp_reply: Option<String>,
    pub message_id: String,
    pub language: Option<String>,
    pub holds_code: bool,
}

/// A running notifier replica.
pub struct Notifier {
    pub http_addr: std::net::SocketAddr,
    pub grpc_addr: std::net::SocketAddr,
    pub metrics: cairn_notifier::NotifierMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Notifier {
    /// A client of the replica's administration API.
    pub fn client(&self) -> notification::notification_service_client::NotificationServiceClient<Channel> {
        notification::notification_service_client::NotificationServiceClient::new(
            Channel::from_shared(format!("http://{}", self.grpc_addr))
                .unwrap()
                .connect_lazy(),
        )
    }

    /// Graceful shutdown; waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
