//! The `eventstore` service's configuration: defaults, overridden by `CAIRN_`-prefixed environment
//! variables, overridden by command-line flags. Validated at start; errors name the variable.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of the `eventstore` service.
#[derive(Parser, Clone)]
#[command(
    name = "eventstore",
    version,
    about = "Publishes committed events to NATS JetStream and serves the gRPC event API"
)]
pub struct Config {
    /// PostgreSQL holding the event store.
    #[arg(
        long,
        env = "CAIRN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/cairn"
    )]
    pub database_url: String,
    /// NATS server with JetStream.
    #[arg(long, env = "CAIRN_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// gRPC listen address.
    #[arg(long, env = "CAIRN_EVENTSTORE_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for /healthz, /readyz, /metrics.
    #[arg(long, env = "CAIRN_EVENTSTORE_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,
    /// Bearer token that gRPC callers must present (a service token; at least 32 characters).
    #[arg(long, env = "CAIRN_EVENTSTORE_TOKEN", hide_env_values = true)]
    pub service_token: String,
    /// The JetStream stream.
    #[arg(long, env = "CAIRN_STREAM_NAME", default_value = "CAIRN_EVENTS")]
    pub stream_name: String,
    /// Subject prefix: events go to `<prefix>.<instance>.<aggregate_type>.<event_type>`.
    #[arg(long, env = "CAIRN_STREAM_SUBJECT_PREFIX", default_value = "cairn.events")]
    pub subject_prefix: String,
    /// How long the stream keeps events, in hours (consumers can always catch up from PostgreSQL).
    #[arg(long, env = "CAIRN_STREAM_MAX_AGE_HOURS", default_value_t = 168)]
    pub stream_max_age_hours: u64,
    /// JetStream's de-duplication window in seconds (at least 120).
    #[arg(long, env = "CAIRN_STREAM_DUPLICATE_WINDOW_SECS", default_value_t = 120)]
    pub duplicate_window_secs: u64,
    /// Relay lease time-to-live in seconds; a standby takes over this long after the leader dies.
    #[arg(long, env = "CAIRN_RELAY_LEASE_TTL_SECS", default_value_t = 5)]
    pub relay_lease_ttl_secs: u64,
    /// Events per publish batch.
    #[arg(long, env = "CAIRN_RELAY_BATCH", default_value_t = 1000)]
    pub relay_batch: u32,
    /// Fallback poll interval in milliseconds, for when a commit notification is lost.
    #[arg(long, env = "CAIRN_RELAY_POLL_MS", default_value_t = 1000)]
    pub relay_poll_ms: u64,
}

impl Config {
    /// Checks the settings; the error names the variable to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.service_token.len() >= 32,
            "CAIRN_EVENTSTORE_TOKEN must be at least 32 characters"
        );
        anyhow::ensure!(
            self.duplicate_window_secs >= 120,
            "CAIRN_STREAM_DUPLICATE_WINDOW_SECS must be at least 120"
        );
        anyhow::ensure!(
            self.relay_lease_ttl_secs >= 1,
            "CAIRN_RELAY_LEASE_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.relay_batch),
            "CAIRN_RELAY_BATCH must be between 1 and 10000"
        );
        anyhow::ensure!(
            !self.subject_prefix.is_empty() && !self.subject_prefix.contains(['*', '>', ' ']),
            "CAIRN_STREAM_SUBJECT_PREFIX must be a plain subject"
        );
        Ok(())
    }

    /// The relay's part of the settings.
    pub fn relay(&self) -> crate::relay::RelayConfig {
        crate::relay::RelayConfig {
            stream_name: self.stream_name.clone(),
            subject_prefix: self.subject_prefix.clone(),
            max_age: Duration::from_secs(self.stream_max_age_hours * 3600),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            lease_ttl: Duration::from_secs(self.relay_lease_ttl_secs),
            batch: self.relay_batch,
            fallback_poll: Duration::from_millis(self.relay_poll_ms),
            abort_after_publishes: None,
        }
    }
}
