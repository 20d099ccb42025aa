//! Operability shared by every Cairn service: structured logs ([`logging`]), the operations HTTP
//! endpoints `/healthz`, `/readyz` and `/metrics` ([`ops`]), and graceful shutdown on SIGTERM
//! ([`shutdown`]).

pub mod logging;
pub mod ops;
pub mod shutdown;

pub use ops::{Readiness, ops_router};
pub use prometheus_client;
