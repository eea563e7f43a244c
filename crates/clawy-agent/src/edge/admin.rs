//! Client of Caddy's admin API over its unix socket (never TCP: the admin API can
//! rewrite the whole edge). Caddy 2.6 accepts requests on a unix socket only with
//! an empty `Host` or one listed in `admin.origins`; we send [`ADMIN_ORIGIN`].
//!
//! Writes are serialized here: Caddy 2.6 has no usable ETag (it comes as a trailer
//! before 2.8) and accepts duplicate `@id`s, so two concurrent writers could
//! interleave. The agent only ever writes the whole config (`POST /load`).

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::caddy_config::ADMIN_ORIGIN;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Caddy's admin socket {path} is not reachable: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Caddy's admin API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to Caddy's admin API: {0}")]
    Http(String),
    #[error("Caddy refused {what} ({status}): {message}")]
    Refused {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("Caddy's admin API answered something that is not JSON: {0}")]
    BadJson(String),
}

/// Whether [`CaddyAdmin::ensure_config`] had to load the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    AlreadyRunning,
    Loaded,
}

#[derive(Debug)]
pub struct CaddyAdmin {
    socket: PathBuf,
    timeout: Duration,
    write_lock: Mutex<()>,
}

/// Longest body accepted from the admin API (a config with the edge's few routes
/// is a few KiB; anything bigger is not ours).
const MAX_BODY: usize = 4 * 1024 * 1024;

impl CaddyAdmin {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        CaddyAdmin {
            socket: socket.into(),
            // A config load provisions every app (and may start the local CA):
            // seconds on a slow host, never minutes.
            timeout: Duration::from_secs(30),
            write_lock: Mutex::new(()),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), AdminError> {
        let fut = async {
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| AdminError::Connect {
                        path: self.socket.display().to_string(),
                        source,
                    })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| AdminError::Http(e.to_string()))?;
            let conn_task = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, ADMIN_ORIGIN);
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| AdminError::Http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| AdminError::Http(e.to_string()))?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| AdminError::Http(e.to_string()))?
                .to_bytes();
            conn_task.abort();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| AdminError::Timeout(self.timeout))?
    }

    fn refused(what: &'static str, status: StatusCode, body: &[u8]) -> AdminError {
        // Caddy's errors are {"error": "..."}; keep the message, bounded.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        AdminError::Refused {
            what,
            status: status.as_u16(),
            message: message.chars().take(500).collect(),
        }
    }

    /// The running config (`null` when Caddy runs without one).
    pub async fn config(&self) -> Result<Value, AdminError> {
        let (status, body) = self.request(Method::GET, "/config/", None).await?;
        if !status.is_success() {
            return Err(Self::refused("reading the config", status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| AdminError::BadJson(e.to_string()))
    }

    /// Replaces the whole config. A changed config reloads Caddy gracefully (and
    /// closes proxied WebSockets in 2.6); an identical one is a no-op in Caddy.
    pub async fn load(&self, config: &Value) -> Result<(), AdminError> {
        let _guard = self.write_lock.lock().await;
        self.load_locked(config).await
    }

    async fn load_locked(&self, config: &Value) -> Result<(), AdminError> {
        let body = serde_json::to_vec(config).map_err(|e| AdminError::BadJson(e.to_string()))?;
        let (status, resp) = self.request(Method::POST, "/load", Some(body)).await?;
        if !status.is_success() {
            return Err(Self::refused("the config", status, &resp));
        }
        Ok(())
    }

    /// Loads `desired` unless Caddy already runs exactly it. Called at agent
    /// start and periodically: Debian's `caddy.service` restarts from its
    /// Caddyfile and forgets what the API pushed.
    pub async fn ensure_config(&self, desired: &Value) -> Result<Ensured, AdminError> {
        let _guard = self.write_lock.lock().await;
        if self.config().await? == *desired {
            return Ok(Ensured::AlreadyRunning);
        }
        self.load_locked(desired).await?;
        Ok(Ensured::Loaded)
    }
}
