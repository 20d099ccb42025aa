//! Operability shared by every Cairn service: structured logs and OpenTelemetry traces
//! ([`logging`]), the W3C trace context across processes ([`propagation`]), per-route request
//! spans and metrics ([`layer`]), the operations HTTP endpoints `/healthz`, `/readyz` and `/metrics`
//! ([`ops`]), and graceful shutdown on SIGTERM ([`shutdown`]).

pub mod layer;
pub mod logging;
pub mod ops;
pub mod propagation;
pub mod shutdown;

pub use layer::RequestMetrics;
pub use logging::Telemetry;

pub use ops::{Readiness, Refresh, ops_router, ops_router_refreshing};
pub use prometheus_client;
