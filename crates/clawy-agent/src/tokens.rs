//! Bearer tokens for the agent API (DATA-3).
//!
//! `clawy agent token create` prints a random token once; the tokens file (0600 in
//! the state dir) keeps only its SHA-256. Several tokens may be live at once so the
//! control plane can rotate without downtime. The running agent re-reads the file
//! when its identity (inode, size, mtime) changes, so a revocation takes effect on
//! the next request without a restart. Verification hashes the presented token and
//! compares it with every live hash in constant time.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

pub const TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "clawyagt_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid tokens file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("a token named `{0}` already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("token names are 1-64 of [A-Za-z0-9._-]")]
    BadName,
    #[error("no token with name or id `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Files(#[from] crate::tls::TlsError),
}

/// A plaintext token. Never logged: Debug and Display print `[redacted]`.
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenRecord>,
}

fn tokens_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKENS_FILE)
}

fn read_file(path: &Path) -> Result<TokensFile, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
        Err(source) => Err(TokenError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_file(path: &Path, file: &TokensFile) -> Result<(), TokenError> {
    let json = serde_json::to_vec_pretty(file).map_err(|e| TokenError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::tls::write_private_file(path, &json)?;
    Ok(())
}

fn hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Create a token, store its hash, return the plaintext (shown once).
pub fn create(state_dir: &Path, name: Option<&str>) -> Result<(TokenRecord, Token), TokenError> {
    crate::tls::ensure_private_dir(state_dir)?;
    let path = tokens_path(state_dir);
    let mut file = read_file(&path)?;
    let mut rng = rand::rngs::OsRng;
    let mut id_bytes = [0u8; 4];
    rng.fill_bytes(&mut id_bytes);
    let id = hex::encode(id_bytes);
    let name = match name {
        Some(n) => {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(TokenError::BadName);
            }
            n.to_string()
        }
        None => format!("token-{id}"),
    };
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(TokenError::NameTaken(name));
    }
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let token = Token(format!("{TOKEN_PREFIX}{}", hex::encode(secret)));
    let record = TokenRecord {
        id,
        name,
        sha256: hash_hex(token.expose()),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    file.tokens.push(record.clone());
    write_file(&path, &file)?;
    Ok((record, token))
}

pub fn list(state_dir: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(read_file(&tokens_path(state_dir))?.tokens)
}

/// Revoke by name or id; returns the removed record.
pub fn revoke(state_dir: &Path, name_or_id: &str) -> Result<TokenRecord, TokenError> {
    let path = tokens_path(state_dir);
    let mut file = read_file(&path)?;
    let pos = file
        .tokens
        .iter()
        .position(|t| t.name == name_or_id || t.id == name_or_id)
        .ok_or_else(|| TokenError::NotFound(name_or_id.to_string()))?;
    let removed = file.tokens.remove(pos);
    write_file(&path, &file)?;
    Ok(removed)
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

struct Cache {
    stamp: Option<FileStamp>,
    hashes: Vec<[u8; 32]>,
}

/// The running agent's view of the tokens file.
pub struct TokenVerifier {
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl TokenVerifier {
    pub fn new(state_dir: &Path) -> Self {
        TokenVerifier {
            path: tokens_path(state_dir),
            cache: Mutex::new(Cache {
                stamp: None,
                hashes: Vec::new(),
            }),
        }
    }

    fn stamp(&self) -> Option<FileStamp> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some(FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// True when `presented` matches a live token. Fails closed: an unreadable or
    /// corrupt file means no token is valid.
    pub fn verify(&self, presented: &str) -> bool {
        let stamp = self.stamp();
        let Ok(mut cache) = self.cache.lock() else {
            return false;
        };
        if cache.stamp != stamp || stamp.is_none() {
            cache.hashes = match read_file(&self.path) {
                Ok(f) => f
                    .tokens
                    .iter()
                    .filter_map(|t| {
                        let v = hex::decode(&t.sha256).ok()?;
                        <[u8; 32]>::try_from(v.as_slice()).ok()
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the tokens file; refusing all tokens");
                    Vec::new()
                }
            };
            cache.stamp = stamp;
        }
        let presented_hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // DATA-3: compare against every live hash without an early exit.
        let mut matched = subtle::Choice::from(0u8);
        for h in &cache.hashes {
            matched |= h.ct_eq(&presented_hash);
        }
        bool::from(matched)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn data_3_tokens_stored_hashed_several_live_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = TokenVerifier::new(dir.path());
        assert!(!verifier.verify("anything"));
        let (rec_a, a) = create(dir.path(), Some("cp-a")).unwrap();
        let (_rec_b, b) = create(dir.path(), None).unwrap();
        assert_eq!(format!("{a:?} {a}"), "[redacted] [redacted]");
        let stored = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(a.expose()) && !stored.contains(b.expose()));
        let mode = std::fs::metadata(dir.path().join(TOKENS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(verifier.verify(a.expose()));
        assert!(verifier.verify(b.expose()));
        assert!(!verifier.verify(&format!("{}x", a.expose())));
        assert!(matches!(
            create(dir.path(), Some("cp-a")),
            Err(TokenError::NameTaken(_))
        ));
        revoke(dir.path(), &rec_a.id).unwrap();
        assert!(
            !verifier.verify(a.expose()),
            "revocation must take effect without restart"
        );
        assert!(verifier.verify(b.expose()));
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert!(matches!(
            revoke(dir.path(), "cp-a"),
            Err(TokenError::NotFound(_))
        ));
    }

    /// DATA-3: token names are short and plain (they are printed by the CLI and
    /// stored in the tokens file); anything else is refused before a token exists.
    #[test]
    fn data_3_token_names_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let long_ok = "a".repeat(64);
        for good in ["cp-a.1_x", long_ok.as_str()] {
            create(dir.path(), Some(good)).unwrap();
        }
        let too_long = "a".repeat(65);
        for bad in ["", "a b", "x;rm", "a\nb", "ü", too_long.as_str()] {
            assert!(
                matches!(create(dir.path(), Some(bad)), Err(TokenError::BadName)),
                "{bad:?}"
            );
        }
        assert_eq!(list(dir.path()).unwrap().len(), 2);
    }

    /// DATA-3: revocation takes effect without a restart even when the tokens file is
    /// rewritten in place (same inode, same length): the cached hashes are dropped
    /// whenever the file's modification time changes, however the times fall.
    #[test]
    fn data_3_verifier_notices_every_rewrite_of_the_file() {
        use std::io::Write;
        use std::time::{Duration, UNIX_EPOCH};
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = create(dir.path(), Some("a")).unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let with_a = std::fs::read_to_string(&path).unwrap();
        let without_a = with_a.replace(&hash_hex(a.expose()), &hash_hex("another token"));
        assert_eq!(with_a.len(), without_a.len());
        let verifier = TokenVerifier::new(dir.path());
        let t = 1_700_000_000;
        // (content, mtime seconds, nanoseconds, a is valid)
        for (text, secs, nanos, valid) in [
            (&with_a, t, 5, true),
            (&without_a, t + 1, 4, false),
            (&with_a, t + 2, 0, true),
            (&without_a, t + 3, 0, false),
        ] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
                .unwrap();
            drop(f);
            assert_eq!(verifier.verify(a.expose()), valid, "at {secs}.{nanos}");
        }
    }

    /// DATA-3: a tokens file that exists but cannot be read is an error, never "no
    /// tokens yet": creating a token must not replace the live ones, and every
    /// presented token is refused (fails closed).
    #[test]
    fn data_3_unreadable_tokens_file_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(matches!(list(dir.path()), Err(TokenError::Io { .. })));
        assert!(matches!(
            create(dir.path(), Some("cp")),
            Err(TokenError::Io { .. })
        ));
        assert!(!TokenVerifier::new(dir.path()).verify("anything"));
    }
}
