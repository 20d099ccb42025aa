//! Aggregate and event type names. Both follow one rule: lower-case dotted words
//! (`user`, `user.human.email.code.added`), each word starting with a letter and made of `a-z`,
//! `0-9` and `_`. The rule keeps NATS subjects (`cairn.events.<instance>.<aggregate>.<event>`)
//! well-formed and makes typos fail at the edge instead of in a projection.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("must not be empty")]
    Empty,
    /// The name was longer than [`MAX_NAME_LEN`].
    #[error("must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    /// The name broke the lower-case dotted rule.
    #[error("must be lower-case dotted words (a-z, 0-9, _; each word starting with a letter), got {0:?}")]
    Malformed(String),
}

/// The longest accepted aggregate or event type name.
pub const MAX_NAME_LEN: usize = 128;

fn check_dotted(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    let ok = name.split('.').all(|word| {
        let mut chars = word.chars();
        matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    });
    if ok {
        Ok(())
    } else {
        Err(NameError::Malformed(name.chars().take(MAX_NAME_LEN).collect()))
    }
}

macro_rules! dotted_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a name, rejecting anything that breaks the lower-case dotted rule.
            pub fn parse(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_dotted(&name)?;
                Ok(Self(name))
            }

            /// A name known at compile time (the constants of the domain's event catalogue). The
            /// catalogue's tests parse every constant, so the rule still holds.
            pub(crate) fn from_static(name: &'static str) -> Self {
                debug_assert!(check_dotted(name).is_ok(), "{name:?} breaks the dotted rule");
                Self(name.to_owned())
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

dotted_name!(
    /// The type of an aggregate, such as `user` or `group`.
    AggregateType
);
dotted_name!(
    /// The type of an event, such as `user.human.added`.
    EventType
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lower_case_dotted_names() {
        for ok in [
            "user",
            "user.human.added",
            "user.human.email.code.added",
            "org2.added",
            "a_b.c",
        ] {
            assert!(EventType::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "User.added",
            "user..added",
            ".user",
            "user.",
            "user.1added",
            "user added",
            "user-added",
            "üser",
            "user.*",
            "user.>",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(AggregateType::parse("a".repeat(129)), Err(NameError::TooLong));
    }

    #[test]
    fn deserialising_checks_the_rule() {
        assert!(serde_json::from_str::<EventType>("\"user.added\"").is_ok());
        assert!(serde_json::from_str::<EventType>("\"User.Added\"").is_err());
    }
}
