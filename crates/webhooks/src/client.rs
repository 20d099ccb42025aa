//! The HTTP/1.1 client of outbound calls. It resolves the endpoint's host itself, has the
//! [`Guard`] check every address, and connects only to a checked address; a kept-alive
//! connection was opened that way too, so every byte goes to an address that passed the guard at
//! its connection. One time limit covers connecting, sending and reading the answer.

use crate::guard::{Endpoint, Guard, GuardError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The part of a response body kept for the delivery log.
pub const PREVIEW_BYTES: usize = 2048;
/// The most of a response body read; a longer body is cut and its connection closed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// Why a call got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guard refused the endpoint or one of its addresses.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// No connection could be made.
    #[error("connecting to {endpoint} failed: {reason}")]
    Connect {
        /// host:port.
        endpoint: String,
        /// The last error.
        reason: String,
    },
    /// The time limit passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// TLS failed.
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The exchange failed after connecting.
    #[error("HTTP exchange failed: {0}")]
    Http(String),
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body, up to [`MAX_BODY_BYTES`].
    pub body: Bytes,
    /// From sending the first byte (after any connect) to the end of the body.
    pub latency: Duration,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first [`PREVIEW_BYTES`] of the body as text.
    pub fn preview(&self) -> String {
        preview(&self.body)
    }
}

/// The first [`PREVIEW_BYTES`] of `body`, as text (invalid UTF-8 replaced).
pub fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(PREVIEW_BYTES)]).into_owned()
}

type Key = (bool, String, u16);

/// Idle keep-alive connections by endpoint.
type IdlePool = Arc<Mutex<HashMap<Key, Vec<SendRequest<Full<Bytes>>>>>>;

/// The client; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    guard: Guard,
    tls: tokio_rustls::TlsConnector,
    idle: IdlePool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client checking with `guard`, trusting the Web PKI roots for https.
    pub fn new(guard: Guard) -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            guard,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle: Arc::default(),
        })
    }

    /// The guard.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// POSTs `body` with `headers` to `endpoint` within `timeout`.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        match tokio::time::timeout(timeout, self.post_inner(endpoint, headers, body, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    async fn post_inner(
        &self,
        endpoint: &Endpoint,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let key: Key = (endpoint.tls, endpoint.host.clone(), endpoint.port);
        let mut sender = match self.take_idle(&key) {
            Some(sender) => sender,
            None => self.connect(endpoint).await?,
        };
        let mut request = http::Request::post(endpoint.path_and_query.as_str())
            .header(http::header::HOST, endpoint.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "cairn-actions/1");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CallError::Http(e.to_string()))?;
        let started = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        let mut complete = true;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| CallError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                let room = MAX_BODY_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
                if data.len() > room {
                    complete = false;
                    break;
                }
            }
        }
        let latency = started.elapsed();
        if complete && latency < timeout {
            self.put_idle(key, sender);
        }
        Ok(Response {
            status,
            retry_after,
            body: Bytes::from(body),
            latency,
        })
    }

    fn take_idle(&self, key: &Key) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, key: Key, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(sender);
        }
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let addrs = self.guard.resolve(endpoint).await?;
        let stream = connect_any(&addrs).await.map_err(|reason| CallError::Connect {
            endpoint: format!("{}:{}", endpoint.host, endpoint.port),
            reason,
        })?;
        let _ = stream.set_nodelay(true);
        if endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
                CallError::Tls {
                    host: endpoint.host.clone(),
                    reason: e.to_string(),
                }
            })?;
            let tls = self.tls.connect(name, stream).await.map_err(|e| CallError::Tls {
                host: endpoint.host.clone(),
                reason: e.to_string(),
            })?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(stream)).await
        }
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

async fn handshake<IO>(io: TokioIo<IO>) -> Result<SendRequest<Full<Bytes>>, CallError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| CallError::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "webhook connection ended");
        }
    });
    Ok(sender)
}
