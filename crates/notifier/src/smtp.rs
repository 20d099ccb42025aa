//! SMTP settings: an instance's own (from `api.smtp_settings`, the password decrypted only in
//! memory) or the configured defaults. The conversation with the server is in
//! [`crate::transport`].

use crate::config::{Config, TlsMode};
use cairn_secrets::{Keyring, Sealed, Zeroizing};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
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
