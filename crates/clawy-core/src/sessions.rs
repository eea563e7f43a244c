//! Server-side web sessions (AUTH-3).
//!
//! The cookie carries a 256-bit random secret; the table stores only its SHA-256
//! (`token_hash`) and a separate random public `id` used to list and revoke sessions.
//! A session ends on logout, on revocation, on password change/reset, after
//! `session_idle_minutes` without use and `session_absolute_hours` after creation —
//! all decided with the injected clock. `last_seen_at` is written at most once a
//! minute to save writes.
//!
//! CSRF: the per-session token is derived from the session secret
//! (`base64url(SHA-256("clawy-csrf-v1:" + secret))`), so it is never stored and cannot
//! be computed from the database; it is compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::accounts::{AccountError, User, user_from_row};
use crate::actor::{Actor, ClientInfo};
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::crypto::{Token, constant_time_eq, random_token, sha256, sha256_hex};
use crate::db::Query;
use crate::error::{CoreError, DomainError, ErrorKind, InternalError, internal_from};
use crate::names::truncate_chars;
use crate::page::{Keyset, Page, PageRequest, created_cursor};

/// Cookie name for the session (the `__Host-` prefix requires `Secure`, `Path=/` and
/// no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-clawy_session";
/// Write `last_seen_at` at most this often.
pub const TOUCH_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("You are not signed in, or your session has ended. Sign in again.")]
    Invalid,
    #[error("No such session.")]
    NotFound,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(SessionError);

impl From<InternalError> for SessionError {
    fn from(e: InternalError) -> Self {
        SessionError::Internal(e)
    }
}

impl DomainError for SessionError {
    fn code(&self) -> &'static str {
        match self {
            SessionError::Invalid => "session_invalid",
            SessionError::NotFound => "not_found",
            SessionError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            SessionError::Invalid => ErrorKind::Unauthorized,
            SessionError::NotFound => ErrorKind::NotFound,
            SessionError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// A session as listed on the account page. `id` is public (not the cookie secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    /// When the session ends if unused (idle timeout).
    pub idle_expires_at: DateTime<Utc>,
    /// When the session ends regardless (absolute timeout).
    pub absolute_expires_at: DateTime<Utc>,
}

/// Returned once at login: `token` goes into the cookie and is never shown again.
#[derive(Debug)]
pub struct NewSession {
    pub token: Token,
    pub session: Session,
    pub csrf_token: String,
}

/// The result of checking a cookie.
#[derive(Debug, Clone)]
pub struct AuthenticatedSession {
    pub user: User,
    pub session: Session,
    /// Put this in every state-changing form; check with [`AuthenticatedSession::verify_csrf`].
    pub csrf_token: String,
}

impl AuthenticatedSession {
    /// Constant-time check of a submitted CSRF token.
    pub fn verify_csrf(&self, presented: &str) -> bool {
        verify_csrf(&self.csrf_token, presented)
    }
}

/// The CSRF token belonging to a session secret.
pub fn csrf_token_for(session_secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(format!("clawy-csrf-v1:{session_secret}")))
}

/// Constant-time comparison of CSRF tokens.
pub fn verify_csrf(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

pub struct Sessions<'a> {
    pub(crate) core: &'a Core,
}

/// Sessions, most recently used first.
const SESSION_ORDER: Keyset = Keyset {
    time: "s.last_seen_at",
    key: "s.id",
    newest_first: true,
};

const SESSION_COLS: &str = "s.id AS s_id, s.user_id AS s_user_id, s.created_at AS s_created_at, \
     s.last_seen_at AS s_last_seen_at, s.client_addr AS s_client_addr, s.user_agent AS s_user_agent";

impl Sessions<'_> {
    fn idle_ms(&self) -> i64 {
        self.core.config().session_idle().as_millis() as i64
    }
    fn absolute_ms(&self) -> i64 {
        self.core.config().session_absolute().as_millis() as i64
    }

    fn session_from_row(&self, r: &sqlx::any::AnyRow) -> Result<Session, sqlx::Error> {
        let created: i64 = r.try_get("s_created_at")?;
        let seen: i64 = r.try_get("s_last_seen_at")?;
        Ok(Session {
            id: r.try_get("s_id")?,
            user_id: r.try_get("s_user_id")?,
            created_at: ms_to_datetime(created),
            last_seen_at: ms_to_datetime(seen),
            client_addr: r.try_get("s_client_addr")?,
            user_agent: r.try_get("s_user_agent")?,
            idle_expires_at: ms_to_datetime(seen + self.idle_ms()),
            absolute_expires_at: ms_to_datetime(created + self.absolute_ms()),
        })
    }

    /// Starts a new session for a user who just proved who they are. Always a fresh id
    /// (no fixation: the web layer discards any cookie it had before).
    pub async fn create(
        &self,
        user: &User,
        client: &ClientInfo,
    ) -> Result<NewSession, SessionError> {
        let token = Token::new(random_token());
        let now = self.core.now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let user_agent = client.user_agent.as_deref().map(|s| truncate_chars(s, 256));
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, client_addr, user_agent) \
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        )
        .bind(&id)
        .bind(sha256_hex(token.expose()))
        .bind(&user.id)
        .bind(now)
        .bind(client.addr_string())
        .bind(user_agent.clone())
        .execute(self.core.store().pool())
        .await?;
        let csrf_token = csrf_token_for(token.expose());
        Ok(NewSession {
            session: Session {
                id,
                user_id: user.id.clone(),
                created_at: ms_to_datetime(now),
                last_seen_at: ms_to_datetime(now),
                client_addr: client.addr_string(),
                user_agent,
                idle_expires_at: ms_to_datetime(now + self.idle_ms()),
                absolute_expires_at: ms_to_datetime(now + self.absolute_ms()),
            },
            token,
            csrf_token,
        })
    }

    /// Checks a cookie value: unknown, idle-expired and absolutely-expired sessions are
    /// all [`SessionError::Invalid`] (expired ones are deleted).
    pub async fn authenticate(&self, raw: &str) -> Result<AuthenticatedSession, SessionError> {
        if raw.is_empty() || raw.len() > 128 {
            return Err(SessionError::Invalid);
        }
        let now = self.core.now_ms();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLS}, u.id, u.email, u.is_operator, u.created_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1"
        )))
        .bind(sha256_hex(raw))
        .fetch_optional(self.core.store().pool())
        .await?
        .ok_or(SessionError::Invalid)?;
        let mut session = self.session_from_row(&row)?;
        let user = user_from_row(&row)?;
        let created = session.created_at.timestamp_millis();
        let seen = session.last_seen_at.timestamp_millis();
        if now >= seen + self.idle_ms() || now >= created + self.absolute_ms() {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(&session.id)
                .execute(self.core.store().pool())
                .await?;
            return Err(SessionError::Invalid);
        }
        if now - seen >= TOUCH_INTERVAL_MS {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&session.id)
                .execute(self.core.store().pool())
                .await?;
            session.last_seen_at = ms_to_datetime(now);
            session.idle_expires_at = ms_to_datetime(now + self.idle_ms());
        }
        Ok(AuthenticatedSession {
            user,
            session,
            csrf_token: csrf_token_for(raw),
        })
    }

    /// Ends the session carried by a cookie (logout). Unknown cookies are fine.
    pub async fn logout(&self, raw: &str, actor: &Actor) -> Result<(), SessionError> {
        let row = sqlx::query("SELECT user_id FROM sessions WHERE token_hash = $1")
            .bind(sha256_hex(raw))
            .fetch_optional(self.core.store().pool())
            .await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(sha256_hex(raw))
            .execute(self.core.store().pool())
            .await?;
        if let Some(r) = row {
            let user_id: String = r.try_get("user_id")?;
            self.core
                .audit()
                .record(Some(&user_id), actor, AuditAction::Logout, "")
                .await?;
        }
        Ok(())
    }

    /// A page of the user's live sessions, most recently used first (ties by id).
    /// Expired ones are removed first. The order is by a time that use moves forward,
    /// so a session used between two page reads can move to the first page (and be
    /// missed by a reader further on); a person has few sessions, so this is the
    /// order worth showing, not a stable one.
    pub async fn page_for_user(
        &self,
        user_id: &str,
        req: &PageRequest,
    ) -> Result<Page<Session>, CoreError> {
        self.purge_expired_for(user_id)
            .await
            .map_err(CoreError::new)?;
        let select = format!("SELECT {SESSION_COLS} FROM sessions s");
        let owner = |q: Query<'static>| q.bind(user_id.to_string());
        let cursor = |s: &Session| created_cursor(s.last_seen_at.timestamp_millis(), &s.id);
        self.core
            .store()
            .page::<_, _, SessionError>(
                SESSION_ORDER,
                req,
                (&select, "s.user_id = $4"),
                owner,
                |r| self.session_from_row(r),
                cursor,
            )
            .await
    }

    /// The user's live sessions, most recently used first. Expired ones are removed.
    pub async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, SessionError> {
        self.purge_expired_for(user_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLS} FROM sessions s WHERE s.user_id = $1 ORDER BY s.last_seen_at DESC"
        )))
        .bind(user_id)
        .fetch_all(self.core.store().pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| self.session_from_row(r))
            .collect::<Result<_, _>>()?)
    }

    async fn purge_expired_for(&self, user_id: &str) -> Result<(), SessionError> {
        let now = self.core.now_ms();
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND (last_seen_at <= $2 OR created_at <= $3)",
        )
        .bind(user_id)
        .bind(now - self.idle_ms())
        .bind(now - self.absolute_ms())
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }

    /// Deletes every expired session (housekeeping).
    pub async fn purge_expired(&self) -> Result<u64, SessionError> {
        let now = self.core.now_ms();
        let res = sqlx::query("DELETE FROM sessions WHERE last_seen_at <= $1 OR created_at <= $2")
            .bind(now - self.idle_ms())
            .bind(now - self.absolute_ms())
            .execute(self.core.store().pool())
            .await?;
        Ok(res.rows_affected())
    }

    /// Revokes one of the user's sessions by public id. Another user's session is
    /// [`SessionError::NotFound`].
    pub async fn revoke(
        &self,
        user_id: &str,
        session_id: &str,
        actor: &Actor,
    ) -> Result<(), SessionError> {
        let res = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
            .bind(session_id)
            .bind(user_id)
            .execute(self.core.store().pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(SessionError::NotFound);
        }
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::SessionRevoked,
                &format!("session {session_id}"),
            )
            .await?;
        Ok(())
    }

    /// Revokes all of the user's sessions except `keep` (a public id). Returns how many.
    pub async fn revoke_all_except(&self, user_id: &str, keep: &str) -> Result<u64, SessionError> {
        let res = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(self.core.store().pool())
            .await?;
        Ok(res.rows_affected())
    }

    /// Revokes all of the user's sessions. Returns how many.
    pub async fn revoke_all(&self, user_id: &str) -> Result<u64, SessionError> {
        let res = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(self.core.store().pool())
            .await?;
        Ok(res.rows_affected())
    }

    /// "Sign out everywhere else" from the account page, audited.
    pub async fn revoke_others(
        &self,
        user_id: &str,
        keep: &str,
        actor: &Actor,
    ) -> Result<u64, SessionError> {
        let n = self.revoke_all_except(user_id, keep).await?;
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::SessionsRevoked,
                &format!("{n} other sessions"),
            )
            .await?;
        Ok(n)
    }
}

/// Account operations that end sessions (password change and reset) report a
/// session failure as their own internal error. (Here rather than in `accounts`, which
/// reaches sessions only through `Core`.)
impl From<SessionError> for AccountError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Internal(i) => AccountError::Internal(i),
            other => AccountError::Internal(InternalError::other(other.to_string())),
        }
    }
}

#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// AUTH-3: a CSRF token matches only itself; the empty expectation (no
        /// session) matches nothing, not even an empty presented token.
        #[test]
        fn csrf_tokens_match_only_themselves(secret in ".{1,64}", presented in ".{0,64}") {
            let expected = csrf_token_for(&secret);
            prop_assert!(verify_csrf(&expected, &expected));
            prop_assert_eq!(verify_csrf(&expected, &presented), presented == expected);
            prop_assert!(!verify_csrf("", &presented));
        }
    }
}
