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
//! - A generic sliding-window limiter ([`Throttle::hit`]) for report submissions,
//!   password-reset requests and signups.
//!
//! Every limit is check-and-count in one atomic step ([`Throttle::take`]), and a login
//! is counted as a failure *before* its password is checked (and un-counted when it
//! was right), so concurrent requests cannot all pass a check none of them has counted.
//! Per-address limits count IPv6 clients by prefix ([`addr_bucket`]).

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
pub const SCOPE_SIGNUP_IP: &str = "signup_ip";
pub const SCOPE_LOGIN_DEVICE: &str = "login_device";
/// One audit row per subject per window for refused logins (aggregation: anonymous
/// traffic cannot grow the audit log one row per request).
const SCOPE_AUDIT_REFUSED: &str = "audit_login_refused";

/// The bucket a client address is counted in: an IPv4 address as itself, an IPv6
/// address by its `prefix` (default /64), so rotating through one's own /64 does not
/// reset any per-address limit.
pub fn addr_bucket(client: &ClientInfo, ipv6_prefix: u8) -> String {
    match client.addr.map(crate::config::canonical_ip) {
        Some(std::net::IpAddr::V6(v6)) => {
            let prefix = ipv6_prefix.clamp(1, 128);
            let mask = u128::MAX << (128 - u32::from(prefix));
            let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{prefix}")
        }
        Some(v4) => v4.to_string(),
        None => "unknown".to_string(),
    }
}

/// One event counted against a limit (a row of `rate_events`); giving it back
/// un-counts it (a login that turned out to be the right password).
#[derive(Debug)]
pub struct Slot {
    id: String,
    /// Events in the window including this one.
    pub count: i64,
}

/// A login attempt already counted before the password is checked (AUTH-5): the
/// address's slot and the account's failure counter were taken atomically, so N
/// concurrent guesses cannot all pass a check that none of them has counted yet.
#[derive(Debug)]
#[must_use = "finish the attempt with Throttle::login_failed or login_succeeded"]
pub struct LoginAttempt {
    ip: Slot,
    /// Counted against a known device instead of the account.
    device: Option<Slot>,
    email: String,
    /// The account counter after this attempt, and the lock it started (unix ms, 0 if none).
    failures: i64,
    locked_until: i64,
}

pub struct Throttle<'a> {
    pub(crate) core: &'a Core,
}

impl Throttle<'_> {
    fn cfg(&self) -> &crate::config::ThrottleConfig {
        &self.core.config().throttle
    }

    /// The bucket `client` is counted in for per-address limits.
    pub fn subject(&self, client: &ClientInfo) -> String {
        addr_bucket(client, self.cfg().ipv6_bucket_prefix)
    }

    /// Atomic check-and-count (AUTH-5, REPORT-1): records one event for `subject` in
    /// `scope` only if fewer than `max` are in `window`, else refuses with the time
    /// until a slot frees. One transaction that starts by writing: on SQLite the first
    /// write takes the database's write lock, on PostgreSQL a transaction-scoped
    /// advisory lock on (scope, subject) serialises the count and the insert, so
    /// concurrent callers cannot all see "below the limit".
    pub async fn take(
        &self,
        scope: &str,
        subject: &str,
        max: u32,
        window: Duration,
    ) -> Result<Slot, ThrottleError> {
        let now = self.core.now_ms();
        let window_ms = window.as_millis() as i64;
        let store = self.core.store();
        let mut tx = store.pool().begin().await?;
        store.lock_subject(&mut tx, scope, subject).await?;
        sqlx::query("DELETE FROM rate_events WHERE scope = $1 AND subject = $2 AND at <= $3")
            .bind(scope)
            .bind(subject)
            .bind(now - window_ms)
            .execute(&mut *tx)
            .await?;
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = sqlx::query(
            "INSERT INTO rate_events (id, scope, subject, at) \
             SELECT $1, $2, $3, $4 WHERE \
             (SELECT COUNT(*) FROM rate_events WHERE scope = $2 AND subject = $3 AND at > $5) < $6",
        )
        .bind(&id)
        .bind(scope)
        .bind(subject)
        .bind(now)
        .bind(now - window_ms)
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3",
            )
            .bind(scope)
            .bind(subject)
            .bind(now - window_ms)
            .fetch_one(&mut *tx)
            .await?;
            let count: i64 = row.try_get("n")?;
            tx.commit().await?;
            return Ok(Slot { id, count });
        }
        // Refused: retry when the event whose expiry brings the window below `max` leaves.
        let rows = sqlx::query(
            "SELECT at FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3 \
             ORDER BY at DESC LIMIT $4",
        )
        .bind(scope)
        .bind(subject)
        .bind(now - window_ms)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let boundary: i64 = match rows.last() {
            Some(r) => r.try_get("at")?,
            None => now,
        };
        Err(ThrottleError::Throttled {
            retry_after: retry_after_from_ms(boundary + window_ms - now),
        })
    }

    /// Un-counts an event taken with [`Throttle::take`].
    pub async fn give_back(&self, slot: Slot) -> Result<(), ThrottleError> {
        sqlx::query("DELETE FROM rate_events WHERE id = $1")
            .bind(&slot.id)
            .execute(self.core.store().pool())
            .await?;
        Ok(())
    }

    /// Check and count in one atomic step: allows at most `max` events per `window`.
    pub async fn hit(
        &self,
        scope: &str,
        subject: &str,
        max: u32,
        window: Duration,
    ) -> Result<(), ThrottleError> {
        self.take(scope, subject, max, window).await.map(|_| ())
    }

    /// Before checking a password: counts the attempt as a failure for the client
    /// address and the account *first* (AUTH-5), atomically per counter, and refuses
    /// when either is over its limit. So of N concurrent wrong guesses at most the
    /// limit reach bcrypt. Finish with [`Throttle::login_succeeded_attempt`] (un-counts)
    /// or [`Throttle::login_failed`]. `email` is the normalised address as typed (the
    /// account may not exist).
    ///
    /// `known_device` is the failure bucket of a valid known-device token of this
    /// account: such an attempt skips the account's lock (lockout abuse must not keep
    /// the owner out) and is limited per device instead.
    pub async fn begin_login(
        &self,
        client: &ClientInfo,
        email: &str,
        known_device: Option<&str>,
    ) -> Result<LoginAttempt, ThrottleError> {
        let cfg = self.cfg().clone();
        let ip = self
            .take(
                SCOPE_LOGIN_IP,
                &self.subject(client),
                cfg.ip_max_failures,
                Duration::from_secs(cfg.ip_window_seconds),
            )
            .await?;
        let counted = match known_device {
            Some(device) => self
                .take(
                    SCOPE_LOGIN_DEVICE,
                    device,
                    cfg.account_lock_threshold,
                    Duration::from_secs(cfg.ip_window_seconds),
                )
                .await
                .map(|slot| (0, 0, Some(slot))),
            None => self
                .count_account_attempt(email)
                .await
                .map(|(f, l)| (f, l, None)),
        };
        match counted {
            Ok((failures, locked_until, device)) => Ok(LoginAttempt {
                ip,
                device,
                email: email.to_string(),
                failures,
                locked_until,
            }),
            Err(e) => {
                // Refused by the account lock (or an error): the address's slot is given
                // back, so a locked account's owner does not also lose their address.
                self.give_back(ip).await?;
                Err(e)
            }
        }
    }

    /// One atomic UPDATE counts the attempt unless the account is locked; the attempt
    /// that reaches the threshold sets the lock in the same statement, so no concurrent
    /// attempt slips in between. Returns (failures, locked_until).
    async fn count_account_attempt(&self, email: &str) -> Result<(i64, i64), ThrottleError> {
        let cfg = self.cfg();
        let now = self.core.now_ms();
        let pool = self.core.store().pool();
        sqlx::query(
            "INSERT INTO account_locks (email, failures, locked_until, last_failure_at) \
             VALUES ($1, 0, 0, $2) ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(now)
        .execute(pool)
        .await?;
        let base_ms = (cfg.account_lock_base_seconds as i64).saturating_mul(1000);
        let row = sqlx::query(
            "UPDATE account_locks SET \
               failures = CASE WHEN $2 - last_failure_at > $3 THEN 1 ELSE failures + 1 END, \
               locked_until = CASE WHEN (CASE WHEN $2 - last_failure_at > $3 THEN 1 ELSE failures + 1 END) >= $4 \
                                   THEN $2 + $5 ELSE locked_until END, \
               last_failure_at = $2 \
             WHERE email = $1 AND locked_until <= $2 \
             RETURNING failures, locked_until",
        )
        .bind(email)
        .bind(now)
        .bind(ACCOUNT_FAILURE_MEMORY_MS)
        .bind(i64::from(cfg.account_lock_threshold))
        .bind(base_ms)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            let until = self.account_locked_until(email).await?.unwrap_or(now);
            return Err(ThrottleError::Throttled {
                retry_after: retry_after_from_ms(until - now),
            });
        };
        let failures: i64 = row.try_get("failures")?;
        let mut locked_until: i64 = row.try_get("locked_until")?;
        let threshold = i64::from(cfg.account_lock_threshold);
        if failures >= threshold && locked_until > now {
            // The statement set the base lock; each failure past the threshold doubles it.
            let doublings = (failures - threshold).min(30) as u32;
            let secs = cfg
                .account_lock_base_seconds
                .saturating_mul(1u64 << doublings)
                .min(cfg.account_lock_max_seconds);
            let until = now + (secs as i64) * 1000;
            if until > locked_until {
                sqlx::query(
                    "UPDATE account_locks SET locked_until = $1 WHERE email = $2 AND locked_until < $1",
                )
                .bind(until)
                .bind(email)
                .execute(pool)
                .await?;
                locked_until = until;
            }
        } else {
            locked_until = 0;
        }
        Ok((failures, locked_until))
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

    /// A login refused by a limit: audited once per address bucket per window, not
    /// once per request (the refusals in between are what the limit is for).
    pub async fn login_refused(
        &self,
        actor: &Actor,
        user_id: Option<&str>,
        retry_after: Duration,
    ) -> Result<(), ThrottleError> {
        let cfg = self.cfg().clone();
        let window = Duration::from_secs(cfg.ip_window_seconds);
        if self
            .take(SCOPE_AUDIT_REFUSED, &self.subject(&actor.client), 1, window)
            .await
            .is_ok()
        {
            self.core
                .audit()
                .record(
                    user_id,
                    actor,
                    AuditAction::LoginThrottled,
                    &format!(
                        "retry after {} s; further refusals from this address within {} s are not logged one by one",
                        retry_after.as_secs(),
                        cfg.ip_window_seconds
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// After a failed password check: the attempt stays counted; audits when a limit
    /// starts to apply.
    pub async fn login_failed(
        &self,
        attempt: LoginAttempt,
        actor: &Actor,
        user_id: Option<&str>,
    ) -> Result<(), ThrottleError> {
        let cfg = self.cfg().clone();
        if attempt.ip.count == i64::from(cfg.ip_max_failures) {
            self.core
                .audit()
                .record(
                    user_id,
                    actor,
                    AuditAction::LoginThrottled,
                    &format!("{} failed logins from this address", attempt.ip.count),
                )
                .await?;
        }
        if attempt.locked_until > 0 {
            self.core
                .audit()
                .record(
                    user_id,
                    actor,
                    AuditAction::AccountLocked,
                    &format!(
                        "{} consecutive failures; locked for {} s",
                        attempt.failures,
                        (attempt.locked_until - self.core.now_ms()).max(0) / 1000
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// After the right password: the attempt is un-counted for the address and the
    /// account's counter starts over.
    pub async fn login_succeeded_attempt(
        &self,
        attempt: LoginAttempt,
    ) -> Result<(), ThrottleError> {
        self.give_back(attempt.ip).await?;
        if let Some(device) = attempt.device {
            self.give_back(device).await?;
        }
        self.login_succeeded(&attempt.email).await
    }

    /// The account's counter starts over (successful login, password reset).
    pub async fn login_succeeded(&self, email: &str) -> Result<(), ThrottleError> {
        sqlx::query("DELETE FROM account_locks WHERE email = $1")
            .bind(email)
            .execute(self.core.store().pool())
            .await?;
        Ok(())
    }

    /// After a failed API-key authentication (AUTH-5): counts the failure for the
    /// address atomically and answers `Throttled` once over the limit. Only failures
    /// are ever counted or refused: a valid key (~190 bits, not guessable) is checked
    /// before this and always accepted, so other clients' failures behind the same
    /// address cannot lock its owner out.
    pub async fn api_key_failed(&self, client: &ClientInfo) -> Result<(), ThrottleError> {
        let cfg = self.cfg().clone();
        let slot = self
            .take(
                SCOPE_API_KEY_IP,
                &self.subject(client),
                cfg.api_key_ip_max_failures,
                Duration::from_secs(cfg.ip_window_seconds),
            )
            .await?;
        if slot.count == i64::from(cfg.api_key_ip_max_failures) {
            self.core
                .audit()
                .record(
                    None,
                    &Actor::anonymous(client.clone()),
                    AuditAction::ApiKeyThrottled,
                    &format!(
                        "{} failed API-key authentications from this address",
                        slot.count
                    ),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn bucket(ip: &str, prefix: u8) -> String {
        addr_bucket(&ClientInfo::new(ip.parse().unwrap(), None), prefix)
    }

    #[test]
    fn auth_5_ipv6_is_bucketed_by_prefix_ipv4_by_address() {
        assert_eq!(bucket("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            bucket("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            "2001:db8:1:2::/64"
        );
        assert_ne!(bucket("2001:db8:1:3::1", 64), bucket("2001:db8:1:2::1", 64));
        assert_eq!(bucket("2001:db8:1:2::1", 48), "2001:db8:1::/48");
        assert_eq!(bucket("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(bucket("192.0.2.7", 64), "192.0.2.7");
        // An IPv4-mapped address is its IPv4 address, not a /64 of all of IPv4.
        assert_eq!(bucket("::ffff:192.0.2.7", 64), "192.0.2.7");
    }
}
