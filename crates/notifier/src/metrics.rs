//! The notifier's own counters, gauges and histogram, registered on its `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Counters and gauges of a notifier replica (exported on `/metrics`).
#[derive(Clone, Debug)]
pub struct NotifierMetrics {
    /// Messages the SMTP server accepted.
    pub sent: Counter,
    /// Deliveries recorded as failed (permanent failure or attempts exhausted).
    pub failed: Counter,
    /// Transient failures that were scheduled for another attempt.
    pub retries: Counter,
    /// Deliveries skipped (superseded, expired, ...).
    pub skipped: Counter,
    /// Sends abandoned before `DATA` because another sender had taken the delivery over.
    pub claims_lost: Counter,
    /// Deliveries pending or being sent, across replicas.
    pub queue_depth: Gauge,
    /// Seconds from the event's commit to the SMTP server's acceptance.
    pub event_to_accept: Histogram,
}

impl Default for NotifierMetrics {
    fn default() -> Self {
        Self {
            sent: Counter::default(),
            failed: Counter::default(),
            retries: Counter::default(),
            skipped: Counter::default(),
            claims_lost: Counter::default(),
            queue_depth: Gauge::default(),
            event_to_accept: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
        }
    }
}

impl NotifierMetrics {
    /// Registers every metric under `cairn_notifier_*`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "cairn_notifier_sent",
            "Messages accepted by the SMTP server",
            self.sent.clone(),
        );
        registry.register(
            "cairn_notifier_failed",
            "Deliveries recorded as failed",
            self.failed.clone(),
        );
        registry.register(
            "cairn_notifier_retries",
            "Transient failures scheduled for another attempt",
            self.retries.clone(),
        );
        registry.register(
            "cairn_notifier_skipped",
            "Deliveries skipped because the code was superseded, voided, verified or expired",
            self.skipped.clone(),
        );
        registry.register(
            "cairn_notifier_claims_lost",
            "Sends abandoned before DATA because another sender had taken the delivery over",
            self.claims_lost.clone(),
        );
        registry.register(
            "cairn_notifier_queue_depth",
            "Deliveries pending or being sent",
            self.queue_depth.clone(),
        );
        registry.register(
            "cairn_notifier_event_to_accept_seconds",
            "Time from the event's commit to the SMTP server accepting the message",
            self.event_to_accept.clone(),
        );
    }
}
