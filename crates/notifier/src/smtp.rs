//! SMTP: an instance's settings (from `api.smtp_settings`, the password decrypted only in memory,
//! or the configured defaults), one pooled lettre transport per distinct settings, and the
//! classification of what the server said into accepted, transient and permanent.

use crate::config::{Config, TlsMode};
use cairn_secrets::{Keyring, Sealed, Zeroizing};
use chrono::{DateTime, Utc};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The SMTP settings that apply to one instance. `Debug` leaves the password out.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// User name for AUTH, if any.
    pub user: Option<String>,
    /// Password for AUTH (decrypted, in memory only).
    pub password: Option<Zeroizing<String>>,
    /// Sender address.
    pub from_address: String,
    /// Sender display name.
    pub from_name: Option<String>,
    /// Reply-To address.
    pub reply_to: Option<String>,
    /// Where the settings came from: the instance's row (with its change time) or the defaults.
    pub source: Source,
}

/// Where [`SmtpSettings`] came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `api.smtp_settings` of the instance, as changed at this time.
    Instance(Uuid, DateTime<Utc>),
    /// The notifier's configuration.
    Defaults,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("has_password", &self.password.is_some())
            .field("from_address", &self.from_address)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why settings could not be had. Transient: an operator can fix them while the delivery waits.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Neither the instance nor the configuration names an SMTP server.
    #[error("no SMTP settings for the instance and no CAIRN_SMTP_HOST default")]
    Missing,
    /// The stored settings are unusable.
    #[error("the instance's SMTP settings are invalid: {0}")]
    Invalid(String),
    /// The stored password cannot be decrypted (for example its key id is not configured).
    #[error("the instance's SMTP password cannot be decrypted: {0}")]
    Password(String),
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Loads the settings for `instance`: its own row if it has one, else the defaults.
pub async fn settings_for(
    pool: &PgPool,
    keys: &Keyring,
    config: &Config,
    instance: Uuid,
) -> Result<SmtpSettings, SettingsError> {
    let row = sqlx::query(
        "SELECT host, port, tls, username, password, from_address, from_name, reply_to, changed_at \
           FROM api.smtp_settings WHERE instance_id = $1",
    )
    .bind(instance)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        let host = config.smtp_host.clone().ok_or(SettingsError::Missing)?;
        return Ok(SmtpSettings {
            host,
            port: config.smtp_port,
            tls: config.smtp_tls,
            user: config.smtp_user.clone(),
            password: config
                .smtp_password
                .as_ref()
                .map(|p| Zeroizing::new(p.expose_str().to_owned())),
            from_address: config.smtp_from.clone(),
            from_name: Some(config.smtp_from_name.clone()).filter(|n| !n.is_empty()),
            reply_to: config.smtp_reply_to.clone(),
            source: Source::Defaults,
        });
    };
    let port: i32 = row.try_get(1)?;
    let tls: String = row.try_get(2)?;
    let sealed: Option<serde_json::Value> = row.try_get(4)?;
    let password = match sealed {
        None => None,
        Some(value) => {
            let sealed: Sealed =
                serde_json::from_value(value).map_err(|e| SettingsError::Password(e.to_string()))?;
            let aad = cairn_secrets::smtp_password_aad(instance.as_bytes());
            Some(
                keys.decrypt_string(&sealed, &aad)
                    .map_err(|e| SettingsError::Password(e.to_string()))?,
            )
        }
    };
    Ok(SmtpSettings {
        host: row.try_get(0)?,
        port: u16::try_from(port).map_err(|_| SettingsError::Invalid(format!("port {port}")))?,
        tls: TlsMode::parse(&tls).ok_or_else(|| SettingsError::Invalid(format!("tls {tls:?}")))?,
        user: row.try_get(3)?,
        password,
        from_address: row.try_get(5)?,
        from_name: row.try_get(6)?,
        reply_to: row.try_get(7)?,
        source: Source::Instance(instance, row.try_get(8)?),
    })
}

/// What became of one SMTP transaction.
#[derive(Debug)]
pub enum Outcome {
    /// The server accepted the message; its reply (`250 ...`).
    Accepted(String),
    /// Worth trying again: no connection, a timeout, a TLS failure, a 4xx reply.
    Transient(String),
    /// Not worth trying again: a 5xx reply (unknown recipient, rejected sender, failed AUTH).
    Permanent(String),
}

/// Sorts lettre's error into transient and permanent. The error's text holds the server's reply,
/// never the password (lettre does not echo credentials).
pub fn classify(error: &SmtpError) -> Outcome {
    let text = error.to_string();
    if error.is_permanent() {
        Outcome::Permanent(text)
    } else {
        Outcome::Transient(text)
    }
}

type Key = (Source, String, u16, &'static str, Option<String>);

/// Pooled transports by settings, so connections are reused across messages and a change of an
/// instance's settings (a new `changed_at`) builds a new transport.
#[derive(Clone)]
pub struct Transports {
    timeout: Duration,
    pool_size: u32,
    cache: Arc<Mutex<HashMap<Key, AsyncSmtpTransport<Tokio1Executor>>>>,
}

impl Transports {
    /// Transports whose commands time out after `timeout`, each with up to `pool_size`
    /// connections.
    pub fn new(timeout: Duration, pool_size: u32) -> Self {
        Self {
            timeout,
            pool_size,
            cache: Arc::default(),
        }
    }

    /// The transport for `settings`.
    pub fn get(&self, settings: &SmtpSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpError> {
        let key: Key = (
            settings.source.clone(),
            settings.host.clone(),
            settings.port,
            settings.tls.as_str(),
            settings.user.clone(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(transport) = cache.get(&key) {
            return Ok(transport.clone());
        }
        // A settings change leaves the old transport unused; drop every older one of the source.
        cache.retain(|k, _| k.0 != key.0);
        let builder = match settings.tls {
            TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
            TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?,
            TlsMode::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(self.pool_size));
        if let Some(user) = &settings.user {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let transport = builder.build();
        cache.insert(key, transport.clone());
        Ok(transport)
    }
}

/// Sends one message and classifies the result.
pub async fn send(transport: &AsyncSmtpTransport<Tokio1Executor>, message: Message) -> Outcome {
    match transport.send(message).await {
        Ok(response) => {
            let first = response.first_line().unwrap_or_default();
            Outcome::Accepted(format!("{} {first}", response.code()))
        }
        Err(error) => classify(&error),
    }
}
