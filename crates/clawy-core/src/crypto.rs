//! Operator secret key, sealing of stored secrets, random tokens, hashing.
//!
//! DATA-4: secrets the platform must keep (agent tokens, TSIG keys, …) are sealed with
//! XChaCha20-Poly1305 under a 256-bit operator key kept in a 0600 file, created on
//! first start. Credentials people present to us (session ids, API keys, reset tokens)
//! are never sealed but stored as SHA-256 only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

use crate::error::{DomainError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("secret key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("a sealed secret could not be opened (wrong operator key or corrupted data)")]
    Open,
}

impl DomainError for CryptoError {
    fn code(&self) -> &'static str {
        match self {
            CryptoError::KeyFile { .. } => "secret_key_file",
            CryptoError::Open => "unseal_failed",
        }
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

const SEAL_PREFIX: &str = "v1.";
/// Sealed with associated data ([`SecretKey::seal_bound`]).
const SEAL_BOUND_PREFIX: &str = "v2.";

/// The operator's 256-bit key. Debug prints `[redacted]`; memory is zeroed on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    pub fn generate() -> SecretKey {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        SecretKey(k)
    }

    /// Reads the key file (64 hex chars), or creates it with mode 0600 if missing.
    /// A key file readable by group or others is tightened to 0600 with a warning.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, CryptoError> {
        let err = |message: String| CryptoError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "secret key file was readable by others; setting mode 0600");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| err(e.to_string()))?;
                }
                let bytes = Zeroizing::new(
                    hex::decode(text.trim()).map_err(|_| err("is not 64 hex characters".into()))?,
                );
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| err("is not 64 hex characters (256 bits)".into()))?;
                Ok(SecretKey(Zeroizing::new(arr)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    create_private_dir(parent).map_err(|e| err(e.to_string()))?;
                }
                let key = SecretKey::generate();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                let hexed = Zeroizing::new(hex::encode(key.0.as_ref()));
                f.write_all(hexed.as_bytes())
                    .and_then(|_| f.write_all(b"\n"))
                    .and_then(|_| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created a new operator secret key");
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Encrypts and authenticates; output is `v1.<base64url(nonce || ciphertext)>`.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{SEAL_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    pub fn seal_str(&self, plaintext: &str) -> String {
        self.seal(plaintext.as_bytes())
    }

    /// Decrypts a value made by [`SecretKey::seal`].
    pub fn open(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let b64 = sealed.strip_prefix(SEAL_PREFIX).ok_or(CryptoError::Open)?;
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| CryptoError::Open)?;
        if raw.len() < 24 + 16 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = raw.split_at(24);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), ct)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }

    /// Encrypts `plaintext` bound to `context` (AEAD associated data): the value only
    /// opens with the same context, so a sealed secret copied into another row (whose
    /// context differs) is refused instead of used. Output is `v2.<base64url(nonce || ct)>`.
    pub fn seal_bound(&self, plaintext: &[u8], context: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{SEAL_BOUND_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts a value made by [`SecretKey::seal_bound`] with the same `context`.
    pub fn open_bound(&self, sealed: &str, context: &[u8]) -> Result<SecretString, CryptoError> {
        let b64 = sealed
            .strip_prefix(SEAL_BOUND_PREFIX)
            .ok_or(CryptoError::Open)?;
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| CryptoError::Open)?;
        if raw.len() < 24 + 16 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = raw.split_at(24);
        let bytes = self
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Open)?;
        Ok(SecretString::from(s.to_string()))
    }

    /// True for a value sealed without context ([`SecretKey::seal`]), i.e. written
    /// before context binding existed.
    pub fn is_unbound(sealed: &str) -> bool {
        sealed.starts_with(SEAL_PREFIX)
    }

    /// Decrypts a sealed UTF-8 secret.
    pub fn open_str(&self, sealed: &str) -> Result<SecretString, CryptoError> {
        let bytes = self.open(sealed)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Open)?;
        Ok(SecretString::from(s.to_string()))
    }
}

/// Creates `dir` (and parents) with mode 0700 for the directories it creates.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // `recursive` applies the mode to every created level minus umask; make the leaf exact.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// `N` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// A 256-bit random token, base64url without padding (43 chars).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A 256-bit random token, lowercase hex (64 chars).
pub fn random_token_hex() -> String {
    hex::encode(random_bytes::<32>())
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` uniformly random base62 characters (rejection sampling, no modulo bias).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng.fill_bytes(&mut buf);
        for b in buf {
            // 248 = 4 * 62: values above are rejected to stay uniform.
            if b < 248 {
                out.push(BASE62[(b % 62) as usize] as char);
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

/// `n` in base62, left-padded with '0' to `width`.
pub fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(data.as_ref()))
}

pub fn sha256(data: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(data.as_ref()).into()
}

/// Constant-time equality of two byte strings (length may leak, content does not).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A secret string we hand out once (API key, session id, reset token).
/// `Debug`/`Display` print `[redacted]`; call [`Token::expose`] to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: String) -> Token {
        Token(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn into_inner(mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn data5_bound_seal_opens_only_with_its_context() {
        let k = SecretKey::generate();
        let sealed = k.seal_bound(b"telegram", b"inst-a");
        assert_eq!(
            k.open_bound(&sealed, b"inst-a").unwrap().expose_secret(),
            "telegram"
        );
        assert!(k.open_bound(&sealed, b"inst-b").is_err());
        assert!(k.open(&sealed).is_err());
        assert!(
            SecretKey::generate()
                .open_bound(&sealed, b"inst-a")
                .is_err()
        );
    }
}
