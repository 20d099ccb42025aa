//! What a command can be refused with. The variants carry meaning, not transport codes: each API
//! maps them once (gRPC `INVALID_ARGUMENT` / `NOT_FOUND` / `ALREADY_EXISTS` / `FAILED_PRECONDITION`,
//! SCIM `400` / `404` / `409`). Authentication and concurrency are not domain concerns; a taken
//! unique value is detected by the store in the push's transaction.

use std::fmt;

/// One rejected input field, named by its path in the command (`user_name`, `emails[1].value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The path of the field, e.g. `emails[1].value`.
    pub field: String,
    /// Why it was rejected, in words a client can show.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Why the domain refused a command (or could not fold an event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command's input was malformed; every offending field is listed.
    #[error("invalid argument: {}", join(.0))]
    Invalid(Vec<FieldViolation>),
    /// The aggregate (or the entity inside it, such as a token) does not exist or was removed.
    #[error("not found")]
    NotFound,
    /// The thing to create exists already (an aggregate id, an organisation domain, a token id).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `user` or `domain`.
        what: String,
    },
    /// The command is well-formed but not allowed in the aggregate's current state.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A stored event could not be folded: its payload does not parse, it belongs to another
    /// aggregate type, or its sequence does not follow the state's. This is a bug or corrupt data,
    /// never a client error; it maps to an internal error.
    #[error("corrupt aggregate: {0}")]
    Corrupt(String),
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    /// An [`DomainError::Invalid`] with one violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    /// A [`DomainError::FailedPrecondition`].
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(message.into())
    }

    /// An [`DomainError::AlreadyExists`].
    pub fn already_exists(what: impl Into<String>) -> Self {
        Self::AlreadyExists { what: what.into() }
    }
}

/// Collects violations so that a command reports every bad field at once, not just the first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the violation of a parse result, if it failed, and returns the parsed value.
    pub fn check<T>(
        &mut self,
        field: impl Into<String>,
        parsed: Result<T, crate::InvalidValue>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(e) => {
                self.push(field, e.description);
                None
            }
        }
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` if nothing was recorded, else [`DomainError::Invalid`] with everything recorded.
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_every_field_in_its_message() {
        let mut v = Violations::new();
        assert!(v.is_empty());
        v.push("user_name", "must not be empty");
        v.push("emails[1].value", "is not an email address");
        let err = v.into_result().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument: user_name: must not be empty; emails[1].value: is not an email address"
        );
        assert_eq!(
            DomainError::invalid("a", "b"),
            DomainError::Invalid(vec![FieldViolation::new("a", "b")])
        );
        assert_eq!(Violations::new().into_result(), Ok(()));
    }
}
