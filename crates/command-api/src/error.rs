//! One error type for the API, mapped once to a gRPC status (with `google.rpc.BadRequest` field
//! violations for invalid arguments) and once to `application/problem+json`. A caller's mistake is
//! never `INTERNAL`; internal causes are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_domain::{DomainError, FieldViolation};
use cairn_eventstore::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; nothing was written.
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    /// No such resource in the caller's scope.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique value is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource changed since the caller read it.
    #[error("{0}")]
    Aborted(String),
    /// The command's transaction took its position before another transaction changed one of its
    /// aggregates: it must run again from the start in a new transaction (`Executor::run` does
    /// that). Reaches a client as `ABORTED` only when the restarts run out.
    #[error("{0}")]
    Restart(String),
    /// The request is valid but the resource's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The credentials do not allow this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The read models did not catch up in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A dependency failed; the cause is logged.
    #[error("service unavailable")]
    Unavailable(String),
    /// A bug or corrupted data; the cause is logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// One field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    fn message(&self) -> String {
        match self {
            Self::Invalid(violations) => violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; "),
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(%cause, kind = ?std::mem::discriminant(self), "request failed");
                self.to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(violations) => Self::Invalid(violations),
            DomainError::NotFound => Self::NotFound("resource"),
            DomainError::AlreadyExists { what } => Self::AlreadyExists(format!("{what} already exists")),
            DomainError::FailedPrecondition(message) => Self::FailedPrecondition(message),
            DomainError::Corrupt(cause) => Self::Internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid { field, reason } => Self::invalid(field, reason),
            StoreError::Conflict { .. } => {
                Self::Aborted("the resource was changed concurrently; read it again and retry".into())
            }
            StoreError::TransactionTooOld { .. } => {
                Self::Restart("the resource was changed concurrently; retry".into())
            }
            StoreError::UniqueViolation { unique_type, .. } => {
                Self::AlreadyExists(match unique_type.as_str() {
                    cairn_domain::UNIQUE_USERNAME => "a user with this userName already exists".into(),
                    cairn_domain::UNIQUE_GROUP_DISPLAY_NAME => {
                        "a group with this displayName already exists".into()
                    }
                    cairn_domain::UNIQUE_ORG_NAME => "an organisation with this name already exists".into(),
                    cairn_domain::UNIQUE_ORG_DOMAIN => {
                        "this domain is already verified by an organisation".into()
                    }
                    cairn_domain::UNIQUE_INSTANCE_DOMAIN => {
                        "this domain belongs to an instance already".into()
                    }
                    other => format!("{other} is already taken"),
                })
            }
            StoreError::Unavailable(cause) => Self::Unavailable(cause.to_string()),
        }
    }
}

impl From<cairn_auth::AuthError> for ApiError {
    fn from(error: cairn_auth::AuthError) -> Self {
        use cairn_auth::AuthError;
        match error {
            AuthError::Unauthenticated(reason) => Self::Unauthenticated(reason),
            AuthError::PermissionDenied(reason) => Self::PermissionDenied(reason),
            AuthError::Invalid { field, reason } => Self::invalid(field, reason),
            AuthError::Unavailable(cause) => cause.into(),
            AuthError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<cairn_personal::PersonalError> for ApiError {
    fn from(error: cairn_personal::PersonalError) -> Self {
        match error {
            cairn_personal::PersonalError::Erased(_) => Self::NotFound("user"),
            cairn_personal::PersonalError::Database(e) => e.into(),
            // A key that does not open is a configuration fault (a keyring key removed too early)
            // or tampering: logged with the cause, never shown.
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<cairn_readmodel::WaitError> for ApiError {
    fn from(error: cairn_readmodel::WaitError) -> Self {
        match error {
            cairn_readmodel::WaitError::Timeout { .. } => Self::DeadlineExceeded(error.to_string()),
            cairn_readmodel::WaitError::Database(e) => e.into(),
        }
    }
}

impl ApiError {
    /// The error in Cairn's one vocabulary ([`cairn_error::Error`]): the code, a stable reason,
    /// the message and the field violations. Every rendering (gRPC, problem+json) goes through it.
    pub fn to_error(&self) -> cairn_error::Error {
        use cairn_error::{Code, Error, Violation};
        let message = self.message();
        match self {
            Self::Invalid(violations) => Error::invalid(
                violations
                    .iter()
                    .map(|v| Violation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect(),
            ),
            Self::NotFound(what) => Error::not_found(what),
            Self::Restart(_) => {
                Error::new(Code::Conflict, message).with_reason("CONCURRENT_CHANGE_RETRIES_EXHAUSTED")
            }
            other => Error::new(other.code(), message),
        }
    }

    /// The kind of failure.
    pub fn code(&self) -> cairn_error::Code {
        use cairn_error::Code;
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Aborted(_) | Self::Restart(_) => Code::Conflict,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.to_error().to_status()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_error().into_response()
    }
}
