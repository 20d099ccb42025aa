//! Values that parse, not validate: once a [`UserName`] or an [`EmailAddress`] exists it is
//! well-formed, so commands, events and read models never re-check it. Every type serialises as a
//! plain string and checks the rule again when deserialised, so a payload cannot smuggle in a value
//! the API would have refused.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value was refused; [`InvalidValue::at`] turns it into a field violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct InvalidValue {
    /// Why, in words a client can show.
    pub description: String,
}

impl InvalidValue {
    fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
        }
    }

    /// The refusal as a [`crate::DomainError::Invalid`] of `field`.
    pub fn at(self, field: impl Into<String>) -> crate::DomainError {
        crate::DomainError::invalid(field, self.description)
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks free text (a title, an address line): at most `max` characters, and no control
/// characters other than line breaks and tabs, which multi-line SCIM addresses carry.
pub(crate) fn check_text(value: &str, max: usize) -> Result<(), InvalidValue> {
    if value.chars().count() > max {
        return Err(InvalidValue::new(format!("must be at most {max} characters")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(InvalidValue::new("must not contain control characters"));
    }
    Ok(())
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $parse:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the value, refusing anything that breaks the type's rule.
            pub fn parse(value: impl AsRef<str>) -> Result<Self, InvalidValue> {
                $parse(value.as_ref()).map(Self)
            }

            /// The value as text.
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
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
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

macro_rules! plain_debug {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    )*};
}

string_value!(
    /// A login name: 1 to 256 characters after trimming, no control characters. The case a user
    /// typed is kept for display; uniqueness is decided on [`UserName::normalized`].
    UserName,
    parse_user_name
);
string_value!(
    /// An email address: one `@`, a non-empty local part, a domain with a dot (or `localhost`), no
    /// whitespace, at most 254 bytes. Deliberately simple: only delivery proves an address.
    EmailAddress,
    parse_email
);
string_value!(
    /// A human-readable name (a group's or a machine user's): 1 to 256 characters after trimming,
    /// no control characters.
    DisplayName,
    parse_display_name
);
string_value!(
    /// A telephone number, loosely E.164: an optional `+`, then digits, spaces, `-`, `(`, `)` or
    /// `.`; 3 to 32 characters with at least one digit. IdPs send many formats, so only junk is
    /// refused.
    PhoneNumber,
    parse_phone
);
string_value!(
    /// A preferred language as SCIM defines it (RFC 7643 §4.1.1: an HTTP `Accept-Language` value
    /// such as `de-CH` or `en-US;q=0.8, de`): 1 to 256 printable ASCII characters. Mail rendering
    /// reads the first language range from it.
    LanguageTag,
    parse_language_tag
);
string_value!(
    /// An organisation's DNS domain, lower-cased: dot-separated labels of letters, digits and
    /// inner hyphens, each 1 to 63 characters, 253 at most in total.
    DomainName,
    parse_domain_name
);
string_value!(
    /// A password hash in PHC string format (`$argon2id$...`). The hash is computed outside the
    /// domain; its `Debug` output is redacted so that it never reaches a log line.
    PasswordHash,
    parse_password_hash
);
plain_debug!(
    UserName,
    EmailAddress,
    DisplayName,
    PhoneNumber,
    LanguageTag,
    DomainName
);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl UserName {
    /// The lower-cased name: the value claimed under `user.username`, so `Alice` and `alice`
    /// cannot both exist in one instance.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl EmailAddress {
    /// The lower-cased address, for comparisons (verification keeps to one address, whatever its
    /// case).
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl DisplayName {
    /// The lower-cased name, for case-insensitive uniqueness.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

fn parse_name(value: &str, max: usize) -> Result<String, InvalidValue> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(InvalidValue::new("must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(InvalidValue::new(format!("must be at most {max} characters")));
    }
    if has_control(trimmed) {
        return Err(InvalidValue::new("must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

fn parse_user_name(value: &str) -> Result<String, InvalidValue> {
    parse_name(value, 256)
}

fn parse_display_name(value: &str) -> Result<String, InvalidValue> {
    parse_name(value, 256)
}

fn parse_email(value: &str) -> Result<String, InvalidValue> {
    let value = value.trim();
    let bad = || InvalidValue::new("must be an email address like name@example.com");
    if value.is_empty() {
        return Err(InvalidValue::new("must not be empty"));
    }
    if value.len() > 254 {
        return Err(InvalidValue::new("must be at most 254 bytes"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::new("must not contain whitespace"));
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.contains('@') {
        return Err(bad());
    }
    let domain_ok = domain.eq_ignore_ascii_case("localhost")
        || (domain.contains('.') && domain.split('.').all(|label| !label.is_empty()));
    if !domain_ok {
        return Err(bad());
    }
    Ok(value.to_owned())
}

fn parse_phone(value: &str) -> Result<String, InvalidValue> {
    let value = value.trim();
    let count = value.chars().count();
    if !(3..=32).contains(&count) {
        return Err(InvalidValue::new("must be 3 to 32 characters"));
    }
    let body = value.strip_prefix('+').unwrap_or(value);
    let allowed = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'));
    if !allowed || !body.chars().any(|c| c.is_ascii_digit()) {
        return Err(InvalidValue::new(
            "must be a phone number: an optional +, then digits, spaces, -, (, ) or .",
        ));
    }
    Ok(value.to_owned())
}

fn parse_language_tag(value: &str) -> Result<String, InvalidValue> {
    let value = value.trim();
    if value.is_empty() || value.len() > 256 {
        return Err(InvalidValue::new("must be 1 to 256 characters"));
    }
    if !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(InvalidValue::new(
            "must be a language range like en, de-CH or en-US;q=0.8, de",
        ));
    }
    Ok(value.to_owned())
}

fn parse_domain_name(value: &str) -> Result<String, InvalidValue> {
    let value = value.trim().trim_end_matches('.').to_ascii_lowercase();
    if value.is_empty() || value.len() > 253 {
        return Err(InvalidValue::new("must be 1 to 253 characters"));
    }
    let ok = value.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !ok {
        return Err(InvalidValue::new("must be a domain name like example.com"));
    }
    Ok(value)
}

fn parse_password_hash(value: &str) -> Result<String, InvalidValue> {
    if !value.starts_with('$') || value.len() > 1024 || value.len() < 2 {
        return Err(InvalidValue::new(
            "must be a PHC-format hash of at most 1024 bytes",
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::new("must not contain whitespace"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_keep_case_and_normalise_for_uniqueness() {
        let name = UserName::parse("  Alice.Smith@Example.com ").unwrap();
        assert_eq!(name.as_str(), "Alice.Smith@Example.com");
        assert_eq!(name.normalized(), "alice.smith@example.com");
        assert_eq!(UserName::parse("x".repeat(256)).unwrap().as_str().len(), 256);
        for bad in ["", "   ", "a\u{0}b", "tab\there"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse("x".repeat(257)).is_err());
        assert!(
            UserName::parse("ü".repeat(256)).is_ok(),
            "limit counts characters"
        );
    }

    #[test]
    fn email_addresses_need_a_real_shape() {
        for ok in ["a@example.com", "A.B+tag@sub.Example.org", "root@localhost"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b@c.com",
            "a b@example.com",
            "a@example",
            "a@.com",
            "a@example..com",
            "a@example.com.",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(243));
        assert!(EmailAddress::parse(long).is_err());
        assert_eq!(
            EmailAddress::parse("Bob@Example.COM").unwrap().normalized(),
            "bob@example.com"
        );
    }

    #[test]
    fn display_names_phones_and_language_tags() {
        assert_eq!(DisplayName::parse(" Sales ").unwrap().as_str(), "Sales");
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("a\u{7}").is_err());
        for ok in ["+41 44 668 18 00", "(555) 555-5555", "555.1234", "112"] {
            assert!(PhoneNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["12", "call me", "+", "---", &"1".repeat(33)] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
        for ok in ["en", "de-CH", "zh-Hant-TW", "es-419", "en-US;q=0.8, de"] {
            assert!(LanguageTag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "   ", "en\u{7}", "ünicode", &"x".repeat(257)] {
            assert!(LanguageTag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn domain_names_are_lower_cased_labels() {
        assert_eq!(DomainName::parse("Acme.COM.").unwrap().as_str(), "acme.com");
        assert!(DomainName::parse("xn--bcher-kva.example").is_ok());
        for bad in ["", "-acme.com", "acme-.com", "ac me.com", "a..b", &"a".repeat(64)] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_hashes_never_show_in_debug_output() {
        let hash = PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash(<redacted>)");
        assert!(PasswordHash::parse("plaintext").is_err());
        assert!(PasswordHash::parse("$").is_err());
    }

    #[test]
    fn values_serialise_as_strings_and_check_when_deserialised() {
        let email = EmailAddress::parse("a@example.com").unwrap();
        assert_eq!(serde_json::to_string(&email).unwrap(), "\"a@example.com\"");
        assert_eq!(
            serde_json::from_str::<EmailAddress>("\"a@example.com\"").unwrap(),
            email
        );
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
        assert!(serde_json::from_str::<UserName>("\"\"").is_err());
        assert!(serde_json::from_str::<LanguageTag>("\"en\\u0007\"").is_err());
    }

    #[test]
    fn free_text_allows_line_breaks_but_not_other_controls() {
        assert!(check_text("100 Universal City Plaza\nHollywood", 100).is_ok());
        assert!(check_text("bell\u{7}", 100).is_err());
        assert!(check_text("abcd", 3).is_err());
    }
}
