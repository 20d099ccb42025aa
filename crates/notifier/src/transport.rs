//! The SMTP conversation, driven step by step so that the sender decides what happens right
//! before `DATA` and how long each part may take.
//!
//! lettre's `AsyncSmtpTransport` sends a message in one call and its timeout covers only the TCP
//! connect: a server that accepts the connection and then answers slowly (or never) keeps a send
//! going for as long as it likes, and a claim on the delivery can expire under it (issue 13,
//! defect 5). Here every step waits at most the command timeout (`CAIRN_SMTP_TIMEOUT_SECS`) per
//! reply it needs, and a transaction is opened in two steps:
//!
//! 1. [`Server::open`]: a connection (a pooled one, checked with `NOOP`, or a new one: TCP, TLS,
//!    greeting, `EHLO`, `STARTTLS`, `AUTH`), then `MAIL FROM` and `RCPT TO`;
//! 2. [`Transaction::data`]: `DATA`, the message and the server's final reply.
//!
//! Between the two the sender confirms that its claim on the delivery is still its own (see
//! `sender.rs`). A connection goes back to the pool only after a transaction ended with the
//! server's acceptance; after an error, a timeout or an abandoned transaction it is dropped (the
//! socket is closed), so a connection whose conversation was cut in the middle is never reused.

use crate::config::TlsMode;
use crate::smtp::SmtpSettings;
use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long an idle pooled connection is kept (servers commonly close idle sessions after a few
/// minutes; one older than this is closed rather than tested).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a step of the conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// lettre's error: the server's negative reply, a network or TLS failure, ...
    #[error("{0}")]
    Smtp(#[from] SmtpError),
    /// The server did not answer a step in time.
    #[error("no answer to {step} within {limit:?}")]
    Timeout {
        /// The step (`MAIL FROM`, `the message`, ...).
        step: &'static str,
        /// How long was waited.
        limit: Duration,
    },
    /// The server cannot take this message at all (it needs an extension the server lacks).
    #[error("{0}")]
    Unsupported(String),
    /// The whole message was written but no reply came back (a timeout, a closed connection): the
    /// server may have accepted it. SMTP cannot tell, so a later attempt may deliver a copy.
    #[error("{0}; the server may have accepted the message, so the next attempt can deliver a second copy")]
    Unconfirmed(Box<SendError>),
}

impl SendError {
    /// Whether trying again later is pointless: a `5xx` reply or a missing extension.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Smtp(error) => error.is_permanent(),
            Self::Timeout { .. } | Self::Unconfirmed(_) => false,
            Self::Unsupported(_) => true,
        }
    }
}

/// Runs one step, which needs `replies` answers of the server, under `replies` × the command
/// timeout.
async fn step<T, F>(timeout: Duration, replies: u32, name: &'static str, work: F) -> Result<T, SendError>
where
    F: Future<Output = Result<T, SmtpError>>,
{
    let limit = timeout.saturating_mul(replies);
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SendError::Timeout { step: name, limit }),
    }
}

type Key = (crate::smtp::Source, String, u16, &'static str, Option<String>);

/// One SMTP server per distinct settings, each with its pool of idle connections, so connections
/// are reused across messages and a change of an instance's settings (a new `changed_at`) makes a
/// new server entry.
#[derive(Clone)]
pub struct Transports {
    timeout: Duration,
    pool_size: usize,
    cache: Arc<Mutex<HashMap<Key, Arc<Server>>>>,
}

impl Transports {
    /// Servers whose steps wait at most `timeout` per reply, each keeping up to `pool_size` idle
    /// connections.
    pub fn new(timeout: Duration, pool_size: usize) -> Self {
        Self {
            timeout,
            pool_size,
            cache: Arc::default(),
        }
    }

    /// The server for `settings`.
    pub fn get(&self, settings: &SmtpSettings) -> Result<Arc<Server>, SmtpError> {
        let key: Key = (
            settings.source.clone(),
            settings.host.clone(),
            settings.port,
            settings.tls.as_str(),
            settings.user.clone(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = cache.get(&key) {
            return Ok(server.clone());
        }
        // A settings change leaves the old entry unused; drop every older one of the source (its
        // idle connections close with it).
        cache.retain(|k, _| k.0 != key.0);
        let tls = match settings.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Implicit => Some(TlsParameters::new(settings.host.clone())?),
        };
        let credentials = settings.user.as_ref().map(|user| {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        let server = Arc::new(Server {
            host: settings.host.clone(),
            port: settings.port,
            mode: settings.tls,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: self.timeout,
            max_idle: self.pool_size,
            idle: Mutex::default(),
        });
        cache.insert(key, server.clone());
        Ok(server)
    }
}

/// An SMTP server as the settings name it, with its idle connections.
pub struct Server {
    host: String,
    port: u16,
    mode: TlsMode,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Server {
    /// Opens a mail transaction for `envelope`: a connection, `MAIL FROM`, `RCPT TO` for every
    /// recipient. `ascii_body` says whether the formatted message is plain ASCII (else the server
    /// must offer `8BITMIME`).
    pub async fn open(
        self: &Arc<Self>,
        envelope: &Envelope,
        ascii_body: bool,
    ) -> Result<Transaction, SendError> {
        let mut conn = self.connection().await?;
        let mut options = Vec::new();
        let addresses_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .all(|a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii());
        if !addresses_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(SendError::Unsupported(
                    "the address is not ASCII and the server does not offer SMTPUTF8".into(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !ascii_body {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(SendError::Unsupported(
                    "the message is not ASCII and the server does not offer 8BITMIME".into(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), options);
        step(self.timeout, 1, "MAIL FROM", conn.command(mail)).await?;
        for to in envelope.to() {
            let rcpt = Rcpt::new(to.clone(), Vec::new());
            step(self.timeout, 1, "RCPT TO", conn.command(rcpt)).await?;
        }
        Ok(Transaction {
            conn,
            server: self.clone(),
        })
    }

    /// A pooled connection that still answers `NOOP`, or a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let parked = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
                idle.pop()
            };
            let Some((mut conn, _)) = parked else { break };
            if let Ok(true) = tokio::time::timeout(self.timeout, conn.test_connected()).await {
                return Ok(conn);
            }
            // Broken or too slow to answer NOOP: dropped, the next one is tried.
        }
        self.connect().await
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let implicit = self.mode == TlsMode::Implicit;
        let wrapper = if implicit { self.tls.clone() } else { None };
        // TCP (lettre applies the timeout to it as well), TLS for implicit TLS, greeting, EHLO.
        let replies = if implicit { 4 } else { 3 };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        );
        let mut conn = step(self.timeout, replies, "connecting (greeting and EHLO)", connect).await?;
        if self.mode == TlsMode::Starttls {
            let params = self
                .tls
                .clone()
                .ok_or_else(|| SendError::Unsupported("STARTTLS without TLS parameters".into()))?;
            // STARTTLS, the handshake, EHLO again; refused when the server does not offer it.
            step(self.timeout, 3, "STARTTLS", conn.starttls(params, &self.hello)).await?;
        }
        if let Some(credentials) = &self.credentials {
            // LOGIN takes three replies, PLAIN one.
            step(
                self.timeout,
                3,
                "AUTH",
                conn.auth(DEFAULT_MECHANISMS, credentials),
            )
            .await?;
        }
        Ok(conn)
    }

    fn park(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }
}

/// An open mail transaction: the server has accepted the sender and the recipients. Dropping it
/// closes the connection without sending the message.
pub struct Transaction {
    conn: AsyncSmtpConnection,
    server: Arc<Server>,
}

impl Transaction {
    /// Sends `DATA` and the message, and returns the server's final reply (`250 ...`). On success
    /// the connection goes back to the pool.
    pub async fn data(mut self, message: &[u8]) -> Result<String, SendError> {
        let timeout = self.server.timeout;
        step(timeout, 1, "DATA", self.conn.command(Data)).await?;
        let response = match step(timeout, 1, "the message", self.conn.message(message)).await {
            Ok(response) => response,
            // A negative reply is an answer; anything else leaves the outcome unknown.
            Err(SendError::Smtp(error)) if error.status().is_some() => return Err(error.into()),
            Err(error) => return Err(SendError::Unconfirmed(Box::new(error))),
        };
        let reply = format!(
            "{} {}",
            response.code(),
            response.first_line().unwrap_or_default()
        );
        self.server.park(self.conn);
        Ok(reply)
    }
}
