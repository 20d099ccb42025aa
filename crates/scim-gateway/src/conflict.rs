//! Version conflicts of the writes the gateway forwards to command-api (guarantee 2).
//!
//! command-api pushes every command with the aggregate's sequence as the expected one and answers
//! `ABORTED` when another change came first. What the client gets depends on what it asked:
//!
//! - **With `If-Match`** the client named the version its write is based on; a conflict is `412`,
//!   at once, without retrying (the client must read again).
//! - **Without `If-Match`** the gateway resolves the conflict itself, at most [`ATTEMPTS`] times,
//!   and answers `409` only when the resource kept changing through all of them:
//!   - a write the gateway computed from what it read (a user PATCH, a group PATCH applied to the
//!     whole group) is pinned to the version it read, never sent unpinned. After a conflict the
//!     gateway waits until the read models reached the tenant's latest committed position (which
//!     includes the change that caused the conflict, since a conflict only comes from a committed
//!     event), reads again, applies the request again and sends the result pinned to the new
//!     version; no sleeping, the wait is [`crate::gateway::Gateway::consistent`];
//!   - a write that does not depend on what the gateway read (a PUT, whose body is the whole
//!     resource; a group PATCH read as a member delta) is sent again as it is.
//!
//! A write is never sent with a version the gateway did not read or the client did not name, so
//! no retry can overwrite a change nobody saw.

use crate::gateway::from_status;
use cairn_scim::ScimError;

/// How many times a write without `If-Match` is sent before a conflict is answered with `409`.
pub const ATTEMPTS: usize = 10;

/// What a write forwarded to command-api came to.
pub enum Sent<T> {
    /// It was written.
    Written(T),
    /// Another change came first (`ABORTED`); nothing was written.
    Conflict(String),
}

/// Keeps a version conflict apart from every other outcome; other errors become SCIM errors.
pub fn sent<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<Sent<T>, ScimError> {
    match result {
        Ok(response) => Ok(Sent::Written(response.into_inner())),
        Err(status) if status.code() == tonic::Code::Aborted => {
            Ok(Sent::Conflict(status.message().to_owned()))
        }
        Err(status) => Err(from_status(status, false)),
    }
}

/// Sends a write that does not depend on what the gateway read (a PUT) until it is written: at
/// once `412` after a conflict when the client named its version, else up to [`ATTEMPTS`] times,
/// then `409`.
pub async fn resend<T, F, Fut>(pinned: Option<i64>, mut send: F) -> Result<T, ScimError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Sent<T>, ScimError>>,
{
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match send().await? {
            Sent::Written(written) => return Ok(written),
            Sent::Conflict(detail) => last = again(pinned, detail)?,
        }
    }
    Err(kept_changing(&last))
}

/// After a conflict: with the client's version (`If-Match`), `412` at once; without, the detail
/// to remember while trying again.
pub fn again(pinned: Option<i64>, detail: String) -> Result<String, ScimError> {
    match pinned {
        Some(_) => Err(pinned_conflict(detail)),
        None => Ok(detail),
    }
}

/// The answer to a write whose `If-Match` names a version that is not the current one: `412`.
pub fn pinned_conflict(detail: impl Into<String>) -> ScimError {
    ScimError::precondition_failed(detail)
}

/// The answer when every attempt of a write without `If-Match` met a concurrent change.
pub fn kept_changing(last: &str) -> ScimError {
    cairn_error::Error::new(
        cairn_error::Code::Conflict,
        format!("the resource kept changing concurrently ({ATTEMPTS} attempts, the last: {last}); retry"),
    )
    .to_scim(false)
}

/// The version of a resource rendered by [`crate::query`], from `meta.version` (`W/"<n>"`).
pub fn version_of(resource: &serde_json::Value) -> Result<i64, ScimError> {
    resource["meta"]["version"]
        .as_str()
        .and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok())
        .ok_or_else(|| cairn_error::Error::internal("a read-model resource has no version").to_scim(false))
}
