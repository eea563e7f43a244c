//! API keys (AUTH-2).
//!
//! Format: `clawy_<r|m|a>_<32 base62 random><6 base62 checksum>` (46 chars). The
//! checksum is the first 4 bytes of SHA-256 over everything before it, as 6 base62
//! digits, so a secret scanner can recognise and verify a leaked key offline
//! ([`looks_like_key`], [`verify_checksum`]). Keys are shown once, stored as SHA-256 hex
//! with a visible prefix (first 12 chars), carry a tier `read < manage < admin`, a
//! name, creation and last-use times and an optional expiry. Verifying costs one
//! SHA-256 and one indexed lookup — never bcrypt. A key can never create or regenerate
//! a key of a higher tier than its own.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use std::str::FromStr;

use crate::Core;
use crate::accounts::{User, user_from_row};
use crate::actor::{Actor, ActorKind, ClientInfo, Tier};
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::crypto::{Token, base62_fixed, is_base62, random_base62, sha256, sha256_hex};
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};
use crate::throttle::ThrottleError;

pub const KEY_PREFIX: &str = "clawy_";
pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// `clawy_` + tier letter + `_` + random + checksum.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 2 + RANDOM_LEN + CHECKSUM_LEN;
/// How many leading characters are stored and shown to recognise a key.
pub const DISPLAY_PREFIX_LEN: usize = 12;
pub const NAME_MAX_CHARS: usize = 64;
/// Write `last_used_at` at most this often.
pub const LAST_USED_INTERVAL_MS: i64 = 60_000;

impl FromStr for Tier {
    type Err = ApiKeyError;
    fn from_str(s: &str) -> Result<Tier, ApiKeyError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Tier::Read),
            "manage" => Ok(Tier::Manage),
            "admin" => Ok(Tier::Admin),
            _ => Err(ApiKeyError::InvalidTier(s.to_string())),
        }
    }
}

/// Live (not revoked) API keys one account may hold.
pub const MAX_KEYS_PER_USER: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("Give the key a name of 1 to {NAME_MAX_CHARS} characters.")]
    InvalidName,
    #[error("`{0}` is not a tier: use read, manage or admin.")]
    InvalidTier(String),
    #[error(
        "A {creator} key cannot create or regenerate a {requested} key. Use a key (or a browser session) with at least the {requested} tier."
    )]
    TierTooHigh { creator: Tier, requested: Tier },
    #[error("The expiry date must be in the future.")]
    ExpiryInPast,
    #[error("No such API key.")]
    NotFound,
    #[error("The API key is missing, malformed, unknown, revoked or expired.")]
    InvalidKey,
    #[error("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs())]
    Throttled { retry_after: std::time::Duration },
    #[error(
        "You have {MAX_KEYS_PER_USER} API keys, the most an account may have. Revoke one you no longer use first."
    )]
    TooMany,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(ApiKeyError);

impl From<InternalError> for ApiKeyError {
    fn from(e: InternalError) -> Self {
        ApiKeyError::Internal(e)
    }
}

impl From<ThrottleError> for ApiKeyError {
    fn from(e: ThrottleError) -> Self {
        match e {
            ThrottleError::Throttled { retry_after } => ApiKeyError::Throttled { retry_after },
            ThrottleError::Internal(i) => ApiKeyError::Internal(i),
        }
    }
}

impl DomainError for ApiKeyError {
    fn code(&self) -> &'static str {
        match self {
            ApiKeyError::InvalidName => "invalid_name",
            ApiKeyError::InvalidTier(_) => "invalid_tier",
            ApiKeyError::TierTooHigh { .. } => "tier_too_high",
            ApiKeyError::ExpiryInPast => "expiry_in_past",
            ApiKeyError::TooMany => "too_many_keys",
            ApiKeyError::NotFound => "not_found",
            ApiKeyError::InvalidKey => "invalid_api_key",
            ApiKeyError::Throttled { .. } => "too_many_attempts",
            ApiKeyError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            ApiKeyError::InvalidName => ErrorKind::Invalid { field: "name" },
            ApiKeyError::InvalidTier(_) => ErrorKind::Invalid { field: "tier" },
            ApiKeyError::TierTooHigh { .. } => ErrorKind::Forbidden,
            ApiKeyError::TooMany => ErrorKind::Conflict,
            ApiKeyError::ExpiryInPast => ErrorKind::Invalid {
                field: "expires_at",
            },
            ApiKeyError::NotFound => ErrorKind::NotFound,
            ApiKeyError::InvalidKey => ErrorKind::Unauthorized,
            ApiKeyError::Throttled { retry_after } => ErrorKind::Throttled {
                retry_after: *retry_after,
            },
            ApiKeyError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// A stored key (never the secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub tier: Tier,
    /// The first 12 characters of the key, e.g. `clawy_a_7Hx2`, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// This key as the actor of a request (the audit log names its prefix).
    pub fn actor(&self, client: ClientInfo) -> Actor {
        Actor::new(
            ActorKind::ApiKey {
                user_id: self.user_id.clone(),
                key_id: self.id.clone(),
                prefix: self.prefix.clone(),
                tier: self.tier,
            },
            client,
        )
    }

    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A key just created or regenerated: `key` is shown once and never again.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: Token,
    pub api_key: ApiKey,
}

fn checksum(body: &str) -> String {
    let h = sha256(body);
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    base62_fixed(u64::from(n), CHECKSUM_LEN)
}

/// Makes a new random key of the tier.
pub fn generate_key(tier: Tier) -> Token {
    let body = format!(
        "{KEY_PREFIX}{}_{}",
        tier.letter(),
        random_base62(RANDOM_LEN)
    );
    let sum = checksum(&body);
    Token::new(format!("{body}{sum}"))
}

/// True if `s` has the shape of a Clawy API key (prefix, tier letter, length, alphabet).
pub fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..]
            .chars()
            .next()
            .and_then(Tier::from_letter)
            .is_some()
        && s.as_bytes()[KEY_PREFIX.len() + 1] == b'_'
        && is_base62(&s[KEY_PREFIX.len() + 2..])
}

/// True if `s` looks like a key and its checksum matches (offline, no database).
pub fn verify_checksum(s: &str) -> bool {
    if !looks_like_key(s) {
        return false;
    }
    let (body, sum) = s.split_at(KEY_LEN - CHECKSUM_LEN);
    crate::crypto::constant_time_eq(checksum(body).as_bytes(), sum.as_bytes())
}

/// The tier encoded in a well-formed key.
pub fn tier_of_key(s: &str) -> Option<Tier> {
    if !looks_like_key(s) {
        return None;
    }
    s[KEY_PREFIX.len()..]
        .chars()
        .next()
        .and_then(Tier::from_letter)
}

fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

fn validate_name(name: &str) -> Result<String, ApiKeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(ApiKeyError::InvalidName);
    }
    Ok(name.to_string())
}

fn check_tier(creator_tier: Option<Tier>, requested: Tier) -> Result<(), ApiKeyError> {
    match creator_tier {
        Some(creator) if creator < requested => {
            Err(ApiKeyError::TierTooHigh { creator, requested })
        }
        _ => Ok(()),
    }
}

const KEY_COLS: &str = "k.id AS k_id, k.user_id AS k_user_id, k.name AS k_name, k.tier AS k_tier, \
     k.prefix AS k_prefix, k.created_at AS k_created_at, k.last_used_at AS k_last_used_at, \
     k.expires_at AS k_expires_at, k.revoked_at AS k_revoked_at";

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<ApiKey, ApiKeyError> {
    let tier: String = r.try_get("k_tier")?;
    let opt = |c: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(ms_to_datetime))
    };
    Ok(ApiKey {
        id: r.try_get("k_id")?,
        user_id: r.try_get("k_user_id")?,
        name: r.try_get("k_name")?,
        tier: Tier::from_str(&tier)
            .map_err(|_| InternalError::other(format!("stored tier `{tier}` is unknown")))?,
        prefix: r.try_get("k_prefix")?,
        created_at: ms_to_datetime(r.try_get("k_created_at")?),
        last_used_at: opt("k_last_used_at")?,
        expires_at: opt("k_expires_at")?,
        revoked_at: opt("k_revoked_at")?,
    })
}

pub struct ApiKeys<'a> {
    pub(crate) core: &'a Core,
}

impl ApiKeys<'_> {
    /// Creates a key for `user_id`. `creator_tier` is the tier of the API key making the
    /// request, or `None` for a browser session / the admin CLI (full rights).
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        user_id: &str,
        name: &str,
        tier: Tier,
        expires_at: Option<DateTime<Utc>>,
        creator_tier: Option<Tier>,
        actor: &Actor,
    ) -> Result<NewApiKey, ApiKeyError> {
        let name = validate_name(name)?;
        check_tier(creator_tier, tier)?;
        let now = self.core.now_ms();
        if let Some(e) = expires_at {
            if e.timestamp_millis() <= now {
                return Err(ApiKeyError::ExpiryInPast);
            }
        }
        let key = generate_key(tier);
        let id = uuid::Uuid::new_v4().to_string();
        let prefix = display_prefix(key.expose());
        // Storage abuse: at most MAX_KEYS_PER_USER live keys, counted in the insert
        // itself, under the account's lock so concurrent creates cannot both pass.
        let store = self.core.store();
        let mut tx = store.pool().begin().await?;
        store.lock_subject(&mut tx, "api_keys", user_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, tier, prefix, key_hash, created_at, last_used_at, expires_at, revoked_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL WHERE \
             (SELECT COUNT(*) FROM api_keys WHERE user_id = $2 AND revoked_at IS NULL) < $9",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&name)
        .bind(tier.as_str())
        .bind(&prefix)
        .bind(sha256_hex(key.expose()))
        .bind(now)
        .bind(expires_at.map(|e| e.timestamp_millis()))
        .bind(MAX_KEYS_PER_USER)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if inserted.rows_affected() != 1 {
            return Err(ApiKeyError::TooMany);
        }
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::ApiKeyCreated,
                &format!("{prefix}… \"{name}\" ({tier})"),
            )
            .await?;
        Ok(NewApiKey {
            key,
            api_key: ApiKey {
                id,
                user_id: user_id.to_string(),
                name,
                tier,
                prefix,
                created_at: ms_to_datetime(now),
                last_used_at: None,
                expires_at: expires_at.map(|e| ms_to_datetime(e.timestamp_millis())),
                revoked_at: None,
            },
        })
    }

    /// The user's keys that are not revoked (expired ones included), newest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<ApiKey>, ApiKeyError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys k WHERE k.user_id = $1 AND k.revoked_at IS NULL \
             ORDER BY k.created_at DESC, k.id"
        )))
        .bind(user_id);
        self.core.store().rows(q, key_from_row).await
    }

    /// One of the user's keys; another user's key is [`ApiKeyError::NotFound`].
    pub async fn get(&self, user_id: &str, key_id: &str) -> Result<ApiKey, ApiKeyError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys k WHERE k.id = $1 AND k.user_id = $2 AND k.revoked_at IS NULL"
        )))
        .bind(key_id)
        .bind(user_id);
        self.core
            .store()
            .row_or(q, key_from_row, ApiKeyError::NotFound)
            .await
    }

    /// Replaces the key's secret: the old secret stops working in the same UPDATE that
    /// makes the new one valid. Same id, name, tier and expiry.
    pub async fn regenerate(
        &self,
        user_id: &str,
        key_id: &str,
        creator_tier: Option<Tier>,
        actor: &Actor,
    ) -> Result<NewApiKey, ApiKeyError> {
        let existing = self.get(user_id, key_id).await?;
        check_tier(creator_tier, existing.tier)?;
        let key = generate_key(existing.tier);
        let prefix = display_prefix(key.expose());
        let update = sqlx::query(
            "UPDATE api_keys SET key_hash = $1, prefix = $2, last_used_at = NULL \
             WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(key.expose()))
        .bind(&prefix)
        .bind(key_id)
        .bind(user_id);
        let detail = format!("{}… → {prefix}… \"{}\"", existing.prefix, existing.name);
        self.change_own(
            update,
            user_id,
            actor,
            AuditAction::ApiKeyRegenerated,
            &detail,
        )
        .await?;
        Ok(NewApiKey {
            key,
            api_key: ApiKey {
                prefix,
                last_used_at: None,
                ..existing
            },
        })
    }

    /// Revokes a key (it stops working at once and disappears from the list).
    pub async fn revoke(
        &self,
        user_id: &str,
        key_id: &str,
        actor: &Actor,
    ) -> Result<(), ApiKeyError> {
        let existing = self.get(user_id, key_id).await?;
        let update = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(self.core.now_ms())
        .bind(key_id)
        .bind(user_id);
        let detail = format!("{}… \"{}\"", existing.prefix, existing.name);
        self.change_own(update, user_id, actor, AuditAction::ApiKeyRevoked, &detail)
            .await
    }

    /// Runs `update` (scoped to the user's live key) and records it in the user's
    /// audit log; a key that is gone, revoked or someone else's is `NotFound`.
    async fn change_own(
        &self,
        update: crate::db::Query<'_>,
        user_id: &str,
        actor: &Actor,
        action: AuditAction,
        detail: &str,
    ) -> Result<(), ApiKeyError> {
        let res = update.execute(self.core.store().pool()).await?;
        if res.rows_affected() == 0 {
            return Err(ApiKeyError::NotFound);
        }
        let audit = self.core.audit();
        audit.record(Some(user_id), actor, action, detail).await?;
        Ok(())
    }

    /// Revokes every live key of the user (AUTH-2/AUTH-3: after "I was compromised",
    /// no key minted with a stolen session survives the password reset). Returns how
    /// many were revoked; each is audited.
    pub async fn revoke_all(&self, user_id: &str, actor: &Actor) -> Result<usize, ApiKeyError> {
        let keys = self.list(user_id).await?;
        let mut n = 0;
        for k in keys.iter().filter(|k| k.revoked_at.is_none()) {
            match self.revoke(user_id, &k.id, actor).await {
                Ok(()) => n += 1,
                // Revoked concurrently: the goal holds.
                Err(ApiKeyError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Checks a presented key: format and checksum offline, then one SHA-256 and one
    /// indexed lookup. `None` for anything that is not a live key. Records last use at
    /// most once a minute.
    pub async fn verify(&self, raw: &str) -> Result<Option<(User, ApiKey)>, ApiKeyError> {
        let raw = raw.trim();
        if !verify_checksum(raw) {
            return Ok(None);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS}, u.id, u.email, u.is_operator, u.created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1"
        )))
        .bind(sha256_hex(raw))
        .fetch_optional(self.core.store().pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut key = key_from_row(&row)?;
        let user = user_from_row(&row)?;
        let now = self.core.now();
        if key.revoked_at.is_some() || key.is_expired_at(now) || tier_of_key(raw) != Some(key.tier)
        {
            return Ok(None);
        }
        let now_ms = now.timestamp_millis();
        if key
            .last_used_at
            .is_none_or(|t| now_ms - t.timestamp_millis() >= LAST_USED_INTERVAL_MS)
        {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(now_ms)
            .bind(&key.id)
            .bind(now_ms - LAST_USED_INTERVAL_MS)
            .execute(self.core.store().pool())
            .await?;
            key.last_used_at = Some(ms_to_datetime(now_ms));
        }
        Ok(Some((user, key)))
    }

    /// [`ApiKeys::verify`] with per-address throttling of failures (AUTH-5): what the
    /// REST API calls for `Authorization: Bearer …`. The key is checked first: a valid
    /// key is always accepted (it carries ~190 bits; nobody guesses one), so failures
    /// by other clients behind the same address never lock its owner out. Only a
    /// failure is counted, and once the address is over its limit failures get
    /// `Throttled` (429) instead of `InvalidKey` (401).
    pub async fn authenticate(
        &self,
        raw: &str,
        client: &ClientInfo,
    ) -> Result<(User, ApiKey), ApiKeyError> {
        match self.verify(raw).await? {
            Some(found) => Ok(found),
            None => {
                self.core.throttle().api_key_failed(client).await?;
                Err(ApiKeyError::InvalidKey)
            }
        }
    }
}
