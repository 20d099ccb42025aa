//! A wrapper that keeps a value out of logs: `Debug` and `Display` print `[redacted]`, so a
//! configuration struct holding secrets can derive `Debug` and be logged safely. It deliberately
//! has no `Serialize`, so a secret cannot be dumped by accident either; read it with
//! [`Redacted::expose`] at the one place that needs it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// What `Debug` and `Display` print instead of the value.
const REDACTED: &str = "[redacted]";

/// A value that never prints.
#[derive(Clone, Default)]
pub struct Redacted<T>(T);

/// A secret string from configuration (an SMTP password, a keyring), wiped from memory on drop.
pub type SecretString = Redacted<Zeroizing<String>>;

impl<T> Redacted<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Redacted(value)
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Redacted(value)
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Redacted(Zeroizing::new(value))
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Redacted(Zeroizing::new(value.to_owned()))
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    /// Lets command-line parsers (clap) read a secret straight into the wrapper.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.into())
    }
}

impl SecretString {
    /// The secret as a string slice.
    pub fn expose_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Redacted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Config {
        host: String,
        password: SecretString,
        port: Redacted<u16>,
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Redacted::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(secret.into_inner(), "hunter2");
    }

    #[test]
    fn a_config_with_secrets_can_be_logged() {
        let config: Config =
            serde_json::from_str(r#"{"host": "smtp.example.com", "password": "hunter2", "port": 587}"#)
                .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("smtp.example.com"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("587"), "{debug}");
        assert_eq!(config.host, "smtp.example.com");
        assert_eq!(config.password.expose_str(), "hunter2");
        assert_eq!(*config.port.expose(), 587);
    }

    #[test]
    fn secret_strings_parse_from_str() {
        let s: SecretString = "k1:abc".parse().unwrap();
        assert_eq!(s.expose_str(), "k1:abc");
        assert_eq!(SecretString::from(String::from("x")).expose_str(), "x");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
