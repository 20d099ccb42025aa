//! The actions service's settings: one typed struct, from `CAIRN_` environment variables or
//! flags, validated at start with errors that name the variable.

use cairn_secrets::SecretString;
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of an actions replica.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "actions",
    version,
    about = "Delivers Cairn's events to webhook targets, signed, in order, retried for days"
)]
pub struct Config {
    /// PostgreSQL holding the event store, the targets and the delivery records.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// NATS server (wake-ups only; the service works without it, only slower to react).
    #[arg(long, env = "CAIRN_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Encryption keys (the same as command-api's): `k1:<base64 32 bytes>[,k2:...][,active=k2]`.
    /// They seal the targets' signing secrets and open the personal data in event payloads.
    #[arg(long, env = "CAIRN_KEYS", hide_env_values = true)]
    pub keys: SecretString,
    /// HTTP listen address for /healthz, /readyz, /metrics. Port 0 picks a free port.
    #[arg(long, env = "CAIRN_ACTIONS_HTTP_ADDR", default_value = "0.0.0.0:8085")]
    pub http_addr: SocketAddr,
    /// gRPC listen address of `cairn.action.v1.ActionService`.
    #[arg(long, env = "CAIRN_ACTIONS_GRPC_ADDR", default_value = "0.0.0.0:50055")]
    pub grpc_addr: SocketAddr,
    /// The JetStream stream the relay publishes to.
    #[arg(long, env = "CAIRN_STREAM_NAME", default_value = "CAIRN_EVENTS")]
    pub stream_name: String,
    /// Its subject prefix.
    #[arg(long, env = "CAIRN_STREAM_SUBJECT_PREFIX", default_value = "cairn.events")]
    pub subject_prefix: String,
    /// Lease time-to-live of the intake (the `actions` projection), in seconds.
    #[arg(long, env = "CAIRN_ACTIONS_LEASE_TTL_SECS", default_value_t = 5)]
    pub lease_ttl_secs: u64,
    /// How often an idle intake worker checks the event log anyway, in milliseconds.
    #[arg(long, env = "CAIRN_ACTIONS_HEAD_CHECK_MS", default_value_t = 2000)]
    pub head_check_ms: u64,
    /// Calls in flight at once from this replica, over every target.
    #[arg(long, env = "CAIRN_ACTIONS_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Calls in flight at once to one target from this replica (each replica counts its own, so
    /// with n replicas a target may see up to n times this many): a slow target holds at most
    /// this many of a replica's slots.
    #[arg(long, env = "CAIRN_ACTIONS_TARGET_CONCURRENCY", default_value_t = 16)]
    pub target_concurrency: u32,
    /// How long a claim on a delivery lasts before another replica may take it over, in seconds;
    /// more than the longest target timeout (60 s).
    #[arg(long, env = "CAIRN_ACTIONS_CLAIM_TTL_SECS", default_value_t = 90)]
    pub claim_ttl_secs: u64,
    /// How often an idle dispatcher looks for due deliveries anyway, in milliseconds.
    #[arg(long, env = "CAIRN_ACTIONS_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// Hosts (names or addresses, comma-separated) that targets may reach although they are or
    /// resolve to loopback, private or link-local addresses. Empty: none.
    #[arg(
        long,
        env = "CAIRN_ACTIONS_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_hosts: Vec<String>,
    /// A target whose every call has failed for this long is disabled (and an
    /// `action.target.disabled` event recorded), in seconds; default five days.
    #[arg(long, env = "CAIRN_ACTIONS_FAILURE_PERIOD_SECS", default_value_t = 5 * 24 * 3600)]
    pub failure_period_secs: u64,
    /// Multiplies every delay of the retry schedule (1 = the Svix schedule: 5 s, 5 min, 30 min,
    /// 2 h, 5 h, 10 h, 10 h). For drills and tests only.
    #[arg(long, env = "CAIRN_ACTIONS_RETRY_SCALE", default_value_t = 1.0)]
    pub retry_scale: f64,
}

impl Config {
    /// Settings with every default, the given database and keys, free loopback ports and
    /// loopback allowed, for tests and benchmarks.
    pub fn for_tests(database_url: &str, keys: &str) -> Self {
        let mut config = Self::parse_from(["actions", "--keys", keys]);
        config.database_url = database_url.to_owned();
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.allowed_hosts = vec!["127.0.0.1".into(), "localhost".into()];
        config.head_check_ms = 200;
        config
    }

    /// Checks the settings; errors name the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        cairn_secrets::Keyring::parse(self.keys.expose_str())
            .map_err(|e| anyhow::anyhow!("CAIRN_KEYS: {e}"))?;
        anyhow::ensure!(
            self.lease_ttl_secs >= 1,
            "CAIRN_ACTIONS_LEASE_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.concurrency),
            "CAIRN_ACTIONS_CONCURRENCY must be between 1 and 1024"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.target_concurrency),
            "CAIRN_ACTIONS_TARGET_CONCURRENCY must be between 1 and 1024"
        );
        anyhow::ensure!(
            self.claim_ttl_secs > 60,
            "CAIRN_ACTIONS_CLAIM_TTL_SECS ({}) must be more than 60, the longest target timeout",
            self.claim_ttl_secs
        );
        anyhow::ensure!(self.poll_ms >= 1, "CAIRN_ACTIONS_POLL_MS must be at least 1");
        anyhow::ensure!(
            self.failure_period_secs >= 60,
            "CAIRN_ACTIONS_FAILURE_PERIOD_SECS must be at least 60"
        );
        anyhow::ensure!(
            self.retry_scale > 0.0 && self.retry_scale <= 1.0,
            "CAIRN_ACTIONS_RETRY_SCALE must be more than 0 and at most 1"
        );
        Ok(())
    }

    /// The claim time-to-live.
    pub fn claim_ttl(&self) -> Duration {
        Duration::from_secs(self.claim_ttl_secs)
    }

    /// The failure period.
    pub fn failure_period(&self) -> Duration {
        Duration::from_secs(self.failure_period_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_secret_free_and_bad_values_name_their_variable() {
        let keys = format!(
            "k1:{}",
            cairn_secrets::Keyring::generate_key_string().unwrap().as_str()
        );
        let mut config = Config::for_tests("postgres://x/y", &keys);
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains(keys.as_str()));
        let defaults = Config::parse_from(["actions", "--keys", "k"]);
        assert_eq!(
            (defaults.http_addr.port(), defaults.grpc_addr.port()),
            (8085, 50055)
        );
        assert!(defaults.allowed_hosts.iter().all(|h| h.is_empty()));
        assert_eq!(defaults.failure_period_secs, 432_000);
        config.claim_ttl_secs = 30;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("CAIRN_ACTIONS_CLAIM_TTL_SECS (30)")
        );
    }
}
