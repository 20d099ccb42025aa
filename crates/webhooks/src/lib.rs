//! Outbound calls to actions targets, shared by the `actions` service (event deliveries) and
//! command-api (request conditions).
//!
//! - [`secret`]: signing secrets (`whsec_` + base64), sealed at rest by the keyring.
//! - [`sign`]: Standard Webhooks signatures (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
//! - [`guard`]: the SSRF guard: which endpoints and addresses may be called.
//! - [`client`]: an HTTP/1.1 client that resolves a host itself, checks every address with the
//!   guard and connects only to a checked address (so DNS rebinding cannot slip past the check),
//!   with keep-alive connections per endpoint, a time limit per call and the first 2 KiB of the
//!   response kept.
//! - [`schedule`]: when to try again (the Svix schedule with jitter, `Retry-After`).

pub mod client;
pub mod guard;
pub mod schedule;
pub mod secret;
pub mod sign;

pub use client::{CallError, Client, Response};
pub use guard::{Endpoint, Guard, GuardError};
pub use secret::SigningSecret;

/// The PostgreSQL channel on which the `actions` projection announces, in the transaction that
/// changes them, that an instance's targets or executions changed (payload: the instance id);
/// command-api drops its cached request conditions of that instance.
pub const CONFIG_CHANNEL: &str = "cairn_action_config";
