//! Cairn's one error vocabulary. Every service error becomes an [`Error`]: a [`Code`] (what kind
//! of failure, decided once), a stable machine-readable reason (`USER_NOT_FOUND`,
//! `IDEMPOTENCY_KEY_REUSED`; SCREAMING_SNAKE_CASE, at most 63 characters, never changed once
//! published), a message for people, and field violations for bad input. It is rendered in each
//! protocol's own form by exactly one function each:
//!
//! - gRPC ([`Error::to_status`]): the code's `tonic::Code`, the message, and rich details —
//!   `google.rpc.ErrorInfo` (reason, domain `cairn`) and `google.rpc.BadRequest` field violations;
//!   [`Error::from_status`] reads them back (the SCIM gateway calls command-api over gRPC);
//! - HTTP ([`Error::into_response`] via axum's `IntoResponse`): `application/problem+json` with
//!   `status`, `title`, `detail`, the `reason` and `invalid_params`;
//! - SCIM ([`Error::to_scim`]): the RFC 7644 status and `scimType`.
//!
//! Internal causes are logged by whoever builds the error, never sent: [`Error::internal`] and
//! [`Error::unavailable`] take the cause only to log it.

mod render;

use std::borrow::Cow;

pub use cairn_scim::{ScimError, ScimType};

/// The domain of every `ErrorInfo` Cairn sends.
pub const DOMAIN: &str = "cairn";

/// What kind of failure, independent of protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Bad input; nothing was changed.
    InvalidArgument,
    /// No such resource in the caller's scope (another tenant's resource looks the same).
    NotFound,
    /// A unique value is taken, or a resource with the chosen id exists.
    AlreadyExists,
    /// The resource changed concurrently (a stale version); read it again and retry.
    Conflict,
    /// The resource's state does not allow the request.
    FailedPrecondition,
    /// No or bad credentials.
    Unauthenticated,
    /// The credentials do not allow this.
    PermissionDenied,
    /// A bounded wait ran out (a read model did not catch up in time).
    DeadlineExceeded,
    /// A dependency is unavailable; retry later.
    Unavailable,
    /// The request is larger than allowed.
    TooLarge,
    /// The request's media type is not supported.
    UnsupportedMediaType,
    /// The endpoint or operation exists in the protocol but this server does not offer it.
    Unimplemented,
    /// A bug or corrupted data.
    Internal,
}

impl Code {
    /// The gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Code::InvalidArgument | Code::UnsupportedMediaType => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::Conflict => tonic::Code::Aborted,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::TooLarge => tonic::Code::ResourceExhausted,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status of a REST (problem+json) answer.
    pub fn http(self) -> u16 {
        match self {
            Code::InvalidArgument => 400,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Conflict => 409,
            Code::FailedPrecondition => 422,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::DeadlineExceeded | Code::Unavailable => 503,
            Code::TooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::Unimplemented => 501,
            Code::Internal => 500,
        }
    }

    /// The reason used when the error names no more specific one.
    pub fn default_reason(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::Conflict => "CONCURRENT_CHANGE",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::DeadlineExceeded => "READ_MODEL_NOT_CAUGHT_UP",
            Code::Unavailable => "UNAVAILABLE",
            Code::TooLarge => "TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
        }
    }

    fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::Aborted => Code::Conflict,
            tonic::Code::FailedPrecondition => Code::FailedPrecondition,
            tonic::Code::Unauthenticated => Code::Unauthenticated,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted => Code::TooLarge,
            tonic::Code::Unimplemented => Code::Unimplemented,
            tonic::Code::Internal | tonic::Code::DataLoss => Code::Internal,
            _ => Code::Unavailable,
        }
    }
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path (`profile.emails[0].value`, `idempotency-key`, `filter`).
    pub field: String,
    /// Why it was refused.
    pub description: String,
}

/// An error as every protocol sees it. See the [crate documentation](crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The kind of failure.
    pub code: Code,
    /// The stable reason.
    pub reason: Cow<'static, str>,
    /// For people; never internals.
    pub message: String,
    /// Bad fields (for [`Code::InvalidArgument`]).
    pub violations: Vec<Violation>,
    /// The SCIM keyword, where one applies (`uniqueness`, `invalidFilter`, ...).
    pub scim_type: Option<ScimType>,
}

impl Error {
    /// An error with the code's default reason.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(code.default_reason()),
            message: message.into(),
            violations: Vec::new(),
            scim_type: None,
        }
    }

    /// The same error with a more specific stable reason.
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The same error with a SCIM keyword.
    pub fn with_scim_type(mut self, scim_type: ScimType) -> Self {
        self.scim_type = Some(scim_type);
        self
    }

    /// Bad input: one violation per field; the message lists them.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        let message = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            violations,
            ..Self::new(Code::InvalidArgument, message)
        }
    }

    /// Bad input in one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// A missing resource: reason `<WHAT>_NOT_FOUND` (`user` → `USER_NOT_FOUND`).
    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found")).with_reason(reason_of(what, "NOT_FOUND"))
    }

    /// A dependency failed: `cause` is logged, the client reads a generic message.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "dependency unavailable");
        Self::new(Code::Unavailable, "the service is unavailable; retry later")
    }

    /// A bug or corrupted data: `cause` is logged, the client reads a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(Code::Internal, "internal error")
    }
}

/// `user`, `NOT_FOUND` → `USER_NOT_FOUND`: upper case, anything but letters and digits as `_`.
pub fn reason_of(what: &str, suffix: &str) -> String {
    let mut reason: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    reason.push('_');
    reason.push_str(suffix);
    reason.truncate(63);
    reason
}

#[cfg(test)]
mod tests;
