//! The relay's Prometheus metrics.

use cairn_telemetry::prometheus_client::metrics::counter::Counter;
use cairn_telemetry::prometheus_client::metrics::gauge::Gauge;
use cairn_telemetry::prometheus_client::registry::Registry;

/// Counters and gauges the relay updates.
#[derive(Clone, Default, Debug)]
pub struct RelayMetrics {
    /// Events acknowledged by JetStream.
    pub published: Counter,
    /// Publish attempts that failed (the relay resumes from its cursor).
    pub publish_errors: Counter,
    /// Events committed but not yet published.
    pub lag_events: Gauge,
    /// Age of the oldest unpublished event, in milliseconds.
    pub lag_ms: Gauge,
    /// The durable cursor's transaction position.
    pub cursor_position: Gauge,
    /// 1 while this replica holds the relay lease.
    pub leader: Gauge,
    /// The stream sequence the next publish is fenced on (the stream's last sequence).
    pub stream_sequence: Gauge,
    /// Times reconciliation found the stream behind the recorded stream sequence: the stream lost
    /// acknowledged messages, or was deleted and recreated. Each one is also logged as an error.
    pub stream_regressions: Counter,
}

impl RelayMetrics {
    /// Registers every metric under `cairn_relay_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cairn_relay_published",
            "Events acknowledged by JetStream",
            self.published.clone(),
        );
        registry.register(
            "cairn_relay_publish_errors",
            "Failed publish attempts",
            self.publish_errors.clone(),
        );
        registry.register(
            "cairn_relay_lag_events",
            "Committed events not yet published",
            self.lag_events.clone(),
        );
        registry.register(
            "cairn_relay_lag_milliseconds",
            "Age of the oldest unpublished event",
            self.lag_ms.clone(),
        );
        registry.register(
            "cairn_relay_cursor_position",
            "Transaction position of the relay cursor",
            self.cursor_position.clone(),
        );
        registry.register(
            "cairn_relay_leader",
            "1 while this replica holds the relay lease",
            self.leader.clone(),
        );
        registry.register(
            "cairn_relay_stream_sequence",
            "Stream sequence the next publish expects as the stream's last",
            self.stream_sequence.clone(),
        );
        registry.register(
            "cairn_relay_stream_regressions",
            "Times the stream was found behind the recorded stream sequence (lost acknowledged messages, or deleted and recreated)",
            self.stream_regressions.clone(),
        );
    }
}
