//! The whole of Cairn in one process for end-to-end tests: a fresh database and stream, the
//! relay, a projector, command-api and the SCIM gateway on free ports, a bootstrapped instance with
//! an admin token and a SCIM token, and a small HTTP client. The services' own integration tests
//! start their stack here too: [`Options`] injects a clock and sets the instance's name and the
//! email codes, [`Stack::projectors`] starts (and [`Stack::projector`] holds) projector replicas a
//! test may kill, and [`Stack::stop_services`] with [`Stack::resume_on`] restart the services on a
//! restored database.

use cairn_auth::{NewToken, Role, TokenKind};
use cairn_domain::{Clock, SystemClock};
use cairn_instances::{Bootstrapped, create_instance};
use cairn_proto::admin::v1::admin_service_client::AdminServiceClient;
use cairn_proto::group::v1::group_service_client::GroupServiceClient;
use cairn_proto::user::v1::user_service_client::UserServiceClient;
use cairn_testkit::TestDb;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A new instance (`cairn init`) and a SCIM provisioner token of its admin user (`cairn token
/// create --kind scim`), written straight to the database: for stacks started in tests and
/// benchmarks.
pub async fn bootstrap(
    pool: &sqlx::PgPool,
    store: &cairn_eventstore::PgEventStore,
    vault: &cairn_personal::Vault,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(Bootstrapped, String)> {
    let admin = create_instance(store, vault, cairn_eventstore::begin(pool).await?, name, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let scim_token = admin_token(pool, &admin, TokenKind::Scim, vec![Role::ScimProvisioner]).await?;
    Ok((admin, scim_token))
}

/// `message` as a gRPC request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The token of the stack's event API (the eventstore service's gRPC).
pub const EVENTSTORE_TOKEN: &str = "stack-token-0123456789abcdef0123456789";

/// Digests of every read-model table ([`cairn_projection::Projection::tables`] of
/// [`cairn_readmodel::all`]), to compare a live read model with a rebuild from zero.
pub async fn read_model_checksums(pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for projection in cairn_readmodel::all() {
        for table in projection.tables() {
            let sum: String = sqlx::query_scalar(&format!(
                "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), 'empty') FROM {table} t"
            ))
            .fetch_one(pool)
            .await?;
            out.push((table.to_owned(), sum));
        }
    }
    Ok(out)
}

/// Asks for a rebuild from zero of every read model and waits (up to `timeout`) until every
/// projection has done it and caught up again.
pub async fn rebuild_read_models(pool: &sqlx::PgPool, timeout: std::time::Duration) -> anyhow::Result<()> {
    for projection in cairn_readmodel::all() {
        cairn_projection::health::request_rebuild(pool, projection.name(), None).await?;
    }
    cairn_testkit::eventually("every rebuild to finish", timeout, || async {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projections.projection_states WHERE rebuild_requested OR status <> 'active'",
        )
        .fetch_one(pool)
        .await?;
        Ok((pending == 0).then_some(()))
    })
    .await
}

/// A new keyring of one random key (`k1:<key>`), as command-api and the notifier take it.
pub fn new_keys() -> anyhow::Result<String> {
    let key = cairn_secrets::Keyring::generate_key_string()?;
    Ok(format!("k1:{}", key.as_str()))
}

/// A new token of `admin`'s instance acting as its admin user, of `kind` (`Api` or `Scim`).
pub async fn admin_token(
    pool: &sqlx::PgPool,
    admin: &Bootstrapped,
    kind: TokenKind,
    roles: Vec<Role>,
) -> anyhow::Result<String> {
    let mut tx = cairn_eventstore::begin(pool).await?;
    let issued = cairn_auth::tokens::issue(
        &mut tx,
        &NewToken {
            instance_id: admin.instance_id,
            org_id: None,
            principal_id: admin.admin_id,
            kind,
            roles,
            description: None,
            expires_at: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    Ok(issued.secret.to_string())
}

/// A running stack.
pub struct Stack {
    /// The database.
    pub db: TestDb,
    /// command-api's gRPC address.
    pub grpc: SocketAddr,
    /// The eventstore service's gRPC address (the event API).
    pub eventstore_grpc: SocketAddr,
    /// command-api's HTTP address.
    pub api_http: SocketAddr,
    /// The SCIM gateway's HTTP address.
    pub scim: SocketAddr,
    /// The bootstrapped instance.
    pub admin: Bootstrapped,
    /// A SCIM provisioner token of the instance.
    pub scim_token: String,
    /// The projector replica: [`Stack::stop`] waits for whichever replica is here. A test may take
    /// it and drop it, which aborts its tasks as a crash would (no lease released), and put
    /// another here from [`Stack::projectors`].
    pub projector: Option<cairn_projector_service::Service>,
    api: cairn_command_api::Service,
    channel: Channel,
    projectors: Projectors,
    options: Options,
    stream: String,
    prefix: String,
    keys: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings of a [`Stack`] that tests may change, set with the methods below on
/// [`Options::default`].
#[derive(Debug, Clone)]
pub struct Options {
    projector_max_attempts: i32,
    clock: Arc<dyn Clock>,
    instance_name: String,
    email_codes: (usize, String),
    conditions: cairn_command_api::conditions::ConditionSettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            projector_max_attempts: 3,
            clock: Arc::new(SystemClock),
            instance_name: "Stack".into(),
            email_codes: (6, "0123456789".into()),
            conditions: cairn_command_api::conditions::ConditionSettings::default(),
        }
    }
}

impl Options {
    /// Attempts before the projector skips a failing event (`CAIRN_PROJECTOR_MAX_ATTEMPTS`);
    /// 3 by default.
    pub fn projector_max_attempts(mut self, attempts: i32) -> Self {
        self.projector_max_attempts = attempts;
        self
    }

    /// command-api's clock, which also dates the bootstrapped instance (tests of expiry); the
    /// system clock by default.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock set with [`Options::clock`].
    pub fn get_clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The name of the bootstrapped instance; "Stack" by default.
    pub fn instance_name(mut self, name: &str) -> Self {
        self.instance_name = name.to_owned();
        self
    }

    /// command-api's request-condition settings (allowed hosts, budget, circuit breaker); the
    /// defaults, which allow no private host, by default.
    pub fn request_conditions(mut self, settings: cairn_command_api::conditions::ConditionSettings) -> Self {
        self.conditions = settings;
        self
    }

    /// The length and alphabet of command-api's email verification codes; six digits by default.
    pub fn email_codes(mut self, length: usize, alphabet: &str) -> Self {
        self.email_codes = (length, alphabet.to_owned());
        self
    }
}

/// What a stack whose services stopped leaves to start another on its database or a copy of it
/// ([`Stack::stop_services`], [`Stack::resume_on`]): its options, stream, keys and instance.
pub struct Resume {
    options: Options,
    taken_over: TakenOver,
}

/// What a resumed stack takes over from the stopped one instead of making it anew.
struct TakenOver {
    stream: String,
    prefix: String,
    keys: String,
    admin: Bootstrapped,
    scim_token: String,
}

/// Starts projector replicas of a stack: on its database and stream, with its settings, stopped
/// with it. Cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct Projectors {
    config: cairn_projector_service::Config,
    shutdown: CancellationToken,
}

impl Projectors {
    /// Starts one more replica.
    pub async fn start(&self) -> anyhow::Result<cairn_projector_service::Service> {
        cairn_projector_service::start(self.config.clone(), self.shutdown.clone()).await
    }
}

impl Stack {
    /// Starts everything.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts everything with `options` on a new database and stream, and bootstraps an instance.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        Self::start_on(TestDb::new(16).await?, options, None).await
    }

    /// Starts everything on `db` (the database of a stopped stack, or a restored copy of it)
    /// where `resume`'s stack stopped: its stream, keys and instance; nothing is bootstrapped.
    pub async fn resume_on(db: TestDb, resume: Resume) -> anyhow::Result<Self> {
        Self::start_on(db, resume.options, Some(resume.taken_over)).await
    }

    async fn start_on(db: TestDb, options: Options, taken_over: Option<TakenOver>) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let (stream, prefix, keys) = match &taken_over {
            Some(t) => (t.stream.clone(), t.prefix.clone(), t.keys.clone()),
            None => {
                let (stream, prefix) = cairn_testkit::unique_stream();
                (stream, prefix, new_keys()?)
            }
        };
        let eventstore = cairn_eventstore_service::start(
            cairn_eventstore_service::Config {
                database_url: db.url.clone(),
                nats_url: cairn_testkit::nats_url(),
                grpc_addr: "127.0.0.1:0".parse()?,
                http_addr: "127.0.0.1:0".parse()?,
                service_token: EVENTSTORE_TOKEN.into(),
                stream_name: stream.clone(),
                subject_prefix: prefix.clone(),
                stream_max_age_hours: 1,
                duplicate_window_secs: 120,
                relay_lease_ttl_secs: 2,
                relay_batch: 1000,
                relay_poll_ms: 500,
            },
            shutdown.clone(),
        )
        .await?;
        let projectors = Projectors {
            config: cairn_projector_service::Config {
                database_url: db.url.clone(),
                nats_url: cairn_testkit::nats_url(),
                http_addr: "127.0.0.1:0".parse()?,
                stream_name: stream.clone(),
                subject_prefix: prefix.clone(),
                lease_ttl_secs: 2,
                batch: 1000,
                max_attempts: options.projector_max_attempts,
                head_check_ms: 2000,
                keys: keys.as_str().into(),
            },
            shutdown: shutdown.clone(),
        };
        let projector = projectors.start().await?;
        let (code_length, code_alphabet) = options.email_codes.clone();
        let api = cairn_command_api::start_with_clock(
            cairn_command_api::Config {
                database_url: db.url.clone(),
                grpc_addr: "127.0.0.1:0".parse()?,
                http_addr: "127.0.0.1:0".parse()?,
                keys: keys.clone(),
                wait_timeout_ms: 10_000,
                email_code_ttl_secs: 3600,
                email_code_max_attempts: 5,
                email_code_length: code_length,
                email_code_alphabet: code_alphabet,
                trust_idp_emails: true,
                bootstrap: false,
                bootstrap_instance_name: options.instance_name.clone(),
                bootstrap_token_file: "unused".into(),
                cors_origins: Vec::new(),
                conditions: options.conditions.clone(),
            },
            shutdown.clone(),
            options.clock.clone(),
        )
        .await?;
        let (admin, scim_token) = match taken_over {
            Some(t) => (t.admin, t.scim_token),
            None => {
                bootstrap(
                    &api.api.exec.pool,
                    &api.api.exec.store,
                    &api.api.exec.vault,
                    &options.instance_name,
                    api.api.exec.clock.now(),
                )
                .await?
            }
        };
        let grpc = api.grpc_addr;
        let channel = Channel::from_shared(format!("http://{grpc}"))?.connect_lazy();
        let api_http = api.http_addr;
        let scim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scim_addr = scim_listener.local_addr()?;
        drop(scim_listener);
        let gateway = cairn_scim_gateway::start(
            cairn_scim_gateway::Config {
                database_url: db.url.clone(),
                api_url: format!("http://{grpc}"),
                http_addr: scim_addr,
                base_url: format!("http://{scim_addr}/scim/v2"),
                max_results: 1000,
                bulk_max_operations: 1000,
                max_payload_bytes: 1_048_576,
                wait_timeout_ms: 10_000,
            },
            shutdown.clone(),
        )
        .await?;
        let eventstore_grpc = eventstore.grpc_addr;
        let tasks = vec![tokio::spawn(eventstore.wait()), tokio::spawn(gateway.wait())];
        Ok(Self {
            db,
            grpc,
            eventstore_grpc,
            api_http,
            scim: scim_addr,
            admin,
            scim_token,
            projector: Some(projector),
            api,
            channel,
            projectors,
            options,
            stream,
            prefix,
            keys,
            shutdown,
            tasks,
        })
    }

    /// command-api's shared state (event store, pool, clock, position waiter).
    pub fn api(&self) -> &cairn_command_api::api::Api {
        &self.api.api
    }

    /// command-api's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.api().exec.clock.clone()
    }

    /// command-api's keyring (`k1:<key>`), which the notifier shares.
    pub fn keys(&self) -> &str {
        &self.keys
    }

    /// The stream the relay publishes to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subject prefix of the stream's events.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Starts more projector replicas (see [`Stack::projector`]).
    pub fn projectors(&self) -> Projectors {
        self.projectors.clone()
    }

    /// A gRPC channel to command-api (connecting lazily).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A client of command-api's user service.
    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel())
    }

    /// A client of command-api's group service.
    pub fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel())
    }

    /// A client of command-api's admin service.
    pub fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel())
    }

    /// A new instance, with its own admin token, beside the bootstrapped one.
    pub async fn new_instance(&self, name: &str) -> anyhow::Result<Bootstrapped> {
        let api = self.api();
        let tx = cairn_eventstore::begin(&api.exec.pool).await?;
        create_instance(&api.exec.store, &api.exec.vault, tx, name, api.exec.clock.now())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// A new system token (the system API only), as `cairn system-token create` makes one.
    pub async fn system_token(&self) -> anyhow::Result<String> {
        let mut tx = cairn_eventstore::begin(&self.db.pool).await?;
        let issued = cairn_auth::tokens::issue_system(&mut tx, Some("test stack"), None).await?;
        tx.commit().await?;
        Ok(issued.secret.to_string())
    }

    /// A new API token of the bootstrapped instance, acting as its admin user, with `roles`.
    pub async fn token_with(&self, roles: &[Role]) -> anyhow::Result<String> {
        admin_token(&self.api().exec.pool, &self.admin, TokenKind::Api, roles.to_vec()).await
    }

    /// The SCIM base URL.
    pub fn scim_url(&self) -> String {
        format!("http://{}/scim/v2", self.scim)
    }

    /// A SCIM request with the stack's SCIM token.
    pub async fn scim(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Response> {
        let token = format!("Bearer {}", self.scim_token);
        let body = body.map(|b| b.to_string());
        request(
            self.scim,
            method,
            &format!("/scim/v2{path}"),
            &[
                ("authorization", &token),
                ("content-type", "application/scim+json"),
            ],
            body.as_deref(),
        )
        .await
    }

    /// Stops everything and drops the database and stream.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (db, resume) = self.stop_services().await?;
        let client = async_nats::connect(cairn_testkit::nats_url()).await?;
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&resume.taken_over.stream)
            .await;
        db.drop_db().await
    }

    /// Stops every service gracefully; the database and the stream stay, for a stack to resume
    /// on ([`Stack::resume_on`]).
    pub async fn stop_services(self) -> anyhow::Result<(TestDb, Resume)> {
        self.shutdown.cancel();
        self.api.wait().await?;
        if let Some(projector) = self.projector {
            projector.wait().await?;
        }
        for task in self.tasks {
            task.await??;
        }
        let resume = Resume {
            options: self.options,
            taken_over: TakenOver {
                stream: self.stream,
                prefix: self.prefix,
                keys: self.keys,
                admin: self.admin,
                scim_token: self.scim_token,
            },
        };
        Ok((self.db, resume))
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 request (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad response {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
#[path = "crate_graph_tests.rs"]
mod crate_graph_tests;

/// Runs headless Chromium (`binary`, Debian's `chromium`; tests take it from `CAIRN_TEST_CHROMIUM`,
/// which `scripts/test` sets) with a fresh profile and `args` (`--dump-dom <url>`,
/// `--screenshot=<file> <url>`), letting virtual time run until the page's fetches answered.
/// Fails when it cannot run or takes over two minutes.
pub async fn chromium(binary: &str, args: &[String]) -> anyhow::Result<std::process::Output> {
    let profile = std::env::temp_dir().join(format!("cairn-chromium-{}", uuid::Uuid::new_v4()));
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            // Virtual time runs until the page's fetches have answered and it has rendered.
            "--virtual-time-budget=15000",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output()).await;
    let _ = std::fs::remove_dir_all(&profile);
    let output = output
        .map_err(|_| anyhow::anyhow!("chromium did not finish within 120 s"))?
        .map_err(|e| anyhow::anyhow!("cannot run {binary}: {e}"))?;
    Ok(output)
}
