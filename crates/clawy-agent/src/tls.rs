//! The agent's TLS identity (DATA-3): a key and self-signed certificate generated on
//! first start in the state dir (files 0600, dir 0700). The control plane pins the
//! certificate's SHA-256 fingerprint instead of trusting a CA.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CERT_FILE: &str = "agent-cert.pem";
pub const KEY_FILE: &str = "agent-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the agent certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a valid PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("building the TLS server config: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The loaded identity.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// `AA:BB:…` (32 pairs) SHA-256 of the certificate's DER.
    pub fingerprint: String,
    /// True when this call generated a new identity.
    pub created: bool,
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by `:`.
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Create the state dir with mode 0700 (and tighten it if it already exists).
pub fn ensure_private_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    Ok(())
}

/// Write a file that only the owner can read, atomically (temp file + rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Load the identity from `state_dir`, generating it on first start.
pub fn load_or_create(state_dir: &Path) -> Result<Identity, TlsError> {
    ensure_private_dir(state_dir)?;
    let cert_path = state_dir.join(CERT_FILE);
    let key_path = state_dir.join(KEY_FILE);
    let mut created = false;
    if !cert_path.exists() || !key_path.exists() {
        let host = hostname();
        let mut names = vec!["clawy-agent".to_string(), "localhost".to_string()];
        if !names.contains(&host) && !host.is_empty() {
            names.push(host);
        }
        let certified = rcgen::generate_simple_self_signed(names)?;
        // Key first: a cert without its key is useless, a key without a cert is regenerated.
        write_private_file(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
        write_private_file(&cert_path, certified.cert.pem().as_bytes())?;
        created = true;
    }
    let cert_pem = std::fs::read(&cert_path).map_err(io_err(&cert_path))?;
    let key_pem = std::fs::read(&key_path).map_err(io_err(&key_path))?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| TlsError::Pem {
        path: cert_path.clone(),
        what: "certificate",
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key_path.clone(),
        what: "private key",
    })?;
    let fingerprint = fingerprint_of(&cert);
    Ok(Identity {
        cert,
        key,
        fingerprint,
        created,
    })
}

/// Read the fingerprint of an existing identity without creating one.
pub fn read_fingerprint(state_dir: &Path) -> Result<String, TlsError> {
    let cert_path = state_dir.join(CERT_FILE);
    let cert_pem = std::fs::read(&cert_path).map_err(io_err(&cert_path))?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| TlsError::Pem {
        path: cert_path.clone(),
        what: "certificate",
    })?;
    Ok(fingerprint_of(&cert))
}

/// Server config with the ring provider only (never the process default).
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server picks the cipher suite by its own order (ring's default: AES-256-GCM
    // and ChaCha20 first), not the client's. Every suite rustls offers is an AEAD
    // suite, but testssl.sh rated "no server cipher order" HIGH from outside, and a
    // client preferring the weakest offered suite should not get to choose it.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn data_3_identity_created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = load_or_create(&state).unwrap();
        assert!(first.created);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let second = load_or_create(&state).unwrap();
        assert!(!second.created);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(read_fingerprint(&state).unwrap(), first.fingerprint);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(CERT_FILE)), 0o600);
        server_config(&second).unwrap();
    }
}
