//! The errors of the notifier's gRPC API: a small enum for its handlers, rendered through Cairn's
//! one error vocabulary (`cairn_error`), so a client sees the same codes, reasons and field
//! violations as from command-api.

use cairn_auth::AuthError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input in `field`; nothing was written.
    #[error("{field}: {description}")]
    Invalid {
        /// The request field.
        field: String,
        /// What is wrong with it.
        description: String,
    },
    /// No such resource in the caller's scope.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is valid but the resource's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The credentials do not allow this.
    #[error("{0}")]
    PermissionDenied(&'static str),
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
        Self::Invalid {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(reason) => Self::Unauthenticated(reason),
            AuthError::PermissionDenied(reason) => Self::PermissionDenied(reason),
            AuthError::Invalid { field, reason } => Self::invalid(field, reason),
            AuthError::Unavailable(cause) => cause.into(),
            AuthError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl ApiError {
    /// The error in Cairn's one vocabulary; every rendering goes through it.
    pub fn to_error(&self) -> cairn_error::Error {
        use cairn_error::{Code, Error};
        match self {
            Self::Invalid { field, description } => Error::invalid_field(field.clone(), description.clone()),
            Self::NotFound(what) => Error::not_found(what),
            Self::FailedPrecondition(message) => Error::new(Code::FailedPrecondition, message.clone()),
            Self::Unauthenticated(message) => Error::new(Code::Unauthenticated, *message),
            Self::PermissionDenied(message) => Error::new(Code::PermissionDenied, *message),
            Self::Unavailable(cause) => {
                tracing::error!(%cause, "request failed");
                Error::new(Code::Unavailable, self.to_string())
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                Error::new(Code::Internal, self.to_string())
            }
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.to_error().to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_argument_carries_its_field_violation() {
        let status = tonic::Status::from(ApiError::invalid("language", "must be a language tag"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "language: must be a language tag");
        let back = cairn_error::Error::from_status(&status);
        assert_eq!(back.violations[0].field, "language");
        assert_eq!(back.reason, "INVALID_ARGUMENT");
    }

    #[test]
    fn an_internal_cause_is_not_sent() {
        let status = tonic::Status::from(ApiError::Unavailable("connection refused by 10.0.0.1".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "service unavailable");
    }
}
