//! SSH public keys (for AUTH-4: keys are installed into VMs by cloud-init; sshd is
//! key-only).
//!
//! Accepted: ed25519, ecdsa-sha2-nistp256/384/521, rsa with at least 3072 bits, and
//! the FIDO security-key variants (sk-ssh-ed25519, sk-ecdsa-sha2-nistp256). Refused:
//! DSA, shorter RSA, anything unparseable, and pasted *private* keys — with a message
//! telling the person to rotate that key, since it has now been exposed. Fingerprints
//! are SHA256 (as `ssh-keygen -l` prints them); the same key twice for one user is
//! refused.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use crate::Core;
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};

pub const MIN_RSA_BITS: usize = 3072;
pub const NAME_MAX_CHARS: usize = 64;
/// Longer than any sane public key line (RSA 16384 is ~2.8 KB).
pub const KEY_MAX_BYTES: usize = 16 * 1024;

/// SSH keys one account may hold.
pub const MAX_KEYS_PER_USER: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    #[error("Give the key a name of 1 to {NAME_MAX_CHARS} characters.")]
    InvalidName,
    #[error(
        "This is a PRIVATE key. Never paste a private key anywhere: treat it as exposed now. Create a new key pair (ssh-keygen -t ed25519), remove the old public key from every server that trusts it, and paste the new .pub file here (it starts with ssh-ed25519)."
    )]
    PrivateKey,
    #[error(
        "This is not an OpenSSH public key. Paste one line from your .pub file, like `ssh-ed25519 AAAA… you@laptop`."
    )]
    Unparseable,
    #[error("Paste exactly one public key.")]
    MultipleKeys,
    #[error(
        "DSA keys are refused: they are limited to 1024 bits and deprecated by OpenSSH. Use ssh-keygen -t ed25519."
    )]
    Dsa,
    #[error(
        "This RSA key has {bits} bits; at least {MIN_RSA_BITS} are required. Use ssh-keygen -t ed25519 (or -t rsa -b 4096)."
    )]
    RsaTooShort { bits: usize },
    #[error("Key type `{0}` is not supported. Use ed25519, ecdsa or rsa (≥ 3072 bits).")]
    UnsupportedType(String),
    #[error("You have already added this key.")]
    Duplicate,
    #[error(
        "You have {MAX_KEYS_PER_USER} SSH keys, the most an account may have. Delete one you no longer use first."
    )]
    TooMany,
    #[error("No such SSH key.")]
    NotFound,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(SshKeyError);

impl From<InternalError> for SshKeyError {
    fn from(e: InternalError) -> Self {
        SshKeyError::Internal(e)
    }
}

impl DomainError for SshKeyError {
    fn code(&self) -> &'static str {
        match self {
            SshKeyError::InvalidName => "invalid_name",
            SshKeyError::PrivateKey => "private_key_pasted",
            SshKeyError::Unparseable => "invalid_public_key",
            SshKeyError::MultipleKeys => "multiple_keys",
            SshKeyError::Dsa => "dsa_refused",
            SshKeyError::RsaTooShort { .. } => "rsa_too_short",
            SshKeyError::UnsupportedType(_) => "unsupported_key_type",
            SshKeyError::Duplicate => "duplicate_key",
            SshKeyError::TooMany => "too_many_keys",
            SshKeyError::NotFound => "not_found",
            SshKeyError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            SshKeyError::InvalidName => ErrorKind::Invalid { field: "name" },
            SshKeyError::PrivateKey
            | SshKeyError::Unparseable
            | SshKeyError::MultipleKeys
            | SshKeyError::Dsa
            | SshKeyError::RsaTooShort { .. }
            | SshKeyError::UnsupportedType(_) => ErrorKind::Invalid {
                field: "public_key",
            },
            SshKeyError::Duplicate | SshKeyError::TooMany => ErrorKind::Conflict,
            SshKeyError::NotFound => ErrorKind::NotFound,
            SshKeyError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// A validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub algorithm: String,
    /// e.g. `SHA256:abc…` (as `ssh-keygen -lf` prints it).
    pub fingerprint: String,
    /// Key bits for RSA, `None` otherwise.
    pub rsa_bits: Option<usize>,
    /// The canonical `type base64 comment` line.
    pub openssh: String,
    pub comment: String,
}

fn rsa_bits(n: &ssh_key::Mpint) -> usize {
    match n.as_positive_bytes() {
        Some(b) if !b.is_empty() => (b.len() - 1) * 8 + (8 - b[0].leading_zeros() as usize),
        _ => 0,
    }
}

/// Parses and checks one OpenSSH public key line.
pub fn parse_public_key(text: &str) -> Result<ParsedKey, SshKeyError> {
    // Checked first and on the raw input: a private key must never be echoed or parsed.
    if text.contains("PRIVATE KEY") || text.contains("PuTTY-User-Key-File") {
        return Err(SshKeyError::PrivateKey);
    }
    if text.len() > KEY_MAX_BYTES {
        return Err(SshKeyError::Unparseable);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let line = match lines.as_slice() {
        [one] => *one,
        [] => return Err(SshKeyError::Unparseable),
        _ => return Err(SshKeyError::MultipleKeys),
    };
    if line.starts_with("ssh-dss ") {
        return Err(SshKeyError::Dsa);
    }
    let mut key = PublicKey::from_openssh(line).map_err(|_| SshKeyError::Unparseable)?;
    // AUTH-4: stored with a comment the agent accepts (one shared rule), so a key
    // accepted here cannot later make the agent refuse the owner's VM spec.
    let comment = clawy_proto::agent::clean_ssh_key_comment(key.comment());
    key.set_comment(comment);
    let mut bits = None;
    match key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(rsa) => {
            let b = rsa_bits(&rsa.n);
            if b < MIN_RSA_BITS {
                return Err(SshKeyError::RsaTooShort { bits: b });
            }
            bits = Some(b);
        }
        KeyData::Dsa(_) => return Err(SshKeyError::Dsa),
        other => {
            return Err(SshKeyError::UnsupportedType(
                other.algorithm().as_str().to_string(),
            ));
        }
    }
    let openssh = key.to_openssh().map_err(|_| SshKeyError::Unparseable)?;
    Ok(ParsedKey {
        algorithm: key.algorithm().as_str().to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        rsa_bits: bits,
        openssh,
        comment: key.comment().to_string(),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SshKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub algorithm: String,
    pub fingerprint: String,
    /// The canonical public key line (what cloud-init installs).
    pub public_key: String,
    pub created_at: DateTime<Utc>,
}

fn validate_name(name: &str) -> Result<String, SshKeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(SshKeyError::InvalidName);
    }
    Ok(name.to_string())
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<SshKey, sqlx::Error> {
    Ok(SshKey {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        algorithm: r.try_get("algorithm")?,
        fingerprint: r.try_get("fingerprint")?,
        public_key: r.try_get("public_key")?,
        created_at: ms_to_datetime(r.try_get("created_at")?),
    })
}

const COLS: &str = "id, user_id, name, algorithm, fingerprint, public_key, created_at";

pub struct SshKeys<'a> {
    pub(crate) core: &'a Core,
}

impl SshKeys<'_> {
    /// Validates and stores a public key for the user. An empty `name` takes the key's
    /// comment (or its type).
    pub async fn add(
        &self,
        user_id: &str,
        name: &str,
        public_key: &str,
        actor: &Actor,
    ) -> Result<SshKey, SshKeyError> {
        let parsed = parse_public_key(public_key)?;
        let name = if name.trim().is_empty() {
            if parsed.comment.trim().is_empty() {
                parsed.algorithm.clone()
            } else {
                parsed.comment.clone()
            }
        } else {
            name.to_string()
        };
        let name = validate_name(&name)?;
        let exists = sqlx::query("SELECT id FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2")
            .bind(user_id)
            .bind(&parsed.fingerprint)
            .fetch_optional(self.core.store().pool())
            .await?;
        if exists.is_some() {
            return Err(SshKeyError::Duplicate);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.core.now_ms();
        // Storage abuse: at most MAX_KEYS_PER_USER keys, counted in the insert itself,
        // under the account's lock so concurrent adds cannot both pass.
        let store = self.core.store();
        let mut tx = store.pool().begin().await?;
        store.lock_subject(&mut tx, "ssh_keys", user_id).await?;
        let res = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ssh_keys ({COLS}) SELECT $1, $2, $3, $4, $5, $6, $7 WHERE \
             (SELECT COUNT(*) FROM ssh_keys WHERE user_id = $2) < $8"
        )))
        .bind(&id)
        .bind(user_id)
        .bind(&name)
        .bind(&parsed.algorithm)
        .bind(&parsed.fingerprint)
        .bind(&parsed.openssh)
        .bind(now)
        .bind(MAX_KEYS_PER_USER)
        .execute(&mut *tx)
        .await;
        let inserted = match res {
            Ok(done) => {
                tx.commit().await?;
                done.rows_affected()
            }
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(SshKeyError::Duplicate);
            }
            Err(e) => return Err(e.into()),
        };
        if inserted != 1 {
            return Err(SshKeyError::TooMany);
        }
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::SshKeyAdded,
                &format!("\"{name}\" {} {}", parsed.algorithm, parsed.fingerprint),
            )
            .await?;
        Ok(SshKey {
            id,
            user_id: user_id.to_string(),
            name,
            algorithm: parsed.algorithm,
            fingerprint: parsed.fingerprint,
            public_key: parsed.openssh,
            created_at: ms_to_datetime(now),
        })
    }

    /// The user's keys, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SshKey>, SshKeyError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM ssh_keys WHERE user_id = $1 ORDER BY created_at, id"
        )))
        .bind(user_id);
        self.core.store().rows(q, key_from_row).await
    }

    /// One of the user's keys; another user's key is [`SshKeyError::NotFound`].
    pub async fn get(&self, user_id: &str, key_id: &str) -> Result<SshKey, SshKeyError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM ssh_keys WHERE id = $1 AND user_id = $2"
        )))
        .bind(key_id)
        .bind(user_id);
        self.core
            .store()
            .row_or(q, key_from_row, SshKeyError::NotFound)
            .await
    }

    /// Deletes one of the user's keys.
    pub async fn delete(
        &self,
        user_id: &str,
        key_id: &str,
        actor: &Actor,
    ) -> Result<(), SshKeyError> {
        let key = self.get(user_id, key_id).await?;
        let res = sqlx::query("DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2")
            .bind(key_id)
            .bind(user_id)
            .execute(self.core.store().pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(SshKeyError::NotFound);
        }
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::SshKeyRemoved,
                &format!("\"{}\" {} {}", key.name, key.algorithm, key.fingerprint),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    const BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAINaIndXuXruf3bjmXlIo5mUg3rBJo/hZ+GWPfqpgZcSv";

    proptest! {
        /// AUTH-4: whatever is pasted, parsing never panics, and an accepted key is
        /// one line whose comment passes the agent's rule.
        #[test]
        fn hostile_public_keys_never_panic_or_store_unsafe(
            prefix in "(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp256|-----BEGIN)?",
            blob in prop_oneof![Just(BLOB.to_string()), "[A-Za-z0-9+/=]{0,120}", ".{0,120}"],
            comment in ".{0,80}",
        ) {
            let line = format!("{prefix} {blob} {comment}");
            if let Ok(parsed) = parse_public_key(&line) {
                prop_assert!(!parsed.openssh.contains('\n'));
                prop_assert!(clawy_proto::agent::is_safe_ssh_key_comment(&parsed.comment));
                let stored = parsed.openssh.splitn(3, ' ').nth(2).unwrap_or_default();
                prop_assert!(clawy_proto::agent::is_safe_ssh_key_comment(stored));
            }
        }

        /// Anything at all: no panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse_public_key(&text);
        }
    }
}
