//! Brute-force protection (AUTH-5), persisted in the database so it holds across
//! control-plane replicas, and timed with the injected clock.
//!
//! - Per client address: after `login_ip_max_failures` failed logins within
//!   `login_ip_window_seconds`, further attempts from that address are refused with
//!   [`ThrottleError::Throttled`] until the oldest failure leaves the window. The same
//!   mechanism counts failed API-key authentications (`api_key_ip_max_failures`).
//! - Per account (keyed by normalised email, existing or not, so it does not reveal
//!   which accounts exist): after `login_account_lock_threshold` consecutive failures
//!   the account is soft-locked for `login_account_lock_base_seconds`, doubling with each
//!   further failure up to `login_account_lock_max_seconds`. Never permanent: attempts
//!   during a lock are refused without counting, the lock expires on its own, and a
//!   successful login resets the counter. So an attacker can slow a victim down but not
//!   lock them out for good.
//! - A generic sliding-window limiter ([`Throttle::hit`]) for report submissions and
//!   password-reset requests.

use sqlx::Row;
use std::time::Duration;

use crate::Core;
use crate::actor::{Actor, ClientInfo};
use crate::audit::AuditAction;
use crate::error::{DomainError, ErrorKind, InternalError, retry_after_from_ms};

/// After this long without a failure, an account's failure counter starts over.
const ACCOUNT_FAILURE_MEMORY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("Too many attempts. Try again in {} seconds.", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<sqlx::Error> for ThrottleError {
    fn from(e: sqlx::Error) -> Self {
        ThrottleError::Internal(e.into())
    }
}

impl DomainError for ThrottleError {
    fn code(&self) -> &'static str {
        match self {
            ThrottleError::Throttled { .. } => "too_many_attempts",
            ThrottleError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            ThrottleError::Throttled { retry_after } => ErrorKind::Throttled {
                retry_after: *retry_after,
            },
            ThrottleError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Scopes of the sliding-window counters.
pub const SCOPE_LOGIN_IP: &str = "login_ip";
pub const SCOPE_API_KEY_IP: &str = "api_key_ip";

fn addr_subject(client: &ClientInfo) -> String {
    client
        .addr_string()
        .unwrap_or_else(|| "unknown".to_string())
}

pub struct Throttle<'a> {
    pub(crate) core: &'a Core,
}

impl Throttle<'_> {
    fn cfg(&self) -> &crate::config::ThrottleConfig {
        &self.core.config().throttle
    }

    /// Refuses when `subject` has `max` or more events in `scope` within `window`.
    pub async fn check(
        &self,
        scope: &str,
        subject: &str,
        max: u32,
        window: Duration,
    ) -> Result<(), ThrottleError> {
        let now = self.core.now_ms();
        let window_ms = window.as_millis() as i64;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_events \
             WHERE scope = $1 AND subject = $2 AND at > $3",
        )
        .bind(scope)
        .bind(subject)
        .bind(now - window_ms)
        .fetch_one(self.core.store().pool())
        .await?;
        let n: i64 = row.try_get("n")?;
        if n >= i64::from(max) {
            // Retry when enough events have left the window; the oldest is a safe lower bound
            // for one slot. Find the event whose expiry frees the window below `max`.
            let rows = sqlx::query(
                "SELECT at FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3 \
                 ORDER BY at DESC LIMIT $4",
            )
            .bind(scope)
            .bind(subject)
            .bind(now - window_ms)
            .bind(i64::from(max))
            .fetch_all(self.core.store().pool())
            .await?;
            let boundary: i64 = match rows.last() {
                Some(r) => r.try_get("at")?,
                None => now,
            };
            let retry_ms = boundary + window_ms - now;
            return Err(ThrottleError::Throttled {
                retry_after: retry_after_from_ms(retry_ms),
            });
        }
        Ok(())
    }

    /// Records one event for `subject` in `scope` and forgets events older than `window`.
    /// Returns the number of events now in the window.
    pub async fn record(
        &self,
        scope: &str,
        subject: &str,
        window: Duration,
    ) -> Result<i64, ThrottleError> {
        let now = self.core.now_ms();
        let window_ms = window.as_millis() as i64;
        let pool = self.core.store().pool();
        sqlx::query("DELETE FROM rate_events WHERE scope = $1 AND subject = $2 AND at <= $3")
            .bind(scope)
            .bind(subject)
            .bind(now - window_ms)
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO rate_events (id, scope, subject, at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(scope)
            .bind(subject)
            .bind(now)
            .execute(pool)
            .await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3",
        )
        .bind(scope)
        .bind(subject)
        .bind(now - window_ms)
        .fetch_one(pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Check and record in one call: allows at most `max` events per `window`.
    pub async fn hit(
        &self,
        scope: &str,
        subject: &str,
        max: u32,
        window: Duration,
    ) -> Result<(), ThrottleError> {
        self.check(scope, subject, max, window).await?;
        self.record(scope, subject, window).await?;
        Ok(())
    }

    /// Before checking a password: refuses if the client address or the account is
    /// throttled. `email` is the normalised address as typed (account may not exist).
    pub async fn check_login(&self, client: &ClientInfo, email: &str) -> Result<(), ThrottleError> {
        let cfg = self.cfg();
        self.check(
            SCOPE_LOGIN_IP,
            &addr_subject(client),
            cfg.ip_max_failures,
            Duration::from_secs(cfg.ip_window_seconds),
        )
        .await?;
        if let Some(until) = self.account_locked_until(email).await? {
            let now = self.core.now_ms();
            if until > now {
                return Err(ThrottleError::Throttled {
                    retry_after: retry_after_from_ms(until - now),
                });
            }
        }
        Ok(())
    }

    /// When the account's soft lock ends (unix ms), if it has one.
    pub async fn account_locked_until(&self, email: &str) -> Result<Option<i64>, ThrottleError> {
        let row = sqlx::query("SELECT locked_until FROM account_locks WHERE email = $1")
            .bind(email)
            .fetch_optional(self.core.store().pool())
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("locked_until")?),
            None => None,
        })
    }

    /// After a failed password check: counts the failure for the address and the
    /// account, and locks the account when the threshold is reached. Writes an audit
    /// event when a limit starts to apply.
    pub async fn login_failed(
        &self,
        client: &ClientInfo,
        email: &str,
        user_id: Option<&str>,
    ) -> Result<(), ThrottleError> {
        let cfg = self.cfg().clone();
        let n = self
            .record(
                SCOPE_LOGIN_IP,
                &addr_subject(client),
                Duration::from_secs(cfg.ip_window_seconds),
            )
            .await?;
        let actor = Actor::anonymous(client.clone());
        if n == i64::from(cfg.ip_max_failures) {
            self.core
                .audit()
                .record(
                    user_id,
                    &actor,
                    AuditAction::LoginThrottled,
                    &format!("{n} failed logins from this address"),
                )
                .await?;
        }

        let now = self.core.now_ms();
        let pool = self.core.store().pool();
        let row =
            sqlx::query("SELECT failures, last_failure_at FROM account_locks WHERE email = $1")
                .bind(email)
                .fetch_optional(pool)
                .await?;
        let previous: i64 = match &row {
            Some(r) => {
                let last: i64 = r.try_get("last_failure_at")?;
                if now - last > ACCOUNT_FAILURE_MEMORY_MS {
                    0
                } else {
                    r.try_get("failures")?
                }
            }
            None => 0,
        };
        let failures = previous + 1;
        let threshold = i64::from(cfg.account_lock_threshold);
        let locked_until = if failures >= threshold {
            let doublings = (failures - threshold).min(30) as u32;
            let secs = cfg
                .account_lock_base_seconds
                .saturating_mul(1u64 << doublings)
                .min(cfg.account_lock_max_seconds);
            now + (secs as i64) * 1000
        } else {
            0
        };
        if row.is_some() {
            sqlx::query(
                "UPDATE account_locks SET failures = $1, locked_until = $2, last_failure_at = $3 WHERE email = $4",
            )
            .bind(failures)
            .bind(locked_until)
            .bind(now)
            .bind(email)
            .execute(pool)
            .await?;
        } else {
            let res = sqlx::query(
                "INSERT INTO account_locks (email, failures, locked_until, last_failure_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(email)
            .bind(failures)
            .bind(locked_until)
            .bind(now)
            .execute(pool)
            .await;
            if let Err(e) = res {
                // A concurrent first failure inserted the row: count this one on top.
                match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        sqlx::query(
                            "UPDATE account_locks SET failures = failures + 1, last_failure_at = $1 WHERE email = $2",
                        )
                        .bind(now)
                        .bind(email)
                        .execute(pool)
                        .await?;
                    }
                    _ => return Err(e.into()),
                }
            }
        }
        if locked_until > 0 {
            self.core
                .audit()
                .record(
                    user_id,
                    &actor,
                    AuditAction::AccountLocked,
                    &format!(
                        "{failures} consecutive failures; locked for {} s",
                        (locked_until - now) / 1000
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// After a successful login (or password reset): the account's counter starts over.
    pub async fn login_succeeded(&self, email: &str) -> Result<(), ThrottleError> {
        sqlx::query("DELETE FROM account_locks WHERE email = $1")
            .bind(email)
            .execute(self.core.store().pool())
            .await?;
        Ok(())
    }

    /// Before verifying an API key: refuses an address with too many recent failures.
    pub async fn check_api_key(&self, client: &ClientInfo) -> Result<(), ThrottleError> {
        let cfg = self.cfg();
        self.check(
            SCOPE_API_KEY_IP,
            &addr_subject(client),
            cfg.api_key_ip_max_failures,
            Duration::from_secs(cfg.ip_window_seconds),
        )
        .await
    }

    /// After a failed API-key authentication.
    pub async fn api_key_failed(&self, client: &ClientInfo) -> Result<(), ThrottleError> {
        let cfg = self.cfg().clone();
        let n = self
            .record(
                SCOPE_API_KEY_IP,
                &addr_subject(client),
                Duration::from_secs(cfg.ip_window_seconds),
            )
            .await?;
        if n == i64::from(cfg.api_key_ip_max_failures) {
            self.core
                .audit()
                .record(
                    None,
                    &Actor::anonymous(client.clone()),
                    AuditAction::ApiKeyThrottled,
                    &format!("{n} failed API-key authentications from this address"),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes counters that no longer matter (housekeeping).
    pub async fn purge_expired(&self) -> Result<(), ThrottleError> {
        let now = self.core.now_ms();
        let max_window_ms = (self.cfg().ip_window_seconds.max(3600) as i64) * 1000;
        sqlx::query("DELETE FROM rate_events WHERE at <= $1")
            .bind(now - max_window_ms)
            .execute(self.core.store().pool())
            .await?;
        sqlx::query("DELETE FROM account_locks WHERE last_failure_at <= $1 AND locked_until <= $2")
            .bind(now - ACCOUNT_FAILURE_MEMORY_MS)
            .bind(now)
            .execute(self.core.store().pool())
            .await?;
        Ok(())
    }
}
