//! The notifier's settings: one typed struct, from `CAIRN_` environment variables or flags,
//! validated at start with errors that name the variable. The default SMTP password is
//! [`SecretString`]: its `Debug` never shows it.

use cairn_secrets::SecretString;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// How a connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// Plain SMTP (for a relay on localhost or a test sink).
    None,
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

impl TlsMode {
    /// The spelling stored in `api.smtp_settings.tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starttls => "starttls",
            Self::Implicit => "implicit",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "starttls" => Some(Self::Starttls),
            "implicit" => Some(Self::Implicit),
            _ => None,
        }
    }
}

/// Settings of a notifier replica.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "notifier",
    version,
    about = "Sends Cairn's verification emails over SMTP"
)]
pub struct Config {
    /// PostgreSQL holding the event store and the delivery records.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// NATS server (wake-ups only; the notifier works without it, only slower to react).
    #[arg(long, env = "CAIRN_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Encryption keys (the same as command-api's): `k1:<base64 32 bytes>[,k2:...][,active=k2]`.
    #[arg(long, env = "CAIRN_KEYS", hide_env_values = true)]
    pub keys: SecretString,
    /// HTTP listen address for /healthz, /readyz, /metrics. Port 0 picks a free port (for replicas).
    #[arg(long, env = "CAIRN_NOTIFIER_HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,
    /// gRPC listen address of the administration API (`cairn.notification.v1.NotificationService`).
    #[arg(long, env = "CAIRN_NOTIFIER_GRPC_ADDR", default_value = "0.0.0.0:50054")]
    pub grpc_addr: SocketAddr,
    /// The JetStream stream the relay publishes to.
    #[arg(long, env = "CAIRN_STREAM_NAME", default_value = "CAIRN_EVENTS")]
    pub stream_name: String,
    /// Its subject prefix.
    #[arg(long, env = "CAIRN_STREAM_SUBJECT_PREFIX", default_value = "cairn.events")]
    pub subject_prefix: String,
    /// Lease time-to-live of the intake (the `notifications` projection), in seconds.
    #[arg(long, env = "CAIRN_NOTIFIER_LEASE_TTL_SECS", default_value_t = 5)]
    pub lease_ttl_secs: u64,
    /// How often an idle intake worker checks the event log anyway, in milliseconds.
    #[arg(long, env = "CAIRN_NOTIFIER_HEAD_CHECK_MS", default_value_t = 2000)]
    pub head_check_ms: u64,
    /// Messages sent at the same time by this replica.
    #[arg(long, env = "CAIRN_NOTIFIER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Attempts (claims) before a delivery that keeps failing transiently is recorded as failed.
    #[arg(long, env = "CAIRN_NOTIFIER_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: i32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    #[arg(long, env = "CAIRN_NOTIFIER_BACKOFF_BASE_MS", default_value_t = 2000)]
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "CAIRN_NOTIFIER_BACKOFF_MAX_MS", default_value_t = 600_000)]
    pub backoff_max_ms: u64,
    /// How long a sender's claim on a delivery lasts before another sender may take it over, in
    /// seconds. A sender renews it while it talks to the SMTP server, and once more right before
    /// `DATA`; from then on `DATA` and the final reply must end within it, so it must be more than
    /// twice `CAIRN_SMTP_TIMEOUT_SECS`.
    #[arg(long, env = "CAIRN_NOTIFIER_CLAIM_TTL_SECS", default_value_t = 120)]
    pub claim_ttl_secs: u64,
    /// The longest wait for one step of the SMTP conversation, in seconds: the TCP connection,
    /// the TLS handshake or one reply of the server.
    #[arg(long, env = "CAIRN_SMTP_TIMEOUT_SECS", default_value_t = 30)]
    pub smtp_timeout_secs: u64,
    /// The longest a whole send may take, in seconds: from connecting (or taking a pooled
    /// connection) to the server's final reply to `DATA`. A send that takes longer is abandoned
    /// and retried later like any transient failure. At least `CAIRN_SMTP_TIMEOUT_SECS`.
    #[arg(long, env = "CAIRN_SMTP_SEND_TIMEOUT_SECS", default_value_t = 300)]
    pub smtp_send_timeout_secs: u64,
    /// How often an idle sender looks for due deliveries anyway, in milliseconds.
    #[arg(long, env = "CAIRN_NOTIFIER_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// Default SMTP server, used for instances without their own settings; none: such instances'
    /// deliveries wait (and show the error) until settings exist.
    #[arg(long, env = "CAIRN_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// Default SMTP port.
    #[arg(long, env = "CAIRN_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    /// Default SMTP transport security.
    #[arg(long, env = "CAIRN_SMTP_TLS", value_enum, default_value = "starttls")]
    pub smtp_tls: TlsMode,
    /// Default SMTP user name.
    #[arg(long, env = "CAIRN_SMTP_USER")]
    pub smtp_user: Option<String>,
    /// Default SMTP password.
    #[arg(long, env = "CAIRN_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<SecretString>,
    /// Default sender address.
    #[arg(long, env = "CAIRN_SMTP_FROM", default_value = "no-reply@localhost")]
    pub smtp_from: String,
    /// Default sender name.
    #[arg(long, env = "CAIRN_SMTP_FROM_NAME", default_value = "Cairn")]
    pub smtp_from_name: String,
    /// Default Reply-To address.
    #[arg(long, env = "CAIRN_SMTP_REPLY_TO")]
    pub smtp_reply_to: Option<String>,
}

impl Config {
    /// Settings with every default, the given database and keys, and free loopback ports, for
    /// tests and benchmarks.
    pub fn for_tests(database_url: &str, keys: &str) -> Self {
        let mut config = Self::parse_from(["notifier", "--keys", keys]);
        config.database_url = database_url.to_owned();
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// Checks the settings; errors name the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        cairn_secrets::Keyring::parse(self.keys.expose_str())
            .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
        anyhow::ensure!(
            self.lease_ttl_secs >= 1,
            "CAIRN_NOTIFIER_LEASE_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "CAIRN_NOTIFIER_CONCURRENCY must be between 1 and 256"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "CAIRN_NOTIFIER_MAX_ATTEMPTS must be between 1 and 100"
        );
        anyhow::ensure!(
            self.backoff_base_ms >= 1 && self.backoff_base_ms <= self.backoff_max_ms,
            "CAIRN_NOTIFIER_BACKOFF_BASE_MS must be at least 1 and at most CAIRN_NOTIFIER_BACKOFF_MAX_MS"
        );
        anyhow::ensure!(
            self.smtp_timeout_secs >= 1,
            "CAIRN_SMTP_TIMEOUT_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.smtp_send_timeout_secs >= self.smtp_timeout_secs,
            "CAIRN_SMTP_SEND_TIMEOUT_SECS ({}) must be at least CAIRN_SMTP_TIMEOUT_SECS ({}): the whole \
             send cannot be shorter than one of its steps",
            self.smtp_send_timeout_secs,
            self.smtp_timeout_secs
        );
        anyhow::ensure!(
            self.claim_ttl_secs > 2 * self.smtp_timeout_secs,
            "CAIRN_NOTIFIER_CLAIM_TTL_SECS ({}) must be more than twice CAIRN_SMTP_TIMEOUT_SECS ({}): the \
             claim is renewed right before DATA, and DATA and the server's final reply (each allowed \
             CAIRN_SMTP_TIMEOUT_SECS) must end, with a second to spare for recording the outcome, \
             before another sender may take the delivery over",
            self.claim_ttl_secs,
            self.smtp_timeout_secs
        );
        anyhow::ensure!(self.poll_ms >= 1, "CAIRN_NOTIFIER_POLL_MS must be at least 1");
        if let Some(host) = &self.smtp_host {
            anyhow::ensure!(
                !host.trim().is_empty() && host.len() <= 253,
                "CAIRN_SMTP_HOST must be 1 to 253 characters"
            );
        }
        self.smtp_from
            .parse::<lettre::Address>()
            .map_err(|e| anyhow::anyhow!("CAIRN_SMTP_FROM: {e}"))?;
        if let Some(reply_to) = &self.smtp_reply_to {
            reply_to
                .parse::<lettre::Address>()
                .map_err(|e| anyhow::anyhow!("CAIRN_SMTP_REPLY_TO: {e}"))?;
        }
        Ok(())
    }

    /// The claim time-to-live.
    pub fn claim_ttl(&self) -> Duration {
        Duration::from_secs(self.claim_ttl_secs)
    }

    /// The longest wait for one step of the SMTP conversation.
    pub fn smtp_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_timeout_secs)
    }

    /// The longest a whole send may take.
    pub fn smtp_send_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_send_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> String {
        format!(
            "k1:{}",
            cairn_secrets::Keyring::generate_key_string().unwrap().as_str()
        )
    }

    #[test]
    fn defaults_are_valid_and_the_password_is_redacted() {
        let mut config = Config::for_tests("postgres://x/y", &keys());
        config.smtp_password = Some("hunter2-secret".into());
        config.validate().unwrap();
        let defaults = Config::parse_from(["notifier", "--keys", "k"]);
        assert_eq!(defaults.http_addr.port(), 8084);
        assert_eq!(defaults.grpc_addr.port(), 50054);
        assert_eq!(config.max_attempts, 8);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(!shown.contains(config.keys.expose_str()), "{shown}");
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let mut config = Config::for_tests("postgres://x/y", &keys());
        config.claim_ttl_secs = 60;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("CAIRN_NOTIFIER_CLAIM_TTL_SECS (60)"), "{error}");
        assert!(error.contains("CAIRN_SMTP_TIMEOUT_SECS (30)"), "{error}");
        config.claim_ttl_secs = 61;
        config.validate().unwrap();
        config.smtp_send_timeout_secs = 29;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("CAIRN_SMTP_SEND_TIMEOUT_SECS (29)"), "{error}");
        let mut config = Config::for_tests("postgres://x/y", &keys());
        config.smtp_from = "not an address".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("CAIRN_SMTP_FROM"), "{error}");
        let mut config = Config::for_tests("postgres://x/y", "nonsense");
        config.smtp_from = "a@b.c".into();
        assert!(config.validate().unwrap_err().to_string().contains("CAIRN_KEYS"));
    }
}
