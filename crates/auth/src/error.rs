//! Why authentication, authorisation or a token operation failed. Services map these at their
//! edge (gRPC status, SCIM error, problem+json); the `Display` of a variant is safe to show a
//! client, and the cause of [`AuthError::Unavailable`] and [`AuthError::Internal`] is only for logs.

/// Why an auth operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, malformed, unknown, revoked or expired credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The credentials are valid but their roles do not allow the call.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// A value in the request is not acceptable (an unknown role, a token kind).
    #[error("{field}: {reason}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The token store could not be reached or failed; the source is the cause.
    #[error("service unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A bug, corrupted data or no randomness; the string is the cause, for logs.
    #[error("internal error")]
    Internal(String),
}

impl From<sqlx::Error> for AuthError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error)
    }
}

impl From<AuthError> for cairn_error::Error {
    fn from(error: AuthError) -> Self {
        use cairn_error::{Code, Error};
        match error {
            AuthError::Unauthenticated(reason) => Error::new(Code::Unauthenticated, reason),
            AuthError::PermissionDenied(reason) => Error::new(Code::PermissionDenied, reason),
            AuthError::Invalid { field, reason } => Error::invalid_field(field, reason),
            AuthError::Unavailable(cause) => Error::unavailable(cause),
            AuthError::Internal(cause) => Error::internal(cause),
        }
    }
}
