//! The `command-api` service: the gRPC APIs for organisations, users, groups and administration
//! (tonic, with health and reflection) and the REST endpoints for email verification and projection
//! health (axum), over the event store (writes) and the read models (queries).
//!
//! - [`authn`]: every gRPC call authenticated at the server's edge (tokens, callers and roles are
//!   `cairn-auth`'s).
//! - [`exec`]: commands — load, decide, push with the expected sequence, idempotency.
//! - [`users`], [`groups`], [`orgs`], [`admin`]: the services; [`users`] and [`groups`] are one
//!   module per concern (creating, reading, changing, email, removal, tokens; reading, group
//!   commands, membership), their service methods only hand the call on. [`rest`]: the REST routes.
//! - [`api`]: the state every surface shares; [`convert`]: wire types to and from domain and
//!   read-model types; [`email`]: verification codes; [`error`]: the one error type, mapped to a
//!   gRPC status and to problem+json.
//! - [`console`]: the operator console (`GET /console/projections`) and its failed-event endpoints.
//!
//! With `CAIRN_BOOTSTRAP`, the first instance and its admin token are created at start
//! (`cairn-instances`).
//!
//! [`start`] assembles the service on `cairn-runtime`: the pool and migrations, the readiness
//! checks, the metrics registry, the HTTP middleware and the named tasks drained in order on
//! shutdown. The listeners that keep the token cache and the position waiter current are tasks of
//! the runtime too (servers, stopped with the gRPC and HTTP servers after the workers).

pub mod admin;
pub mod api;
pub mod authn;
pub mod conditions;
pub mod console;
pub mod convert;
pub mod email;
pub mod error;
pub mod exec;
pub mod groups;
pub mod orgs;
pub mod rest;
pub mod system;
pub mod users;

use anyhow::Context;
use cairn_domain::{Clock, SystemClock};
use cairn_eventstore::PgEventStore;
use cairn_proto::admin::v1::admin_service_server::AdminServiceServer;
use cairn_proto::group::v1::group_service_server::GroupServiceServer;
use cairn_proto::org::v1::org_service_server::OrgServiceServer;
use cairn_proto::system::v1::system_service_server::SystemServiceServer;
use cairn_proto::user::v1::user_service_server::UserServiceServer;
use cairn_runtime::http::HttpSettings;
use cairn_runtime::{Runtime, bind};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connections in command-api's pool.
const POOL_SIZE: u32 = 16;

/// `RemoveUser` commands running at once in this process. A removal holds its transaction's
/// connection (with the user's lock) while it reads the user's groups through the pool; with at
/// most half the pool held that way, the reads always find a connection.
const REMOVALS_AT_ONCE: usize = POOL_SIZE as usize / 2;

/// Settings of the command-api service.
#[derive(Parser, Clone)]
#[command(name = "command-api", version, about = "Cairn's gRPC and REST APIs")]
pub struct Config {
    /// PostgreSQL with the event store and read models.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// gRPC listen address.
    #[arg(long, env = "CAIRN_API_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (REST, the operator console, /healthz, /readyz, /metrics).
    #[arg(long, env = "CAIRN_API_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Encryption keys for codes and SMTP passwords: `k1:<base64 32 bytes>[,k2:...][,active=k2]`.
    #[arg(long, env = "CAIRN_KEYS", hide_env_values = true)]
    pub keys: String,
    /// How long a query waits for its `min_position`, in milliseconds.
    #[arg(long, env = "CAIRN_API_WAIT_TIMEOUT_MS", default_value_t = 5000)]
    pub wait_timeout_ms: u64,
    /// How long an email verification code is valid, in seconds.
    #[arg(long, env = "CAIRN_EMAIL_CODE_TTL_SECS", default_value_t = 86_400)]
    pub email_code_ttl_secs: u64,
    /// Failed attempts after which a code is void.
    #[arg(long, env = "CAIRN_EMAIL_CODE_MAX_ATTEMPTS", default_value_t = 5)]
    pub email_code_max_attempts: u32,
    /// Code length.
    #[arg(long, env = "CAIRN_EMAIL_CODE_LENGTH", default_value_t = 6)]
    pub email_code_length: usize,
    /// Code alphabet.
    #[arg(long, env = "CAIRN_EMAIL_CODE_ALPHABET", default_value = "0123456789")]
    pub email_code_alphabet: String,
    /// Whether emails provisioned by SCIM count as verified (the instance trusts its IdP).
    #[arg(long, env = "CAIRN_TRUST_IDP_EMAILS", default_value_t = true, action = clap::ArgAction::Set)]
    pub trust_idp_emails: bool,
    /// Bootstrap the first instance at start when there is none.
    #[arg(long, env = "CAIRN_BOOTSTRAP", default_value_t = false, action = clap::ArgAction::Set)]
    pub bootstrap: bool,
    /// The first instance's name.
    #[arg(long, env = "CAIRN_BOOTSTRAP_INSTANCE_NAME", default_value = "Cairn")]
    pub bootstrap_instance_name: String,
    /// Browser origins allowed to call the REST endpoints across origins (a web app that verifies
    /// emails), comma-separated `scheme://host[:port]`; empty: none.
    #[arg(
        long,
        env = "CAIRN_API_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,
    /// Where the bootstrap writes the admin token (mode 0600).
    #[arg(long, env = "CAIRN_BOOTSTRAP_TOKEN_FILE", default_value = "admin.token")]
    pub bootstrap_token_file: PathBuf,
    /// Request conditions: the targets called before a command runs.
    #[command(flatten)]
    pub conditions: conditions::ConditionSettings,
}

impl Config {
    /// Checks the settings; errors name the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        Settings::parse(self).map(drop)
    }
}

/// A started service.
pub struct Service {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The shared API state (for tests and the CLI).
    pub api: api::Api,
    service: cairn_runtime::Service,
}

impl Service {
    /// Waits until every task ended after shutdown: the gRPC and HTTP servers and the listeners
    /// that keep the token cache and the position waiter current. Returns the first task error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }
}

/// The settings, checked and parsed once, before anything is started; errors name the variable.
struct Settings {
    keys: cairn_secrets::Keyring,
    email: api::EmailSettings,
    wait_timeout: Duration,
    trust_idp_emails: bool,
    cors_origins: Vec<axum::http::HeaderValue>,
}

impl Settings {
    fn parse(config: &Config) -> anyhow::Result<Self> {
        let keys =
            cairn_secrets::Keyring::parse(&config.keys).map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
        let code_spec =
            cairn_secrets::CodeSpec::new(config.email_code_length, &config.email_code_alphabet)
                .map_err(|e| anyhow::anyhow!("CAIRN_EMAIL_CODE_LENGTH / CAIRN_EMAIL_CODE_ALPHABET: {e}"))?;
        anyhow::ensure!(
            config.email_code_max_attempts >= 1,
            "CAIRN_EMAIL_CODE_MAX_ATTEMPTS must be at least 1"
        );
        anyhow::ensure!(
            config.email_code_ttl_secs >= 60,
            "CAIRN_EMAIL_CODE_TTL_SECS must be at least 60"
        );
        config.conditions.validate()?;
        let cors_origins = cairn_runtime::http::parse_origins(&config.cors_origins)
            .map_err(|e| anyhow::anyhow!("CAIRN_API_CORS_ORIGINS: {e}"))?;
        Ok(Self {
            keys,
            email: api::EmailSettings {
                code_expiry: Duration::from_secs(config.email_code_ttl_secs),
                max_attempts: config.email_code_max_attempts,
                code_spec,
            },
            wait_timeout: Duration::from_millis(config.wait_timeout_ms),
            trust_idp_emails: config.trust_idp_emails,
            cors_origins,
        })
    }
}

/// Connects, migrates, optionally bootstraps, and serves gRPC and HTTP until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
    start_with_clock(config, shutdown, Arc::new(SystemClock)).await
}

/// [`start`] with an injected clock (tests of expiry).
pub async fn start_with_clock(
    config: Config,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Service> {
    let settings = Settings::parse(&config)?;
    let mut rt = Runtime::new("command-api", shutdown);
    let pool = rt
        .postgres(
            &config.database_url,
            POOL_SIZE,
            cairn_eventstore::IDLE_IN_TRANSACTION_TIMEOUT,
        )
        .await?;
    // The token cache's and the position waiter's listeners run as tasks of the runtime (below).
    let (auth, revocations) = cairn_auth::Authenticator::cached_listening(pool.clone());
    let (waiter, commits) = cairn_readmodel::PositionWaiter::listening(pool.clone());
    let conditions = conditions::RequestConditions::new(
        pool.clone(),
        settings.keys.clone(),
        clock.clone(),
        &config.conditions,
    )?;
    let api = api::Api {
        exec: exec::Executor {
            store: PgEventStore::new(pool.clone()),
            pool,
            clock,
            vault: cairn_personal::Vault::new(settings.keys.clone()),
        },
        auth,
        waiter,
        keys: settings.keys,
        email: settings.email,
        wait_timeout: settings.wait_timeout,
        trust_idp_emails: settings.trust_idp_emails,
        org_cache: api::OrgCache::default(),
        removals: Arc::new(tokio::sync::Semaphore::new(REMOVALS_AT_ONCE)),
    };
    if config.bootstrap
        && let Some(created) = cairn_instances::bootstrap(
            &api.exec.store,
            &api.exec.vault,
            &config.bootstrap_instance_name,
            api.exec.clock.now(),
        )
        .await?
    {
        cairn_instances::write_token_file(&config.bootstrap_token_file, &created.token).with_context(
            || {
                format!(
                    "writing {} (CAIRN_BOOTSTRAP_TOKEN_FILE)",
                    config.bootstrap_token_file.display()
                )
            },
        )?;
        tracing::info!(instance = %created.instance_id, token_file = %config.bootstrap_token_file.display(), "bootstrapped the first instance");
    }

    let grpc_listener = bind(config.grpc_addr, "CAIRN_API_GRPC_ADDR").await?;
    let http_listener = bind(config.http_addr, "CAIRN_API_HTTP_ADDR").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<UserServiceServer<users::Users>>().await;
    health.set_serving::<GroupServiceServer<groups::Groups>>().await;
    health.set_serving::<OrgServiceServer<orgs::Orgs>>().await;
    health.set_serving::<AdminServiceServer<admin::Admin>>().await;
    health.set_serving::<SystemServiceServer<system::System>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let registry = rt.registry();
    let grpc_metrics = cairn_telemetry::RequestMetrics::register(registry, "cairn_api_grpc");
    let http_metrics = cairn_telemetry::RequestMetrics::register(registry, "cairn_api_http");
    conditions.register(registry);
    let grpc = tonic::transport::Server::builder()
        .layer(cairn_runtime::http::grpc_request_id())
        .layer(grpc_metrics.layer("command-api"))
        .layer(authn::AuthnLayer::new(api.clone()))
        // Inside authentication: the conditions see the caller.
        .layer(conditions.layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(UserServiceServer::new(users::Users::new(api.clone())))
        .add_service(GroupServiceServer::new(groups::Groups::new(api.clone())))
        .add_service(OrgServiceServer::new(orgs::Orgs::new(api.clone())))
        .add_service(AdminServiceServer::new(admin::Admin::new(api.clone())))
        .add_service(SystemServiceServer::new(system::System::new(api.clone())));
    let routes = rest::router(api.clone())
        .merge(console::router(api.clone()))
        .route_layer(http_metrics.layer("command-api"));

    // The listeners are servers, not workers: they stop after the workers, with the gRPC and HTTP
    // servers, so a request in flight keeps a current token cache and position waiter.
    rt.spawn_listener("revocation-listener", |stop| revocations.run(stop));
    rt.spawn_listener("position-listener", |stop| commits.run(stop));
    rt.spawn_listener("action-config-listener", |stop| conditions.listen(stop));
    rt.spawn_server("grpc", move |stop| async move {
        grpc.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.cancelled_owned(),
        )
        .await
        .context("gRPC server failed")
    });
    let http = HttpSettings {
        cors_origins: settings.cors_origins,
        ..HttpSettings::default()
    };
    rt.serve_http(http_listener, routes, &http);
    tracing::info!(%grpc_addr, %http_addr, "command-api started");
    Ok(Service {
        grpc_addr,
        http_addr,
        api,
        service: rt.into_service(),
    })
}
