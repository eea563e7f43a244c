//! The one pinned-certificate TLS verifier (DATA-3), used by the control plane's
//! client for the host agent (the agent's self-signed certificate) and by the
//! agent's `proxmox` driver (a PVE node certificate pinned by fingerprint).
//!
//! Exactly one certificate is accepted, identified by the SHA-256 of its DER. The
//! handshake is still fully verified: the server must prove possession of that
//! certificate's key (signature checked with the ring provider's algorithms). Any
//! other certificate is refused before a byte of the request (or a token) is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// Parse `AA:BB:…` (case-insensitive; colons optional) into 32 bytes.
pub fn parse_sha256_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex_only: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_only).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// Accepts exactly one certificate, identified by its SHA-256; remembers whether
/// another one was presented (so callers can say "pin mismatch" rather than a
/// generic transport error).
#[derive(Debug)]
pub struct PinnedCert {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    mismatch_seen: Arc<AtomicBool>,
}

impl PinnedCert {
    pub fn new(fingerprint: [u8; 32], algorithms: WebPkiSupportedAlgorithms) -> Self {
        PinnedCert {
            fingerprint,
            algorithms,
            mismatch_seen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once any other certificate was presented.
    pub fn mismatch_flag(&self) -> Arc<AtomicBool> {
        self.mismatch_seen.clone()
    }
}

/// A rustls client config (ring provider, safe default protocol versions, no
/// client certificate) that trusts exactly the certificate `fingerprint` names,
/// and the flag its verifier sets on a mismatch.
pub fn pinned_client_config(
    fingerprint: [u8; 32],
) -> Result<(rustls::ClientConfig, Arc<AtomicBool>), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCert::new(fingerprint, provider.signature_verification_algorithms);
    let flag = verifier.mismatch_flag();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, flag))
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch_seen.store(true, Ordering::SeqCst);
            Err(rustls::Error::General(
                "certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn verify(v: &PinnedCert, der: &[u8]) -> bool {
        v.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("anything").unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    /// DATA-3: only the certificate whose SHA-256 is pinned passes; any other,
    /// even one differing in a single byte, fails and sets the mismatch flag. (The
    /// signature checks are rustls's own; the agent-client and proxmox driver
    /// integration tests prove a full handshake against a pinned and a wrong
    /// certificate.)
    #[test]
    fn data_3_pinned_verifier_accepts_exactly_the_pinned_certificate() {
        let der = b"a certificate's DER bytes".to_vec();
        let fp: [u8; 32] = Sha256::digest(&der).into();
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let v = PinnedCert::new(fp, algs);
        let flag = v.mismatch_flag();
        assert!(verify(&v, &der));
        assert!(!flag.load(Ordering::SeqCst));
        let mut other = der.clone();
        other[0] ^= 1;
        assert!(!verify(&v, &other));
        assert!(flag.load(Ordering::SeqCst));
    }

    #[test]
    fn sha256_fingerprints_parse() {
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(parse_sha256_fingerprint(&fp), Some([0xab; 32]));
        assert_eq!(
            parse_sha256_fingerprint(&fp.replace(':', "").to_lowercase()),
            Some([0xab; 32])
        );
        assert_eq!(parse_sha256_fingerprint("AB:CD"), None);
        assert_eq!(parse_sha256_fingerprint(&format!("{fp}:AB")), None);
        assert_eq!(parse_sha256_fingerprint(&fp.replace('A', "G")), None);
    }
}
