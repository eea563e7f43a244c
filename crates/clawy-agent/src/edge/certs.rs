//! Certificates of deleted hostnames: out of Caddy's storage and out of its
//! memory, without reloading Caddy (DATA-1).
//!
//! What Caddy 2.6.2 (certmagic 0.17.2) does, read in its source and measured
//! (docs/EDGE.md "Certificates"):
//! - a handshake first looks in the in-memory cache, then in storage, and only
//!   then asks `ask` and the issuer; a cached or stored certificate is served
//!   without asking;
//! - on-demand certificates are never revisited by the background maintenance;
//! - a config reload starts a fresh cache but closes every proxied WebSocket.
//!
//! So the edge config gives the cache one slot (`tls.cache.capacity: 1`): every
//! newly loaded certificate evicts the cached one. Forgetting a hostname is then:
//! remove its files under `certificates/<issuer>/<host>/`, make Caddy load some
//! other certificate — a self-signed sentinel the agent keeps in each issuer
//! directory, asked for by SNI [`FLUSH_SENTINEL`] — and check that a handshake
//! for the hostname now fails (retrying the flush if a handshake in flight put it
//! back).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::caddy_config::FLUSH_SENTINEL;
use clawy_proto::names::DnsName;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Caddy storage {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making the cache-flush certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Caddy at {addr} did not load the cache-flush certificate: {reason}")]
    FlushFailed { addr: SocketAddr, reason: String },
    #[error("Caddy still completes TLS handshakes for {host} after {attempts} cache flushes")]
    StillServed { host: String, attempts: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Caddy's `file_system` storage, as far as certificates go.
#[derive(Debug, Clone)]
pub struct CertStorage {
    root: PathBuf,
}

impl CertStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CertStorage { root: root.into() }
    }

    fn issuer_dirs(&self) -> Result<Vec<PathBuf>, CertError> {
        let certs = self.root.join("certificates");
        let entries = match std::fs::read_dir(&certs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err(&certs)(e)),
        };
        let mut dirs = vec![];
        for entry in entries {
            let entry = entry.map_err(io_err(&certs))?;
            // Not following symlinks: only real directories Caddy made.
            if entry.file_type().map_err(io_err(&certs))?.is_dir() {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }

    /// Whether any issuer holds a certificate directory for `host`.
    pub fn has_certificate(&self, host: &DnsName) -> Result<bool, CertError> {
        // `host` is a validated LDH name: it cannot contain '/' or '..'.
        Ok(self
            .issuer_dirs()?
            .iter()
            .any(|d| d.join(host.as_str()).exists()))
    }

    /// Removes every stored certificate, key and metadata of `host` (all
    /// issuers) and its OCSP staples. Idempotent; returns what it removed.
    pub fn remove_hostname(&self, host: &DnsName) -> Result<Vec<PathBuf>, CertError> {
        let mut removed = vec![];
        for issuer in self.issuer_dirs()? {
            let dir = issuer.join(host.as_str());
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed.push(dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        // certmagic names staples `ocsp/<name>-<hash>`.
        let ocsp = self.root.join("ocsp");
        if let Ok(entries) = std::fs::read_dir(&ocsp) {
            let prefix = format!("{host}-");
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let p = entry.path();
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                    removed.push(p);
                }
            }
        }
        Ok(removed)
    }

    /// Puts the self-signed sentinel into every issuer directory that lacks it
    /// (a new issuer directory appears with the first certificate it issues).
    /// Returns how many it wrote.
    pub fn ensure_sentinel(&self) -> Result<usize, CertError> {
        let mut written = 0;
        let mut pem: Option<(String, String)> = None;
        for issuer in self.issuer_dirs()? {
            let dir = issuer.join(FLUSH_SENTINEL);
            let crt = dir.join(format!("{FLUSH_SENTINEL}.crt"));
            if crt.exists() {
                continue;
            }
            let (cert_pem, key_pem) = match &pem {
                Some(p) => p.clone(),
                None => {
                    let ck = rcgen::generate_simple_self_signed(vec![FLUSH_SENTINEL.to_owned()])?;
                    let p = (ck.cert.pem(), ck.signing_key.serialize_pem());
                    pem = Some(p.clone());
                    p
                }
            };
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let key = dir.join(format!("{FLUSH_SENTINEL}.key"));
            let meta = dir.join(format!("{FLUSH_SENTINEL}.json"));
            write_private(&key, key_pem.as_bytes())?;
            std::fs::write(&meta, format!("{{\"sans\":[\"{FLUSH_SENTINEL}\"]}}"))
                .map_err(io_err(&meta))?;
            // The certificate last: certmagic needs all three files.
            std::fs::write(&crt, cert_pem).map_err(io_err(&crt))?;
            // Caddy runs as its own user (Debian: `caddy`); the agent may be root.
            for p in [&dir, &key, &meta, &crt] {
                same_owner_as(p, &issuer)?;
            }
            written += 1;
        }
        Ok(written)
    }
}

/// Gives `path` the owner and group of `like` (no-op when they already match).
fn same_owner_as(path: &Path, like: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(like).map_err(io_err(like))?;
    let have = std::fs::metadata(path).map_err(io_err(path))?;
    if (have.uid(), have.gid()) != (want.uid(), want.gid()) {
        std::os::unix::fs::chown(path, Some(want.uid()), Some(want.gid())).map_err(io_err(path))?;
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}

/// Accepts any certificate: the probe only learns whether Caddy completes a
/// handshake for a name at all; it never sends data over the connection.
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Completes a TLS handshake with `addr` for `sni` and closes. `Ok(())` means
/// Caddy presented a certificate for it.
pub async fn tls_handshake(addr: SocketAddr, sni: &str, timeout: Duration) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(algs)))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        drop(tls);
        Ok(())
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Pushes `host`'s certificate out of Caddy's one-slot cache and proves it:
/// after this returns `Ok`, a fresh handshake for `host` at `edge` fails. Call
/// it after `host` left the index (so `ask` refuses it) and its files were
/// removed from storage.
pub async fn evict_from_cache(
    storage: &CertStorage,
    edge: SocketAddr,
    host: &DnsName,
) -> Result<(), CertError> {
    const ATTEMPTS: u32 = 3;
    let timeout = Duration::from_secs(10);
    // Nothing was ever issued by this edge: nothing can be cached either.
    if storage.issuer_dirs()?.is_empty() {
        return Ok(());
    }
    // Caddy not running (stopped, restarting): its memory is empty, and when it
    // starts it can only load what storage still holds, which no longer has
    // `host`. A delete must not wait for the edge to come back.
    if let Err(e) = TcpStream::connect(edge).await {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            tracing::warn!(%edge, %host, "edge: Caddy is not listening; nothing cached to flush");
            return Ok(());
        }
    }
    storage.ensure_sentinel()?;
    for _ in 0..ATTEMPTS {
        tls_handshake(edge, FLUSH_SENTINEL, timeout)
            .await
            .map_err(|reason| CertError::FlushFailed { addr: edge, reason })?;
        // A handshake that fails here is the goal: nothing cached, nothing
        // stored, and `ask` refuses.
        if tls_handshake(edge, host.as_str(), timeout).await.is_err() {
            return Ok(());
        }
        // A handshake for `host` that read storage before the removal can
        // have put the certificate back: flush again.
    }
    Err(CertError::StillServed {
        host: host.to_string(),
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn remove_hostname_touches_only_that_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for issuer in ["local", "acme-v02.api.letsencrypt.org-directory"] {
            for host in ["a.claws.example.com", "b.claws.example.com"] {
                let d = root.join("certificates").join(issuer).join(host);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(format!("{host}.crt")), "x").unwrap();
            }
        }
        std::fs::create_dir_all(root.join("ocsp")).unwrap();
        std::fs::write(root.join("ocsp/a.claws.example.com-abc"), "x").unwrap();
        std::fs::write(root.join("ocsp/ab.claws.example.com-abc"), "x").unwrap();
        let s = CertStorage::new(root);
        let a = DnsName::parse("a.claws.example.com", "t", 1).unwrap();
        let b = DnsName::parse("b.claws.example.com", "t", 1).unwrap();
        assert!(s.has_certificate(&a).unwrap());
        assert_eq!(s.remove_hostname(&a).unwrap().len(), 3);
        assert!(!s.has_certificate(&a).unwrap());
        assert!(s.has_certificate(&b).unwrap());
        assert!(root.join("ocsp/ab.claws.example.com-abc").exists());
        assert!(s.remove_hostname(&a).unwrap().is_empty(), "idempotent");
    }

    /// Caddy runs as `caddy` and the agent as root: the sentinel must be
    /// readable by Caddy, i.e. owned like the issuer directory.
    #[test]
    fn sentinel_is_owned_like_the_issuer_directory() {
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let issuer = dir.path().join("certificates/local");
        std::fs::create_dir_all(&issuer).unwrap();
        std::os::unix::fs::chown(&issuer, Some(65534), Some(65534)).unwrap();
        CertStorage::new(dir.path()).ensure_sentinel().unwrap();
        let sdir = issuer.join(FLUSH_SENTINEL);
        for f in ["", ".crt", ".key", ".json"] {
            let p = if f.is_empty() {
                sdir.clone()
            } else {
                sdir.join(format!("{FLUSH_SENTINEL}{f}"))
            };
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", p.display());
        }
    }

    #[test]
    fn sentinel_goes_into_each_issuer_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = CertStorage::new(dir.path());
        assert_eq!(s.ensure_sentinel().unwrap(), 0, "no issuer yet");
        std::fs::create_dir_all(dir.path().join("certificates/local")).unwrap();
        assert_eq!(s.ensure_sentinel().unwrap(), 1);
        assert_eq!(s.ensure_sentinel().unwrap(), 0);
        let key = dir.path().join(format!(
            "certificates/local/{FLUSH_SENTINEL}/{FLUSH_SENTINEL}.key"
        ));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
