//! SCIM errors (RFC 7644 §3.12): an HTTP status, an optional `scimType` and a human-readable
//! detail. Every failure in this crate is one of these, so the gateway can render any of them as
//! the SCIM error body without a second mapping.

use serde_json::{Value, json};

/// The URN of the SCIM error message schema.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` detail error keywords of RFC 7644 §3.12, table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimType {
    /// The filter syntax was invalid, or the attribute and comparison combination is unsupported.
    InvalidFilter,
    /// The filter yields more results than the server is willing to return.
    TooMany,
    /// One or more unique attribute values are in use or reserved.
    Uniqueness,
    /// The modification is incompatible with an attribute's mutability or schema.
    Mutability,
    /// The request body structure was invalid or did not conform to the schema.
    InvalidSyntax,
    /// The `path` attribute was invalid or malformed.
    InvalidPath,
    /// The `path` did not yield an attribute or value that could be operated on.
    NoTarget,
    /// A required value was missing, or the value was not compatible with the attribute's type.
    InvalidValue,
    /// The specified SCIM protocol version is not supported.
    InvalidVers,
    /// The request cannot be completed because it carried sensitive information (e.g. in a URI).
    Sensitive,
}

impl ScimType {
    /// The keyword as it appears in the `scimType` member.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

impl std::fmt::Display for ScimType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SCIM error response: HTTP status, optional `scimType` and a detail message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SCIM error {status}{}: {detail}", scim_type.map(|t| format!(" ({t})")).unwrap_or_default())]
pub struct ScimError {
    /// The HTTP status code.
    pub status: u16,
    /// The SCIM detail error keyword, where one applies.
    pub scim_type: Option<ScimType>,
    /// A human-readable message; it names the offending attribute or token, never internals.
    pub detail: String,
}

impl ScimError {
    /// An error with any status and keyword.
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }

    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }

    /// 400 `tooMany`.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::TooMany, detail)
    }

    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }

    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }

    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }

    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }

    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }

    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }

    /// 400 `invalidVers`.
    pub fn invalid_vers(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidVers, detail)
    }

    /// 403 `sensitive` (RFC 7644 §3.12: sensitive information in a URI).
    pub fn sensitive(detail: impl Into<String>) -> Self {
        Self::new(403, Some(ScimType::Sensitive), detail)
    }

    /// 404 without a keyword.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    /// 412 without a keyword (an `If-Match` precondition failed).
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    /// 413 without a keyword (a bulk request beyond `maxOperations` or `maxPayloadSize`).
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(413, None, detail)
    }

    /// 401 without a keyword.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, None, detail)
    }

    /// 403 without a keyword.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, None, detail)
    }

    /// 405 without a keyword (for example a write to a discovery endpoint).
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(405, None, detail)
    }

    /// The RFC 7644 §3.12 body; `status` is a string as the RFC's examples show.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(obj)) = (self.scim_type, body.as_object_mut()) {
            obj.insert("scimType".to_owned(), Value::String(t.as_str().to_owned()));
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_follows_rfc7644_section_3_12() {
        let e = ScimError::invalid_filter("unexpected token");
        assert_eq!(
            e.to_json(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400",
                "scimType": "invalidFilter",
                "detail": "unexpected token"
            })
        );
    }

    #[test]
    fn errors_without_keyword_omit_scim_type() {
        let body = ScimError::not_found("Resource 42 not found").to_json();
        assert_eq!(body["status"], "404");
        assert!(body.get("scimType").is_none());
    }

    #[test]
    fn constructors_carry_rfc_statuses_and_keywords() {
        let cases = [
            (ScimError::too_many("x"), 400, Some("tooMany")),
            (ScimError::uniqueness("x"), 409, Some("uniqueness")),
            (ScimError::mutability("x"), 400, Some("mutability")),
            (ScimError::invalid_syntax("x"), 400, Some("invalidSyntax")),
            (ScimError::invalid_path("x"), 400, Some("invalidPath")),
            (ScimError::no_target("x"), 400, Some("noTarget")),
            (ScimError::invalid_value("x"), 400, Some("invalidValue")),
            (ScimError::invalid_vers("x"), 400, Some("invalidVers")),
            (ScimError::sensitive("x"), 403, Some("sensitive")),
            (ScimError::precondition_failed("x"), 412, None),
            (ScimError::payload_too_large("x"), 413, None),
            (ScimError::unauthorized("x"), 401, None),
            (ScimError::forbidden("x"), 403, None),
            (ScimError::method_not_allowed("x"), 405, None),
        ];
        for (e, status, kw) in cases {
            assert_eq!(e.status, status);
            assert_eq!(e.scim_type.map(ScimType::as_str), kw);
            assert_eq!(e.to_json()["status"], status.to_string());
        }
    }

    #[test]
    fn display_names_status_keyword_and_detail() {
        let e = ScimError::uniqueness("userName taken");
        assert_eq!(e.to_string(), "SCIM error 409 (uniqueness): userName taken");
    }
}
