//! One error type for the API, mapped once to a gRPC status (with `google.rpc.BadRequest` field
//! violations for invalid arguments) and once to `application/problem+json`. A caller's mistake is
//! never `INTERNAL`; internal causes are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_domain::{DomainError, FieldViolation};
use cairn_eventstore::StoreError;
use prost::Message;

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
                    other => format!("{other} is already taken"),
                })
            }
            StoreError::Unavailable(cause) => Self::Unavailable(cause.to_string()),
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

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
struct PbFieldViolation {
    #[prost(string, tag = "1")]
    field: String,
    #[prost(string, tag = "2")]
    description: String,
}

/// `google.rpc.BadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct PbBadRequest {
    #[prost(message, repeated, tag = "1")]
    field_violations: Vec<PbFieldViolation>,
}

/// `google.rpc.Status`, the payload of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct PbStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        use tonic::Code;
        let message = error.message();
        let code = match &error {
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Aborted(_) | ApiError::Restart(_) => Code::Aborted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        };
        if let ApiError::Invalid(violations) = &error {
            let bad_request = PbBadRequest {
                field_violations: violations
                    .iter()
                    .map(|v| PbFieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect(),
            };
            let status = PbStatus {
                code: code as i32,
                message: message.clone(),
                details: vec![prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                    value: bad_request.encode_to_vec(),
                }],
            };
            return tonic::Status::with_details(code, message, status.encode_to_vec().into());
        }
        tonic::Status::new(code, message)
    }
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AlreadyExists(_) => StatusCode::CONFLICT,
            Self::Aborted(_) | Self::Restart(_) => StatusCode::CONFLICT,
            Self::FailedPrecondition(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Self::DeadlineExceeded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": self.message(),
        });
        if let ApiError::Invalid(violations) = &self {
            body["invalid_params"] = violations
                .iter()
                .map(|v| serde_json::json!({ "name": v.field, "reason": v.description }))
                .collect();
        }
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
