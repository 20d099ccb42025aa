//! The actions service's own counters, gauges and histogram, registered on its `/metrics`.

use crate::deliveries::Attempted;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Counters and gauges of an actions replica (exported on `/metrics`).
#[derive(Clone, Debug)]
pub struct ActionsMetrics {
    /// Attempts that got a 2xx answer.
    pub delivered: Counter,
    /// Attempts that failed (no answer, or not a 2xx).
    pub failed_attempts: Counter,
    /// Targets this replica disabled (410, or failing for the failure period).
    pub disabled: Counter,
    /// Deliveries waiting or in flight, across replicas.
    pub queue_depth: Gauge,
    /// Seconds one call took.
    pub call_seconds: Histogram,
}

impl Default for ActionsMetrics {
    fn default() -> Self {
        Self {
            delivered: Counter::default(),
            failed_attempts: Counter::default(),
            disabled: Counter::default(),
            queue_depth: Gauge::default(),
            call_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl ActionsMetrics {
    /// Counts one attempt.
    pub fn observe(&self, attempted: &Attempted) {
        if attempted.error.is_none() {
            self.delivered.inc();
        } else {
            self.failed_attempts.inc();
        }
        self.call_seconds.observe(attempted.latency.as_secs_f64());
    }

    /// Registers every metric under `cairn_actions_*`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "cairn_actions_delivered",
            "Calls answered with a 2xx status",
            self.delivered.clone(),
        );
        registry.register(
            "cairn_actions_failed_attempts",
            "Calls that failed (no answer, or not a 2xx status)",
            self.failed_attempts.clone(),
        );
        registry.register(
            "cairn_actions_targets_disabled",
            "Targets disabled by this replica (410 Gone, or failing for the failure period)",
            self.disabled.clone(),
        );
        registry.register(
            "cairn_actions_queue_depth",
            "Deliveries waiting or in flight",
            self.queue_depth.clone(),
        );
        registry.register(
            "cairn_actions_call_seconds",
            "Time one call to a target took",
            self.call_seconds.clone(),
        );
    }
}
