//! The three renderings of an [`Error`], one function each.

use crate::{Code, DOMAIN, Error, ScimError, ScimType, Violation};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use tonic_types::{ErrorDetails, StatusExt};

impl Error {
    /// The gRPC status: the code, the message, `ErrorInfo` (reason, domain `cairn`) and, for bad
    /// input, `BadRequest` with a violation per field.
    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::with_error_info(
            self.reason.to_string(),
            DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        );
        for violation in &self.violations {
            details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
        }
        tonic::Status::with_error_details(self.code.grpc(), self.message.clone(), details)
    }

    /// Reads a status another Cairn service sent (or any gRPC status): its reason and field
    /// violations when it carries them, the code's default reason otherwise.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let code = Code::from_grpc(status.code());
        let reason = details
            .error_info()
            .filter(|info| info.domain == DOMAIN)
            .map_or(Cow::Borrowed(code.default_reason()), |info| {
                Cow::Owned(info.reason.clone())
            });
        let violations = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| Violation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            code,
            reason,
            message: status.message().to_owned(),
            violations,
            scim_type: None,
        }
    }

    /// The SCIM error (RFC 7644 §3.12). `pinned`: the client sent `If-Match`, so a concurrent
    /// change is `412 Precondition Failed` rather than `409 Conflict`.
    pub fn to_scim(&self, pinned: bool) -> ScimError {
        let (status, default_type) = match self.code {
            Code::InvalidArgument => (400, Some(ScimType::InvalidValue)),
            Code::NotFound => (404, None),
            Code::AlreadyExists => (409, Some(ScimType::Uniqueness)),
            Code::Conflict if pinned => (412, None),
            Code::Conflict | Code::FailedPrecondition => (409, None),
            Code::Unauthenticated => (401, None),
            Code::PermissionDenied => (403, None),
            Code::DeadlineExceeded | Code::Unavailable => (503, None),
            Code::TooLarge => (413, None),
            Code::UnsupportedMediaType => (415, None),
            Code::Unimplemented => (501, None),
            Code::Internal => (500, None),
        };
        ScimError::new(status, self.scim_type.or(default_type), self.message.clone())
    }

    /// The `application/problem+json` body (RFC 9457) with `reason` and `invalid_params`.
    pub fn problem(&self) -> serde_json::Value {
        let status = self.code.http();
        let title = axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": self.message,
            "reason": self.reason,
        });
        if !self.violations.is_empty() {
            body["invalid_params"] = self
                .violations
                .iter()
                .map(|v| serde_json::json!({ "name": v.field, "reason": v.description }))
                .collect();
        }
        body
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.to_status()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = axum::http::StatusCode::from_u16(self.code.http())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.problem().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if self.code == Code::Unauthenticated {
            headers.insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
