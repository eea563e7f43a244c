//! The node's TLS identity as on PVE: a cluster CA (`pve-root-ca.pem`) that signs
//! the node certificate (`pve-ssl.pem`). Generated on first start in the state dir
//! and kept, so clients can pin the CA or the node certificate's SHA-256.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub const CA_FILE: &str = "pve-root-ca.pem";
pub const CA_KEY_FILE: &str = "pve-root-ca.key";
pub const CERT_FILE: &str = "pve-ssl.pem";
pub const KEY_FILE: &str = "pve-ssl.key";

pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    /// `AA:BB:…` SHA-256 of the node certificate (`pvenode cert info`).
    pub fingerprint: String,
}

pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn write_file(path: &Path, data: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn generate(dir: &Path, node: &str, extra: &[String]) -> Result<(), String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Proxmox Virtual Environment (pve-sim)");
    ca.distinguished_name.push(
        DnType::OrganizationName,
        "PVE Cluster Manager CA (simulated)",
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let mut names = vec![node.to_string(), "localhost".to_string()];
    names.extend(extra.iter().cloned());
    let mut leaf = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    for n in &names {
        match n.parse::<std::net::IpAddr>() {
            Ok(ip) => leaf.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => leaf.subject_alt_names.push(SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| e.to_string())?,
            )),
        }
    }
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse() {
            leaf.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{node}.local"));
    let leaf_key = KeyPair::generate().map_err(e)?;
    let issuer = Issuer::new(ca, &ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(e)?;
    write_file(&dir.join(CA_KEY_FILE), &ca_key.serialize_pem(), 0o600)?;
    write_file(&dir.join(CA_FILE), &ca_cert.pem(), 0o644)?;
    write_file(&dir.join(KEY_FILE), &leaf_key.serialize_pem(), 0o600)?;
    write_file(&dir.join(CERT_FILE), &leaf_cert.pem(), 0o644)?;
    Ok(())
}

/// Load the identity from `dir`, generating it on first start.
pub fn load_or_create(dir: &Path, node: &str, extra: &[String]) -> Result<Identity, String> {
    if !dir.join(CERT_FILE).exists() || !dir.join(KEY_FILE).exists() || !dir.join(CA_FILE).exists()
    {
        generate(dir, node, extra)?;
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    let ca_pem = read(CA_FILE)?;
    let cert_pem = read(CERT_FILE)?;
    let key_pem = read(KEY_FILE)?;
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("{CERT_FILE}: {e}"))?;
    let ca =
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| format!("{CA_FILE}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{KEY_FILE}: {e}"))?;
    let fingerprint = fingerprint_of(&leaf);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![leaf, ca], key)
        .map_err(|e| e.to_string())?;
    Ok(Identity {
        ca_pem,
        cert_pem,
        server: Arc::new(server),
        fingerprint,
    })
}
