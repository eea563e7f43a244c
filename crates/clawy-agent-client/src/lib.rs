//! HTTPS client for the host agent's API (DATA-3).
//!
//! The agent's certificate is self-signed; instead of a CA the client pins its
//! SHA-256 fingerprint (`AA:BB:…`, as `clawy agent fingerprint` prints it), with
//! the shared verifier of [`pin`] (the agent's proxmox driver pins a PVE node the
//! same way).

pub mod pin;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clawy_proto::agent::{ErrorBody, ErrorCode, HealthProbe, HostInfo, VmList, VmSpec, VmStatus};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a SHA-256 fingerprint (32 hex pairs separated by ':')")]
    BadFingerprint(String),
    #[error("`{0}` is not an https:// URL")]
    BadUrl(String),
    #[error("the agent's certificate does not match the pinned fingerprint")]
    PinMismatch,
    #[error("cannot reach the agent: {0}")]
    Transport(reqwest::Error),
    #[error("agent answered {status}: {code:?}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        field: Option<String>,
    },
    #[error("agent answered {status} with an unexpected body: {body}")]
    Unexpected { status: u16, body: String },
    #[error("building the TLS client: {0}")]
    Tls(String),
}

impl ClientError {
    /// The API error code, if the agent answered with one.
    /// The agent answered `busy`: a hypervisor lock or a task still running.
    /// Retry the same call later; never a failure of the VM.
    pub fn is_busy(&self) -> bool {
        self.code() == Some(ErrorCode::Busy)
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// Parse `AA:BB:…` (case-insensitive; colons optional) into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    pin::parse_sha256_fingerprint(text).ok_or_else(|| ClientError::BadFingerprint(text.to_string()))
}

/// A bearer token; Debug prints `[redacted]`.
#[derive(Clone)]
struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How long an idle connection to an agent is kept for reuse: under the agent's
/// idle close of HTTP/1 keep-alive connections (its `header_read_timeout`, 10 s by
/// default; crates/clawy-agent/API.md asks for at least 5 s), so a pooled connection is
/// never one the agent is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    token: Bearer,
    mismatch_seen: Arc<AtomicBool>,
}

impl AgentClient {
    /// `base_url` like `https://10.0.0.5:8443`; `fingerprint` as printed by
    /// `clawy agent fingerprint`.
    pub fn new(base_url: &str, fingerprint: &str, token: &str) -> Result<Self, ClientError> {
        Self::with_timeout(
            base_url,
            fingerprint,
            token,
            Duration::from_secs(clawy_proto::agent::CLIENT_TIMEOUT_SECS),
        )
    }

    pub fn with_timeout(
        base_url: &str,
        fingerprint: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(ClientError::BadUrl(base_url.to_string()));
        }
        let fingerprint = parse_fingerprint(fingerprint)?;
        let (tls, mismatch_seen) =
            pin::pinned_client_config(fingerprint).map_err(|e| ClientError::Tls(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            // Never reuse a connection the agent may be closing: it ends HTTP/1
            // keep-alive connections idle for its `header_read_timeout` (10 s by
            // default). A request written into one that the agent closed at that
            // instant fails with an EOF, not an answer; seen as a flaky test.
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(AgentClient {
            http,
            base,
            token: Bearer(token.to_string()),
            mismatch_seen,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token.0);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if self.mismatch_seen.load(Ordering::SeqCst) {
                ClientError::PinMismatch
            } else {
                ClientError::Transport(e)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(ClientError::Transport)?;
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Err(ClientError::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                field: b.error.field,
            }),
            Err(_) => Err(ClientError::Unexpected { status, body: text }),
        }
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(ClientError::Transport)?;
        serde_json::from_str(&text).map_err(|_| ClientError::Unexpected { status, body: text })
    }

    pub async fn host(&self) -> Result<HostInfo, ClientError> {
        Self::json(self.send(Method::GET, "/v1/host", None).await?).await
    }

    pub async fn list_vms(&self) -> Result<VmList, ClientError> {
        Self::json(self.send(Method::GET, "/v1/vms", None).await?).await
    }

    pub async fn get_vm(&self, id: &str) -> Result<VmStatus, ClientError> {
        Self::json(
            self.send(Method::GET, &format!("/v1/vms/{id}"), None)
                .await?,
        )
        .await
    }

    /// Ensure the VM matches `spec`. Returns its status and whether it was created.
    pub async fn ensure_vm(
        &self,
        id: &str,
        spec: &VmSpec,
    ) -> Result<(VmStatus, bool), ClientError> {
        self.ensure_vm_with_secrets(id, spec, None).await
    }

    /// [`AgentClient::ensure_vm`] with the owner's secrets for the VM's first-boot
    /// seed (DATA-5): sent beside the spec in `secrets`, never inside it.
    pub async fn ensure_vm_with_secrets(
        &self,
        id: &str,
        spec: &VmSpec,
        secrets: Option<&clawy_proto::agent::GuestSecrets>,
    ) -> Result<(VmStatus, bool), ClientError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            spec: &'a VmSpec,
            #[serde(skip_serializing_if = "Option::is_none")]
            secrets: Option<&'a clawy_proto::agent::GuestSecrets>,
        }
        // Serializing our own types into a Value cannot fail (string keys only).
        let body = serde_json::to_value(Body { spec, secrets }).unwrap_or_default();
        let resp = self
            .send(Method::PUT, &format!("/v1/vms/{id}"), Some(&body))
            .await?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((Self::json(resp).await?, created))
    }

    pub async fn start_vm(&self, id: &str) -> Result<VmStatus, ClientError> {
        Self::json(
            self.send(Method::POST, &format!("/v1/vms/{id}/start"), None)
                .await?,
        )
        .await
    }

    pub async fn stop_vm(&self, id: &str) -> Result<VmStatus, ClientError> {
        Self::json(
            self.send(Method::POST, &format!("/v1/vms/{id}/stop"), None)
                .await?,
        )
        .await
    }

    pub async fn reboot_vm(&self, id: &str) -> Result<VmStatus, ClientError> {
        Self::json(
            self.send(Method::POST, &format!("/v1/vms/{id}/reboot"), None)
                .await?,
        )
        .await
    }

    /// Delete; deleting an absent VM succeeds too (idempotent).
    pub async fn delete_vm(&self, id: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await?;
        Ok(())
    }

    pub async fn probe_vm(&self, id: &str) -> Result<HealthProbe, ClientError> {
        Self::json(
            self.send(Method::GET, &format!("/v1/vms/{id}/probe"), None)
                .await?,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fingerprints_parse() {
        let fp = (0..32)
            .map(|i| format!("{i:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&fp).unwrap()[31], 31);
        assert_eq!(parse_fingerprint(&fp.to_lowercase()).unwrap()[1], 1);
        assert!(parse_fingerprint("AA:BB").is_err());
        assert!(AgentClient::new("http://x", &fp, "t").is_err());
        let c = AgentClient::new("https://127.0.0.1:1", &fp, "secret-token").unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
