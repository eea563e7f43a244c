//! The authenticated caller of an API request.
//!
//! Two ways in:
//! - `Authorization: Bearer clawy_…` (AUTH-2): one SHA-256 and one indexed lookup in
//!   `core.api_keys().authenticate`, which also counts failures per client address and
//!   answers 429 once an address has too many (AUTH-5).
//! - the `__Host-clawy_session` cookie (AUTH-3): a browser session has the tier of the
//!   full account (admin). Because browsers attach cookies to cross-site requests, a
//!   state-changing method (anything but GET/HEAD/OPTIONS) must also carry the session's
//!   CSRF token in `X-CSRF-Token` and pass the `Origin`/`Sec-Fetch-Site` check.

use super::client_addr::ClientAddr;
use super::origin::check_same_origin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use clawy_core::User;
use clawy_core::actor::Tier;
use clawy_core::api_keys::{ApiKey, ApiKeyError};
use clawy_core::sessions::{AuthenticatedSession, SESSION_COOKIE, SessionError};
use clawy_core::{Actor, ClientInfo};
use std::marker::PhantomData;
use std::ops::Deref;

/// Header carrying the session's CSRF token on cookie-authenticated API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum CallerAuth {
    ApiKey(ApiKey),
    Session(Box<AuthenticatedSession>),
}

/// An authenticated caller of the API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The privilege of this request: the key's tier, or admin for a browser session.
    pub tier: Tier,
    pub auth: CallerAuth,
    pub client: ClientInfo,
}

impl Caller {
    /// AUTH-2: refuse unless this request's tier includes `needed`.
    pub fn require(&self, needed: Tier) -> Result<(), ApiError> {
        if self.tier.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_tier",
                format!(
                    "This API key has the {} tier; this action needs the {needed} tier. Create a key with that tier (or use a browser session).",
                    self.tier
                ),
            ))
        }
    }

    /// The tier of the API key making the request; `None` for a browser session (full
    /// rights of the account). Domain calls use it to refuse tier escalation.
    pub fn key_tier(&self) -> Option<Tier> {
        match &self.auth {
            CallerAuth::ApiKey(k) => Some(k.tier),
            CallerAuth::Session(_) => None,
        }
    }

    /// The caller as the actor of domain calls (the audit log records it).
    pub fn actor(&self) -> Actor {
        match &self.auth {
            CallerAuth::ApiKey(k) => k.actor(self.client.clone()),
            CallerAuth::Session(_) => self.user.actor(self.client.clone()),
        }
    }

    /// Resolves the caller, or `None` when the request carries no credentials at all.
    /// Credentials that are present but wrong are an error, never "anonymous".
    pub async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let client = ClientInfo::new(addr, user_agent);

        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| {
                    ApiError::unauthorized("Send the API key as `Authorization: Bearer clawy_…`.")
                })?;
            return match authenticate_key(state, token, &client).await {
                Ok((user, key)) => Ok(Some(Caller {
                    user,
                    tier: key.tier,
                    auth: CallerAuth::ApiKey(key),
                    client,
                })),
                Err(err) => {
                    let err = ApiError::from(err);
                    if err.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
                        state.metrics.throttled();
                    } else {
                        state.metrics.api_key_auth_failed();
                    }
                    Err(err)
                }
            };
        }

        let Some(raw) = session_cookie(parts) else {
            return Ok(None);
        };
        let session = match state.core.sessions().authenticate(&raw).await {
            Ok(s) => s,
            Err(SessionError::Invalid | SessionError::NotFound) => {
                return Err(ApiError::unauthorized(
                    "Your session has ended (signed out or expired). Sign in again.",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if is_state_changing(&parts.method) {
            // AUTH-3: a cookie alone never authorizes a change.
            if let Err(e) = check_same_origin(&parts.headers, &state.http.origin) {
                state.metrics.csrf_rejected();
                return Err(ApiError::forbidden("cross_site_request", e.to_string()));
            }
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !session.verify_csrf(presented) {
                state.metrics.csrf_rejected();
                return Err(ApiError::forbidden(
                    "csrf_token_invalid",
                    "A browser session must send its CSRF token in the X-CSRF-Token header for this request. Reload the page and try again.",
                ));
            }
        }
        Ok(Some(Caller {
            tier: Tier::Admin,
            user: session.user.clone(),
            auth: CallerAuth::Session(Box::new(session)),
            client,
        }))
    }
}

/// AUTH-2 + AUTH-5: one hash and one indexed lookup; only a failure is counted (and
/// answered 429 once its address is over the limit), a valid key is never refused.
async fn authenticate_key(
    state: &AppState,
    token: &str,
    client: &ClientInfo,
) -> Result<(User, ApiKey), ApiKeyError> {
    state.core.api_keys().authenticate(token, client).await
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session cookie's value, if sent.
fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

async fn cached(parts: &mut Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
    // Resolve once per request, even if several extractors ask.
    if let Some(c) = parts.extensions.get::<ResolvedCaller>() {
        return Ok(c.0.clone());
    }
    let c = Caller::resolve(parts, state).await?;
    parts.extensions.insert(ResolvedCaller(c.clone()));
    Ok(c)
}

#[derive(Clone)]
struct ResolvedCaller(Option<Caller>);

fn anonymous() -> ApiError {
    ApiError::unauthorized(
        "Authentication required: send `Authorization: Bearer clawy_…` with an API key (create one on the API keys page).",
    )
}

/// Any authenticated caller (any tier). Prefer `Authed<T>`, which names the tier.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        cached(parts, state).await?.ok_or_else(anonymous)
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        cached(parts, state).await
    }
}

/// The caller if there are credentials; `None` for anonymous requests.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeCaller(cached(parts, state).await?))
    }
}

/// A tier requirement at the type level.
pub trait TierReq: Send + Sync + 'static {
    const TIER: Tier;
}
/// GET own resources.
#[derive(Debug)]
pub struct Read;
/// + lifecycle of own resources (instances, SSH keys).
#[derive(Debug)]
pub struct Manage;
/// + API keys and account settings.
#[derive(Debug)]
pub struct Admin;
impl TierReq for Read {
    const TIER: Tier = Tier::Read;
}
impl TierReq for Manage {
    const TIER: Tier = Tier::Manage;
}
impl TierReq for Admin {
    const TIER: Tier = Tier::Admin;
}

/// A caller holding at least tier `T` (AUTH-2). 401 without credentials, 403 with a
/// lower tier.
#[derive(Debug)]
pub struct Authed<T: TierReq>(pub Caller, PhantomData<T>);

impl<T: TierReq> Deref for Authed<T> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<T: TierReq> FromRequestParts<AppState> for Authed<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = cached(parts, state).await?.ok_or_else(anonymous)?;
        caller.require(T::TIER)?;
        Ok(Authed(caller, PhantomData))
    }
}

/// An operator acting with the full rights of their account (browser session or admin
/// key). Anyone else gets 404, so operator routes do not reveal they exist.
#[derive(Debug)]
pub struct Operator(pub Caller);

impl Deref for Operator {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl Operator {
    pub fn check(caller: Option<Caller>) -> Result<Operator, ApiError> {
        let caller = caller.ok_or_else(anonymous)?;
        if caller.user.is_operator && caller.tier.allows(Tier::Admin) {
            Ok(Operator(caller))
        } else {
            Err(ApiError::not_found("No such API route."))
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Operator::check(cached(parts, state).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::StatusCode;
    use chrono::Utc;

    fn user(is_operator: bool) -> User {
        User {
            id: "u1".into(),
            email: "a@example.test".into(),
            is_operator,
            created_at: Utc::now(),
        }
    }

    fn key_caller(is_operator: bool, tier: Tier) -> Caller {
        Caller {
            user: user(is_operator),
            tier,
            auth: CallerAuth::ApiKey(ApiKey {
                id: "k1".into(),
                user_id: "u1".into(),
                name: "k".into(),
                tier,
                prefix: "clawy_r_abcd".into(),
                created_at: Utc::now(),
                last_used_at: None,
                expires_at: None,
                revoked_at: None,
            }),
            client: ClientInfo::none(),
        }
    }

    #[test]
    fn auth_2_require_compares_tiers() {
        let c = key_caller(false, Tier::Manage);
        assert!(c.require(Tier::Read).is_ok());
        assert!(c.require(Tier::Manage).is_ok());
        let err = c.require(Tier::Admin).unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(err.code(), "insufficient_tier");
        assert_eq!(c.key_tier(), Some(Tier::Manage));
    }

    #[test]
    fn operator_needs_flag_and_full_rights_else_404() {
        assert!(Operator::check(Some(key_caller(true, Tier::Admin))).is_ok());
        for c in [
            key_caller(true, Tier::Manage),
            key_caller(false, Tier::Admin),
        ] {
            let err = Operator::check(Some(c)).unwrap_err();
            assert_eq!(err.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(
            Operator::check(None).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn only_safe_methods_skip_csrf() {
        assert!(!is_state_changing(&Method::GET));
        assert!(!is_state_changing(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_state_changing(&m));
        }
    }
}
