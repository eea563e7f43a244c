//! Accounts (AUTH-1): signup, sign-in, password change and reset, operators.
//!
//! AUTH-1: passwords are hashed with bcrypt at the configured cost (≥ 12 outside tests)
//! on a blocking thread; plaintext is never stored, logged or sent. Passwords must be
//! 12–72 bytes (longer ones are refused, never truncated), score ≥ 3 in zxcvbn with the
//! email as user input, and not be on the embedded common-password list.
//!
//! Unknown email and wrong password give the same error and take the same time: an
//! unknown email is checked against a dummy bcrypt hash of the same cost.
//!
//! Password reset links are `<base_url>/reset-password?token=<token>` (the web layer
//! must not log query strings). The token is 256 random bits, stored as SHA-256 only,
//! valid for one hour and for one use.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use crate::Core;
use crate::actor::{Actor, ActorKind, ClientInfo};
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::config::SignupMode;
use crate::crypto::{Token, random_token, sha256_hex};
use crate::db::b2i;
use crate::error::{CoreError, DomainError, ErrorKind, InternalError, internal_from};
use crate::mail::Mail;
use crate::page::{Keyset, Page, PageRequest, created_cursor};
use crate::throttle::{SCOPE_SIGNUP_IP, ThrottleError};

pub const PASSWORD_MIN_CHARS: usize = 12;
/// bcrypt only reads 72 bytes; longer passwords are refused rather than truncated.
pub const PASSWORD_MAX_BYTES: usize = 72;
pub const EMAIL_MAX_LEN: usize = 254;
/// Password reset tokens live one hour.
pub const RESET_TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
}

impl User {
    /// This person, signed in with a web session, as the actor of a request.
    pub fn actor(&self, client: ClientInfo) -> Actor {
        Actor::new(
            ActorKind::User {
                user_id: self.id.clone(),
                email: self.email.clone(),
            },
            client,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("The password is too short: use at least {PASSWORD_MIN_CHARS} characters.")]
    PasswordTooShort,
    #[error(
        "The password is too long: bcrypt only uses the first {PASSWORD_MAX_BYTES} bytes, so we refuse longer ones instead of silently ignoring the rest. Use at most {PASSWORD_MAX_BYTES} bytes."
    )]
    PasswordTooLong,
    #[error("This password is on the list of the most common passwords. Choose another one.")]
    PasswordCommon,
    #[error("This password is too easy to guess. {0}")]
    PasswordWeak(String),
    #[error("An account with this email address already exists.")]
    EmailTaken,
    #[error("Email or password is wrong.")]
    InvalidCredentials,
    #[error("The current password is wrong.")]
    WrongCurrentPassword,
    #[error("This password-reset link is invalid, expired or already used. Request a new one.")]
    ResetTokenInvalid,
    #[error("Too many attempts. Try again in {} seconds.", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error("No such user.")]
    NotFound,
    #[error(
        "Signup on this installation is by invitation only. Ask the operator for an invitation link."
    )]
    InviteRequired,
    #[error("This invitation is invalid, expired or already used. Ask the operator for a new one.")]
    InviteInvalid,
    #[error(
        "This verification link is invalid, expired or already used. Sign in and request a new one."
    )]
    VerificationTokenInvalid,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(AccountError);

impl From<InternalError> for AccountError {
    fn from(e: InternalError) -> Self {
        AccountError::Internal(e)
    }
}

impl From<ThrottleError> for AccountError {
    fn from(e: ThrottleError) -> Self {
        match e {
            ThrottleError::Throttled { retry_after } => AccountError::Throttled { retry_after },
            ThrottleError::Internal(i) => AccountError::Internal(i),
        }
    }
}

impl DomainError for AccountError {
    fn code(&self) -> &'static str {
        match self {
            AccountError::InvalidEmail(_) => "invalid_email",
            AccountError::PasswordTooShort => "password_too_short",
            AccountError::PasswordTooLong => "password_too_long",
            AccountError::PasswordCommon => "password_common",
            AccountError::PasswordWeak(_) => "password_weak",
            AccountError::EmailTaken => "email_taken",
            AccountError::InvalidCredentials => "invalid_credentials",
            AccountError::WrongCurrentPassword => "wrong_current_password",
            AccountError::ResetTokenInvalid => "reset_token_invalid",
            AccountError::Throttled { .. } => "too_many_attempts",
            AccountError::NotFound => "not_found",
            AccountError::InviteRequired => "invite_required",
            AccountError::InviteInvalid => "invite_invalid",
            AccountError::VerificationTokenInvalid => "verification_token_invalid",
            AccountError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            AccountError::InvalidEmail(_) => ErrorKind::Invalid { field: "email" },
            AccountError::PasswordTooShort
            | AccountError::PasswordTooLong
            | AccountError::PasswordCommon
            | AccountError::PasswordWeak(_) => ErrorKind::Invalid { field: "password" },
            AccountError::EmailTaken => ErrorKind::Conflict,
            AccountError::InvalidCredentials => ErrorKind::Unauthorized,
            AccountError::WrongCurrentPassword => ErrorKind::Invalid {
                field: "current_password",
            },
            AccountError::ResetTokenInvalid => ErrorKind::Invalid { field: "token" },
            AccountError::Throttled { retry_after } => ErrorKind::Throttled {
                retry_after: *retry_after,
            },
            AccountError::NotFound => ErrorKind::NotFound,
            AccountError::InviteRequired => ErrorKind::Forbidden,
            AccountError::InviteInvalid => ErrorKind::Invalid { field: "invite" },
            AccountError::VerificationTokenInvalid => ErrorKind::Invalid { field: "token" },
            AccountError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Trims, lowercases and checks an email address.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let e = email.trim().to_lowercase();
    let bad = |m: &str| Err(AccountError::InvalidEmail(m.to_string()));
    if e.is_empty() {
        return bad("Enter an email address.");
    }
    if e.len() > EMAIL_MAX_LEN {
        return bad("This email address is too long.");
    }
    let Some((local, domain)) = e.split_once('@') else {
        return bad("This is not an email address (it has no @).");
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return bad("This is not a valid email address.");
    }
    if e.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\\\"[]".contains(c))
    {
        return bad("An email address cannot contain spaces or any of < > ( ) , ; : \\ \" [ ].");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    // `localhost` is the one single-label domain accepted: `clawy up` creates
    // `operator@localhost` on a machine that has no mail domain.
    if (labels.len() < 2 && domain != "localhost")
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return bad("The part after @ is not a valid domain name.");
    }
    Ok(e)
}

fn common_passwords() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect()
    })
}

/// True if the password (lowercased, and again with trailing digits and punctuation
/// removed) is on the common-password list.
pub fn is_common_password(password: &str) -> bool {
    let lower = password.to_lowercase();
    let set = common_passwords();
    if set.contains(&lower) {
        return true;
    }
    let stripped = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    !stripped.is_empty() && set.contains(stripped)
}

/// The password policy (AUTH-1). `email` is passed to zxcvbn as user input.
pub fn check_password_policy(password: &str, email: &str) -> Result<(), AccountError> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(AccountError::PasswordTooLong);
    }
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    if is_common_password(password) {
        return Err(AccountError::PasswordCommon);
    }
    let local = email.split('@').next().unwrap_or("");
    let inputs = [email, local, "clawy", "openclaw"];
    let entropy = zxcvbn::zxcvbn(password, &inputs);
    if (entropy.score() as u8) < 3 {
        let hint = entropy
            .feedback()
            .and_then(|f| {
                f.warning()
                    .map(|w| w.to_string())
                    .or_else(|| f.suggestions().first().map(|s| s.to_string()))
            })
            .unwrap_or_else(|| "Add more words or characters that are hard to guess.".to_string());
        return Err(AccountError::PasswordWeak(hint));
    }
    Ok(())
}

pub(crate) fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        is_operator: r.try_get::<i64, _>("is_operator")? != 0,
        created_at: ms_to_datetime(r.try_get("created_at")?),
    })
}

/// How long an invitation stays valid.
pub const INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a verification link stays valid.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a known-device token spares its browser the account lock (AUTH-5).
pub const DEVICE_TOKEN_TTL: Duration = Duration::from_secs(180 * 24 * 3600);
const DEVICE_TOKEN_CONTEXT: &[u8] = b"clawy-known-device-v1";

const USER_COLS: &str = "id, email, is_operator, created_at";

/// Users in the order they signed up; equal times by email, which is unique.
const USER_ORDER: Keyset = Keyset {
    time: "created_at",
    key: "email",
    newest_first: false,
};

pub struct Accounts<'a> {
    pub(crate) core: &'a Core,
}

impl Accounts<'_> {
    async fn hash_password(&self, password: &str) -> Result<String, AccountError> {
        let cost = self.core.config().bcrypt_cost;
        // bcrypt reads at most 72 bytes. Longer passwords never get here (the policy
        // refuses them), so the plain API loses nothing; its non-truncating variant
        // would also refuse exactly 72 bytes because it counts the NUL terminator.
        if password.len() > PASSWORD_MAX_BYTES {
            return Err(AccountError::PasswordTooLong);
        }
        let pw = zeroize::Zeroizing::new(password.to_string());
        let hash = tokio::task::spawn_blocking(move || bcrypt::hash(pw.as_bytes(), cost)).await??;
        Ok(hash)
    }

    /// bcrypt verification on a blocking thread; `false` for any malformed input.
    /// Callers refuse passwords over 72 bytes before calling this.
    async fn verify_password(&self, password: &str, hash: String) -> Result<bool, AccountError> {
        let pw = zeroize::Zeroizing::new(password.to_string());
        Ok(tokio::task::spawn_blocking(move || {
            bcrypt::verify(pw.as_bytes(), &hash).unwrap_or(false)
        })
        .await?)
    }

    /// A hash of a random password at the configured cost, to spend the same time on
    /// unknown emails as on real ones.
    async fn dummy_hash(&self) -> Result<String, AccountError> {
        let cost = self.core.config().bcrypt_cost;
        let h = self
            .core
            .dummy_hash
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || bcrypt::hash(random_token(), cost))
                    .await?
                    .map_err(AccountError::from)
            })
            .await?;
        Ok(h.clone())
    }

    async fn insert_user(
        &self,
        email: &str,
        password: &SecretString,
        is_operator: bool,
        verified: bool,
    ) -> Result<User, AccountError> {
        let email = normalize_email(email)?;
        check_password_policy(password.expose_secret(), &email)?;
        if self.find_by_email(&email).await?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let hash = self.hash_password(password.expose_secret()).await?;
        let now = self.core.now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let res = sqlx::query(
            "INSERT INTO users (id, email, password_hash, is_operator, created_at, password_changed_at, \
             email_verified_at) VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(&id)
        .bind(&email)
        .bind(&hash)
        .bind(b2i(is_operator))
        .bind(now)
        .bind(if verified { Some(now) } else { None })
        .execute(self.core.store().pool())
        .await;
        if crate::db::unique_violation(res)? {
            return Err(AccountError::EmailTaken);
        }
        Ok(User {
            id,
            email,
            is_operator,
            created_at: ms_to_datetime(now),
        })
    }

    /// Self-service signup, limited per client address (`signups_per_hour`): input
    /// that cannot become an account is refused before it counts, every attempt that
    /// could is counted atomically before the account is written.
    pub async fn signup(
        &self,
        email: &str,
        password: &SecretString,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        self.signup_with(email, password, None, actor).await
    }

    /// [`Accounts::signup`] with an invitation (required when `signup_mode` is
    /// `invite`; used up by the account it creates). With `email_verification` on, the
    /// account starts unverified and a verification link is mailed.
    pub async fn signup_with(
        &self,
        email: &str,
        password: &SecretString,
        invite: Option<&SecretString>,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        let config = self.core.config();
        let invite_hash = match (config.signup_mode, invite) {
            (SignupMode::Invite, None) => return Err(AccountError::InviteRequired),
            (SignupMode::Invite, Some(t)) => {
                let hash = sha256_hex(t.expose_secret().trim());
                self.live_invite(&hash).await?;
                Some(hash)
            }
            (SignupMode::Open, _) => None,
        };
        let normalized = normalize_email(email)?;
        check_password_policy(password.expose_secret(), &normalized)?;
        let throttle = self.core.throttle();
        throttle
            .hit(
                SCOPE_SIGNUP_IP,
                &throttle.subject(&actor.client),
                self.core.config().throttle.signups_per_hour,
                Duration::from_secs(3600),
            )
            .await?;
        if let Some(hash) = &invite_hash {
            // Used up before the account exists, so two signups cannot share one.
            let used = sqlx::query(
                "UPDATE invites SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(self.core.now_ms())
            .bind(hash)
            .execute(self.core.store().pool())
            .await?;
            if used.rows_affected() != 1 {
                return Err(AccountError::InviteInvalid);
            }
        }
        let user = self
            .insert_user(email, password, false, !config.email_verification)
            .await?;
        if let Some(hash) = &invite_hash {
            sqlx::query("UPDATE invites SET used_by = $1 WHERE token_hash = $2")
                .bind(&user.id)
                .bind(hash)
                .execute(self.core.store().pool())
                .await?;
        }
        self.core
            .audit()
            .record(Some(&user.id), actor, AuditAction::Signup, "")
            .await?;
        if config.email_verification {
            self.send_verification(&user).await?;
        }
        Ok(user)
    }

    async fn live_invite(&self, hash: &str) -> Result<(), AccountError> {
        let row = sqlx::query(
            "SELECT id FROM invites WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(self.core.now_ms())
        .fetch_optional(self.core.store().pool())
        .await?;
        row.map(|_| ()).ok_or(AccountError::InviteInvalid)
    }

    /// An operator's invitation for invite-only signup: shown once (as a link), valid
    /// for [`INVITE_TTL`], good for one account.
    pub async fn create_invite(&self, actor: &Actor) -> Result<Token, AccountError> {
        let token = Token::new(random_token());
        let now = self.core.now_ms();
        sqlx::query(
            "INSERT INTO invites (id, token_hash, created_by, created_at, expires_at, used_at, used_by) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(sha256_hex(token.expose()))
        .bind(actor.kind.user_id().map(str::to_string))
        .bind(now)
        .bind(now + INVITE_TTL.as_millis() as i64)
        .execute(self.core.store().pool())
        .await?;
        self.core
            .audit()
            .record(None, actor, AuditAction::InviteCreated, "")
            .await?;
        Ok(token)
    }

    /// The signup link for an invitation.
    pub fn invite_link(&self, token: &Token) -> String {
        self.core
            .config()
            .link(&format!("/signup?invite={}", token.expose()))
    }

    /// True once the user opened their verification link (or verification was off
    /// when they signed up, or they were created by an operator).
    pub async fn is_email_verified(&self, user_id: &str) -> Result<bool, AccountError> {
        let row = sqlx::query("SELECT email_verified_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.core.store().pool())
            .await?
            .ok_or(AccountError::NotFound)?;
        Ok(row
            .try_get::<Option<i64>, _>("email_verified_at")?
            .is_some())
    }

    /// Mails a verification link (signup, or the owner asked again: rate-limited per
    /// account like reset mails).
    pub async fn send_verification(&self, user: &User) -> Result<(), AccountError> {
        let per_hour = self.core.config().throttle.password_resets_per_hour;
        self.core
            .throttle()
            .hit(
                "verification_mail",
                &user.id,
                per_hour,
                Duration::from_secs(3600),
            )
            .await?;
        let token = Token::new(random_token());
        let now = self.core.now_ms();
        sqlx::query(
            "INSERT INTO email_verifications (id, token_hash, user_id, created_at, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(sha256_hex(token.expose()))
        .bind(&user.id)
        .bind(now)
        .bind(now + VERIFICATION_TTL.as_millis() as i64)
        .execute(self.core.store().pool())
        .await?;
        let link = self
            .core
            .config()
            .link(&format!("/verify-email?token={}", token.expose()));
        drop(token);
        let mail = Mail {
            to: user.email.clone(),
            subject: "Confirm your email address for Clawy".to_string(),
            body: format!(
                "Welcome to Clawy.\n\nOpen this link within 24 hours to confirm that {} is your \
                 address; you can create instances once it is confirmed:\n\n{}\n\n\
                 If you did not sign up, ignore this mail.\n",
                user.email, link
            ),
            kind: "email_verification",
        };
        self.core.mailer().send_in_background(mail);
        Ok(())
    }

    /// Marks the address of the link's account verified (the link works once).
    pub async fn verify_email(
        &self,
        token: &SecretString,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        let now = self.core.now_ms();
        let hash = sha256_hex(token.expose_secret().trim());
        let row = sqlx::query(
            "SELECT user_id FROM email_verifications \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now)
        .fetch_optional(self.core.store().pool())
        .await?
        .ok_or(AccountError::VerificationTokenInvalid)?;
        let user_id: String = row.try_get("user_id")?;
        let used = sqlx::query(
            "UPDATE email_verifications SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&hash)
        .execute(self.core.store().pool())
        .await?;
        if used.rows_affected() != 1 {
            return Err(AccountError::VerificationTokenInvalid);
        }
        sqlx::query(
            "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
        )
        .bind(now)
        .bind(&user_id)
        .execute(self.core.store().pool())
        .await?;
        let user = self.get_user(&user_id).await?;
        self.core
            .audit()
            .record(
                Some(&user.id),
                &user.actor(actor.client.clone()),
                AuditAction::EmailVerified,
                "",
            )
            .await?;
        Ok(user)
    }

    /// Creates a user (admin CLI). Same password policy as signup.
    pub async fn create_user(
        &self,
        email: &str,
        password: &SecretString,
        is_operator: bool,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        // An account an operator creates is vouched for: no verification mail.
        let user = self.insert_user(email, password, is_operator, true).await?;
        let detail = if is_operator { "operator" } else { "" };
        self.core
            .audit()
            .record(Some(&user.id), actor, AuditAction::UserCreated, detail)
            .await?;
        Ok(user)
    }

    /// Sign-in with throttling (AUTH-5) and auditing. Unknown email and wrong password
    /// both give [`AccountError::InvalidCredentials`] after the same bcrypt work.
    /// The actor creates the session afterwards (`core.sessions().create`).
    pub async fn authenticate(
        &self,
        email: &str,
        password: &SecretString,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        self.authenticate_from(email, password, actor, None).await
    }

    /// [`Accounts::authenticate`] from a browser that may present a known-device token
    /// ([`Accounts::issue_device_token`]). AUTH-5 lockout abuse: an attacker who keeps
    /// an account soft-locked (one wrong guess after each lock ends) locks out only
    /// browsers that never signed in to it; a device the owner signed in from before
    /// skips the account lock and has a failure limit of its own instead (the
    /// threshold per window), so the owner keeps a way in. The address limit applies
    /// to everyone.
    pub async fn authenticate_from(
        &self,
        email: &str,
        password: &SecretString,
        actor: &Actor,
        device_token: Option<&str>,
    ) -> Result<User, AccountError> {
        // An invalid address is treated like an unknown one (same answer, same time).
        let email_key = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        let found = self.find_with_hash("email", &email_key).await?;
        let user_id = found.as_ref().map(|(u, _)| u.id.clone());
        let device = match (device_token, user_id.as_deref()) {
            (Some(t), Some(id)) => self.known_device(t, id).await?,
            _ => None,
        };

        // AUTH-5: counted as a failure before bcrypt runs (and un-counted below if the
        // password is right), so concurrent guesses cannot outrun the limits.
        let attempt = match self
            .core
            .throttle()
            .begin_login(&actor.client, &email_key, device.as_deref())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                if let ThrottleError::Throttled { retry_after } = &e {
                    self.core
                        .throttle()
                        .login_refused(actor, user_id.as_deref(), *retry_after)
                        .await?;
                }
                return Err(e.into());
            }
        };

        let password = password.expose_secret();
        let (hash, user) = match found {
            Some((u, h)) => (h, Some(u)),
            None => (self.dummy_hash().await?, None),
        };
        // Over-long input is run against the dummy so the time stays the same.
        let ok = if password.len() > PASSWORD_MAX_BYTES {
            let _ = self.verify_password("", self.dummy_hash().await?).await?;
            false
        } else {
            self.verify_password(password, hash).await?
        };
        match (ok, user) {
            (true, Some(user)) => {
                self.core
                    .throttle()
                    .login_succeeded_attempt(attempt)
                    .await?;
                let actor = user.actor(actor.client.clone());
                self.core
                    .audit()
                    .record(Some(&user.id), &actor, AuditAction::LoginOk, "")
                    .await?;
                Ok(user)
            }
            _ => {
                self.core
                    .audit()
                    .record(user_id.as_deref(), actor, AuditAction::LoginFailed, "")
                    .await?;
                self.core
                    .throttle()
                    .login_failed(attempt, actor, user_id.as_deref())
                    .await?;
                Err(AccountError::InvalidCredentials)
            }
        }
    }

    /// A known-device token for a browser that just signed in as `user` (AUTH-5): sealed
    /// with the operator key (so it cannot be forged), naming the user and when it was
    /// issued. It dies with a password change and after [`DEVICE_TOKEN_TTL`]. It grants
    /// nothing by itself: it only spares its browser the account's soft lock.
    pub fn issue_device_token(&self, user: &User) -> Token {
        let body = format!("{}\n{}", user.id, self.core.now_ms());
        Token::new(
            self.core
                .secret_key()
                .seal_bound(body.as_bytes(), DEVICE_TOKEN_CONTEXT),
        )
    }

    /// The failure bucket of a valid known-device token of `user_id`, or `None`.
    async fn known_device(
        &self,
        token: &str,
        user_id: &str,
    ) -> Result<Option<String>, AccountError> {
        if token.len() > 512 {
            return Ok(None);
        }
        let Ok(body) = self
            .core
            .secret_key()
            .open_bound(token, DEVICE_TOKEN_CONTEXT)
        else {
            return Ok(None);
        };
        let Some((id, issued)) = body.expose_secret().split_once('\n') else {
            return Ok(None);
        };
        let Ok(issued) = issued.parse::<i64>() else {
            return Ok(None);
        };
        if id != user_id || self.core.now_ms() - issued > DEVICE_TOKEN_TTL.as_millis() as i64 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT password_changed_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.core.store().pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let changed: i64 = row.try_get("password_changed_at")?;
        if issued < changed {
            return Ok(None);
        }
        Ok(Some(sha256_hex(token)))
    }

    /// Re-authentication for a sensitive step taken from a browser session (AUTH-2:
    /// minting or regenerating an admin-tier API key): the password is checked again,
    /// throttled like a sign-in, so a stolen session cookie alone cannot mint a key
    /// that outlives the owner's next password reset.
    pub async fn confirm_password(
        &self,
        user_id: &str,
        password: &SecretString,
        actor: &Actor,
    ) -> Result<(), AccountError> {
        let (user, hash) = self
            .find_with_hash("id", user_id)
            .await?
            .ok_or(AccountError::NotFound)?;
        let attempt = self
            .core
            .throttle()
            .begin_login(&actor.client, &user.email, None)
            .await?;
        let pw = password.expose_secret();
        if pw.is_empty() || pw.len() > PASSWORD_MAX_BYTES || !self.verify_password(pw, hash).await?
        {
            self.core
                .throttle()
                .login_failed(attempt, actor, Some(&user.id))
                .await?;
            return Err(AccountError::WrongCurrentPassword);
        }
        self.core
            .throttle()
            .login_succeeded_attempt(attempt)
            .await?;
        Ok(())
    }

    /// Changes the password after checking the current one; ends every other session of
    /// the user (AUTH-3). `keep_session` is the public id of the session making the
    /// change (web), or `None` (API: all sessions end).
    pub async fn change_password(
        &self,
        user_id: &str,
        current: &SecretString,
        new: &SecretString,
        keep_session: Option<&str>,
        actor: &Actor,
    ) -> Result<(), AccountError> {
        let (user, hash) = self
            .find_with_hash("id", user_id)
            .await?
            .ok_or(AccountError::NotFound)?;
        let attempt = self
            .core
            .throttle()
            .begin_login(&actor.client, &user.email, None)
            .await?;
        let cur = current.expose_secret();
        if cur.len() > PASSWORD_MAX_BYTES || !self.verify_password(cur, hash).await? {
            self.core
                .throttle()
                .login_failed(attempt, actor, Some(&user.id))
                .await?;
            return Err(AccountError::WrongCurrentPassword);
        }
        self.core
            .throttle()
            .login_succeeded_attempt(attempt)
            .await?;
        check_password_policy(new.expose_secret(), &user.email)?;
        self.set_password_hash(&user.id, new).await?;
        let sessions = self.core.sessions();
        match keep_session {
            Some(keep) => sessions.revoke_all_except(&user.id, keep).await?,
            None => sessions.revoke_all(&user.id).await?,
        };
        self.core
            .audit()
            .record(Some(&user.id), actor, AuditAction::PasswordChanged, "")
            .await?;
        Ok(())
    }

    async fn set_password_hash(
        &self,
        user_id: &str,
        new: &SecretString,
    ) -> Result<(), AccountError> {
        let hash = self.hash_password(new.expose_secret()).await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(self.core.now_ms())
            .bind(user_id)
            .execute(self.core.store().pool())
            .await?;
        Ok(())
    }

    /// Creates a one-time reset token for the user and returns it (shown or mailed once).
    pub async fn create_password_reset_token(&self, user_id: &str) -> Result<Token, AccountError> {
        let token = Token::new(random_token());
        let now = self.core.now_ms();
        sqlx::query(
            "INSERT INTO password_resets (id, token_hash, user_id, created_at, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(sha256_hex(token.expose()))
        .bind(user_id)
        .bind(now)
        .bind(now + RESET_TOKEN_TTL.as_millis() as i64)
        .execute(self.core.store().pool())
        .await?;
        Ok(token)
    }

    /// The reset link for a token.
    pub fn reset_link(&self, token: &Token) -> String {
        self.core
            .config()
            .link(&format!("/reset-password?token={}", token.expose()))
    }

    /// Emails a reset link if the address has an account. Answers the same whether or
    /// not it does (no account enumeration); the mail is sent in the background.
    /// Rate-limited per client address.
    pub async fn request_password_reset(
        &self,
        email: &str,
        actor: &Actor,
    ) -> Result<(), AccountError> {
        let email = normalize_email(email)?;
        let subject = self.core.throttle().subject(&actor.client);
        let per_hour = self.core.config().throttle.password_resets_per_hour;
        self.core
            .throttle()
            .hit(
                "password_reset",
                &subject,
                per_hour,
                Duration::from_secs(3600),
            )
            .await?;
        let Some(user) = self.find_by_email(&email).await? else {
            return Ok(());
        };
        let token = self.create_password_reset_token(&user.id).await?;
        let link = self.reset_link(&token);
        drop(token);
        self.core
            .audit()
            .record(
                Some(&user.id),
                actor,
                AuditAction::PasswordResetRequested,
                "",
            )
            .await?;
        let mail = Mail {
            to: user.email.clone(),
            subject: "Reset your Clawy password".to_string(),
            body: format!(
                "Someone (hopefully you) asked to reset the password of your Clawy account {}.\n\n\
                 Open this link within one hour to choose a new password:\n\n{}\n\n\
                 The link works once. If you did not ask for this, ignore this mail: \
                 your password stays as it is.\n",
                user.email, link
            ),
            kind: "password_reset",
        };
        self.core.mailer().send_in_background(mail);
        Ok(())
    }

    /// Sets a new password with a reset token: the token is used up, every session of
    /// the user ends, and other outstanding reset tokens die. API keys stay (see
    /// [`Accounts::complete_password_reset_with`]).
    pub async fn complete_password_reset(
        &self,
        token: &SecretString,
        new_password: &SecretString,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        self.complete_password_reset_with(token, new_password, false, actor)
            .await
    }

    /// The user a live reset token belongs to, without using the token up: the reset
    /// page shows that account's API keys before the new password is set.
    pub async fn reset_token_user(&self, token: &SecretString) -> Result<User, AccountError> {
        let row = sqlx::query(
            "SELECT user_id FROM password_resets \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(sha256_hex(token.expose_secret().trim()))
        .bind(self.core.now_ms())
        .fetch_optional(self.core.store().pool())
        .await?
        .ok_or(AccountError::ResetTokenInvalid)?;
        let user_id: String = row.try_get("user_id")?;
        self.get_user(&user_id).await
    }

    /// [`Accounts::complete_password_reset`]; with `revoke_api_keys` ("I was
    /// compromised") every API key of the account is revoked too, so a key minted
    /// with a stolen session does not outlive the reset (AUTH-2/AUTH-3).
    pub async fn complete_password_reset_with(
        &self,
        token: &SecretString,
        new_password: &SecretString,
        revoke_api_keys: bool,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        let now = self.core.now_ms();
        let hash = sha256_hex(token.expose_secret().trim());
        let row = sqlx::query(
            "SELECT id, user_id FROM password_resets \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now)
        .fetch_optional(self.core.store().pool())
        .await?
        .ok_or(AccountError::ResetTokenInvalid)?;
        let reset_id: String = row.try_get("id")?;
        let user_id: String = row.try_get("user_id")?;
        let user = self.get_user(&user_id).await?;
        // Check the policy before using the token up, so a refused password does not
        // burn the link.
        check_password_policy(new_password.expose_secret(), &user.email)?;
        let used = sqlx::query(
            "UPDATE password_resets SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&reset_id)
        .execute(self.core.store().pool())
        .await?;
        if used.rows_affected() != 1 {
            return Err(AccountError::ResetTokenInvalid);
        }
        sqlx::query(
            "UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&user.id)
        .execute(self.core.store().pool())
        .await?;
        self.set_password_hash(&user.id, new_password).await?;
        self.core.sessions().revoke_all(&user.id).await?;
        if revoke_api_keys {
            self.core
                .api_keys()
                .revoke_all(&user.id, &user.actor(actor.client.clone()))
                .await
                .map_err(|e| AccountError::Internal(InternalError::Other(e.to_string())))?;
        }
        self.core.throttle().login_succeeded(&user.email).await?;
        self.core
            .audit()
            .record(Some(&user.id), actor, AuditAction::PasswordReset, "")
            .await?;
        Ok(user)
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User, AccountError> {
        self.find("id", user_id)
            .await?
            .ok_or(AccountError::NotFound)
    }

    /// Emails of many users in one query (operator lists: one lookup per page, not
    /// one per row). Unknown ids are simply absent from the map.
    pub async fn emails_by_ids(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, String>, AccountError> {
        let ids: Vec<&str> = ids
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT id, email FROM users WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(self.core.store().pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("email")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Looks a user up by (normalised) email.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>, AccountError> {
        self.find("email", &email.trim().to_lowercase()).await
    }

    /// The user whose `column` (`id` or `email`, never a caller's string) is `value`.
    async fn find(&self, column: &'static str, value: &str) -> Result<Option<User>, AccountError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE {column} = $1");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value);
        self.core.store().optional_row(q, user_from_row).await
    }

    /// [`Accounts::find`] with the stored password hash, for the checks that need it.
    async fn find_with_hash(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<(User, String)>, AccountError> {
        let sql = format!("SELECT {USER_COLS}, password_hash FROM users WHERE {column} = $1");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value);
        let with_hash =
            |r: &AnyRow| Ok::<_, sqlx::Error>((user_from_row(r)?, r.try_get("password_hash")?));
        self.core.store().optional_row(q, with_hash).await
    }

    /// A page of users, oldest first (operators' users page). Ties in sign-up time
    /// are broken by email, which is unique.
    pub async fn page_users(&self, req: &PageRequest) -> Result<Page<User>, CoreError> {
        let select = format!("SELECT {USER_COLS} FROM users");
        let cursor = |u: &User| created_cursor(u.created_at.timestamp_millis(), &u.email);
        let store = self.core.store();
        store
            .page::<_, _, AccountError>(
                USER_ORDER,
                req,
                (&select, ""),
                |q| q,
                user_from_row,
                cursor,
            )
            .await
    }

    /// All users, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, AccountError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users ORDER BY created_at, email"
        )));
        self.core.store().rows(q, user_from_row).await
    }

    pub async fn count_users(&self) -> Result<i64, AccountError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.core.store().pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Grants or removes the operator flag.
    pub async fn set_operator(
        &self,
        user_id: &str,
        is_operator: bool,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        let res = sqlx::query("UPDATE users SET is_operator = $1 WHERE id = $2")
            .bind(b2i(is_operator))
            .bind(user_id)
            .execute(self.core.store().pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(AccountError::NotFound);
        }
        self.core
            .audit()
            .record(
                Some(user_id),
                actor,
                AuditAction::OperatorChanged,
                if is_operator { "granted" } else { "removed" },
            )
            .await?;
        self.get_user(user_id).await
    }
}
