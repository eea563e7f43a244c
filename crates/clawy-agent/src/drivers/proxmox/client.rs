//! A thin client of Proxmox VE's REST API (`/api2/json`): API-token auth, TLS
//! pinned to the cluster CA or the node certificate's SHA-256, and PVE's error
//! shapes classified once (400 `errors` map, 500 with the message in the reason
//! phrase and/or the body's `message`).
//!
//! The token secret is read from its file at start-up and lives only in the
//! `Authorization` header value; it is never logged, never in an error.

use std::sync::Arc;
use std::time::Duration;

use clawy_agent_client::pin::PinnedCert;
use reqwest::Method;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use super::config::{ProxmoxConfig, TlsPin};

/// How an API call failed, in the driver's terms.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// 400 `Parameter verification failed.`: PVE names the parameter.
    #[error("PVE refused parameter `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// The VM (or task) does not exist (PVE answers 500 for a missing VM config).
    #[error("{0}")]
    Missing(String),
    /// A lock or a lock timeout: retry later (`busy`).
    #[error("{0}")]
    Locked(String),
    /// `config file already exists` / `VM N already exists`: another VMID.
    #[error("{0}")]
    Exists(String),
    /// 5xx or no answer after retries.
    #[error("PVE: {0}")]
    Transient(String),
    /// 401/403, TLS, anything else: an operator must look.
    #[error("PVE: {0}")]
    Fatal(String),
}

pub struct PveClient {
    http: reqwest::Client,
    base: url::Url,
    /// `PVEAPIToken=USER@REALM!TOKENID=SECRET`; never logged.
    auth: String,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Reads the token secret: the file must be a regular file readable by its owner
/// only (0600 or stricter), so a world-readable secret is refused at start-up.
pub fn read_secret(path: &std::path::Path) -> Result<String, PveError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| PveError::Fatal(format!("token_secret_file {}: {e}", path.display())))?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        return Err(PveError::Fatal(format!(
            "token_secret_file {} must be a regular file with mode 0600",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| PveError::Fatal(format!("token_secret_file {}: {e}", path.display())))?;
    let secret = text.trim().to_string();
    // It goes into an HTTP header: a plain token (PVE's are UUIDs).
    if secret.is_empty()
        || secret.len() > 256
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(PveError::Fatal(format!(
            "token_secret_file {} does not hold a PVE token secret",
            path.display()
        )));
    }
    Ok(secret)
}

impl PveClient {
    pub fn new(cfg: &ProxmoxConfig, secret: &str) -> Result<Self, PveError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PveError::Fatal(e.to_string()))?;
        let tls = match &cfg.tls {
            TlsPin::CaFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| PveError::Fatal(format!("ca_file {}: {e}", path.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert
                        .map_err(|e| PveError::Fatal(format!("ca_file {}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| PveError::Fatal(format!("ca_file: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(PveError::Fatal(format!(
                        "ca_file {} holds no certificate",
                        path.display()
                    )));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            // DATA-3: the one pinned verifier the control plane's agent client
            // uses too.
            TlsPin::Fingerprint(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert::new(
                    *fp,
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PveError::Fatal(e.to_string()))?;
        Ok(PveClient {
            http,
            base: cfg.api_url.clone(),
            auth: format!("PVEAPIToken={}={secret}", cfg.token_id),
        })
    }

    /// `segments` are appended as path segments (each percent-encoded: UPIDs carry
    /// `:`, `@` and `!`).
    fn url(&self, segments: &[&str]) -> Result<url::Url, PveError> {
        let mut u = self.base.clone();
        {
            let mut p = u
                .path_segments_mut()
                .map_err(|_| PveError::Fatal("api_url cannot take a path".into()))?;
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        Ok(u)
    }

    /// One call; `params` go in the query for GET/DELETE and as a form body
    /// otherwise. Answers the `data` member. Transport errors and 5xx other than
    /// locks are retried twice (dispatching again is safe: every caller re-checks
    /// PVE's state before it creates anything).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        params: &[(&str, String)],
    ) -> Result<Value, PveError> {
        let url = self.url(segments)?;
        let mut last = PveError::Transient("no attempt".into());
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            }
            let req = self
                .http
                .request(method.clone(), url.clone())
                .header("Authorization", &self.auth);
            let req = if method == Method::GET || method == Method::DELETE {
                req.query(params)
            } else {
                req.form(params)
            };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // reqwest's text can carry the URL, never the header. Its
                    // causes say what failed (e.g. the pinned certificate).
                    last = PveError::Transient(format!(
                        "{method} {}: {}",
                        url.path(),
                        error_chain(&e)
                    ));
                    continue;
                }
            };
            match classify(resp).await {
                Err(e @ PveError::Transient(_)) => {
                    last = e;
                    continue;
                }
                other => return other,
            }
        }
        Err(last)
    }

    pub async fn get(
        &self,
        segments: &[&str],
        params: &[(&str, String)],
    ) -> Result<Value, PveError> {
        self.call(Method::GET, segments, params).await
    }
}

/// An error and its causes, `outer: inner: …`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

async fn classify(resp: reqwest::Response) -> Result<Value, PveError> {
    let status = resp.status();
    // PVE puts a 500's message in the reason phrase; newer versions also in the
    // body's `message`. Read both.
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| reason.trim().to_string());
    let code = status.as_u16();
    if code == 400 {
        if let Some(errors) = body.get("errors").and_then(Value::as_object) {
            if let Some((field, msg)) = errors.iter().next() {
                let msg = msg.as_str().unwrap_or("invalid").trim().to_string();
                if field == "upid" && msg.contains("no such task") {
                    return Err(PveError::Missing(format!("task: {msg}")));
                }
                if field == "vmid" && msg.contains("already exists") {
                    return Err(PveError::Exists(msg));
                }
                return Err(PveError::Invalid {
                    field: field.clone(),
                    message: msg,
                });
            }
        }
        return Err(PveError::Invalid {
            field: "request".into(),
            message,
        });
    }
    Err(classify_message(code, message))
}

/// Sorts a PVE error text (also a failed task's exit status) into the driver's
/// classes.
pub fn classify_message(code: u16, message: String) -> PveError {
    let m = message.as_str();
    if m.contains("is locked") || m.contains("got timeout") || m.contains("got no worker upid") {
        PveError::Locked(message)
    } else if m.contains("does not exist") || m.contains("no such VM") {
        PveError::Missing(message)
    } else if m.contains("already exists") {
        PveError::Exists(message)
    } else if code == 401 || code == 403 {
        PveError::Fatal(format!("{code} {message}"))
    } else if code >= 500 {
        PveError::Transient(format!("{code} {message}"))
    } else {
        PveError::Fatal(format!("{code} {message}"))
    }
}

/// Task-log lines with anything secret-looking removed (the token, `sshkeys`,
/// `cipassword`, `PVEAPIToken=…`) before they reach an error or the log.
pub fn redact(line: &str, secret: &str) -> String {
    let mut out = if secret.is_empty() {
        line.to_string()
    } else {
        line.replace(secret, "[redacted]")
    };
    for key in ["PVEAPIToken=", "cipassword", "sshkeys", "password"] {
        if let Some(i) = out.find(key) {
            out.truncate(i + key.len());
            out.push_str(" [redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn messages_are_classified() {
        let c = |m: &str| classify_message(500, m.to_string());
        assert!(matches!(c("VM is locked (clone)"), PveError::Locked(_)));
        assert!(matches!(
            c("can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"),
            PveError::Locked(_)
        ));
        assert!(matches!(
            c("Configuration file 'nodes/pve/qemu-server/101.conf' does not exist"),
            PveError::Missing(_)
        ));
        assert!(matches!(
            c("unable to create VM 101: config file already exists"),
            PveError::Exists(_)
        ));
        assert!(matches!(c("something broke"), PveError::Transient(_)));
        assert!(matches!(
            classify_message(403, "Permission check failed".into()),
            PveError::Fatal(_)
        ));
    }

    #[test]
    fn task_log_lines_are_redacted() {
        assert_eq!(
            redact("auth PVEAPIToken=a@b!c=s3cret x", "s3cret"),
            "auth PVEAPIToken= [redacted]"
        );
        assert_eq!(
            redact("update sshkeys ssh-ed25519 AAAA", ""),
            "update sshkeys [redacted]"
        );
        assert_eq!(
            redact("clone failed: disk full", "zzz"),
            "clone failed: disk full"
        );
    }

    #[test]
    fn secret_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "0a1b2c3d-aaaa-bbbb-cccc-000000000000\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret(&p).unwrap(),
            "0a1b2c3d-aaaa-bbbb-cccc-000000000000"
        );
        std::fs::write(&p, "x\ny: z").unwrap();
        assert!(read_secret(&p).is_err());
    }
}
