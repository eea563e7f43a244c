//! Per-request context for pages: the signed-in person (if any), the CSRF token the
//! page's forms carry, the one-shot flash message, and the caller for audit records.
//!
//! AUTH-3: the session is server-side (`core.sessions()`); the cookie carries only its
//! random secret. Signed-in forms carry the session's CSRF token. Signed-out forms
//! (login, signup, password reset, vulnerability report) carry a random token that is
//! also in a `__Host-` cookie (double submit): a cross-site page can neither read nor
//! set that cookie, so it cannot forge the form. Every POST also passes the
//! `Origin`/`Sec-Fetch-Site` check.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use clawy_core::crypto::{constant_time_eq, random_token};
use clawy_core::sessions::{AuthenticatedSession, SESSION_COOKIE};
use clawy_core::{Actor, ClientInfo, User};

use super::error::WebError;
use super::render::{FlashView, Layout, UserView};
use crate::auth::client_addr::ClientAddr;
use crate::auth::origin::check_same_origin;
use crate::state::AppState;

/// Double-submit CSRF cookie for signed-out forms.
pub const ANON_CSRF_COOKIE: &str = "__Host-clawy_csrf";
/// A password-reset token between the emailed link and the reset form.
pub const RESET_COOKIE: &str = "__Host-clawy_reset";
/// AUTH-5: the known-device token of a browser that signed in before (spares it the
/// account's soft lock; see `Accounts::authenticate_from`).
pub const DEVICE_COOKIE: &str = "__Host-clawy_device";
/// One-shot message for the next page (Post/Redirect/Get).
pub const FLASH_COOKIE: &str = "__Host-clawy_flash";

/// Messages a redirect can leave for the next page. The cookie carries only the code,
/// so nobody can make the site display text of their choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    Welcome,
    SignedIn,
    SignedOut,
    PasswordChanged,
    PasswordReset,
    SessionRevoked,
    SshKeyAdded,
    SshKeyDeleted,
    ApiKeyRevoked,
    EmailVerified,
    VerificationInvalid,
    VerificationSent,
}

impl Flash {
    const ALL: [Flash; 12] = [
        Flash::Welcome,
        Flash::SignedIn,
        Flash::SignedOut,
        Flash::PasswordChanged,
        Flash::PasswordReset,
        Flash::SessionRevoked,
        Flash::SshKeyAdded,
        Flash::SshKeyDeleted,
        Flash::ApiKeyRevoked,
        Flash::EmailVerified,
        Flash::VerificationInvalid,
        Flash::VerificationSent,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Flash::Welcome => "welcome",
            Flash::SignedIn => "signed_in",
            Flash::SignedOut => "signed_out",
            Flash::PasswordChanged => "password_changed",
            Flash::PasswordReset => "password_reset",
            Flash::SessionRevoked => "session_revoked",
            Flash::SshKeyAdded => "ssh_key_added",
            Flash::SshKeyDeleted => "ssh_key_deleted",
            Flash::ApiKeyRevoked => "api_key_revoked",
            Flash::EmailVerified => "email_verified",
            Flash::VerificationInvalid => "verification_invalid",
            Flash::VerificationSent => "verification_sent",
        }
    }

    fn parse(s: &str) -> Option<Flash> {
        Self::ALL.into_iter().find(|f| f.code() == s)
    }

    fn view(self) -> FlashView {
        let (kind, message) = match self {
            Flash::Welcome => ("ok", "Welcome to Clawy! Your account is ready."),
            Flash::SignedIn => ("ok", "You are signed in."),
            Flash::SignedOut => ("info", "You have been signed out."),
            Flash::PasswordChanged => (
                "ok",
                "Password changed. All your other sessions have been signed out.",
            ),
            Flash::PasswordReset => (
                "ok",
                "Your password has been reset and every session signed out. Log in with the new password.",
            ),
            Flash::SessionRevoked => ("ok", "The session has been signed out."),
            Flash::SshKeyAdded => ("ok", "SSH key added."),
            Flash::SshKeyDeleted => ("ok", "SSH key deleted."),
            Flash::ApiKeyRevoked => ("ok", "API key revoked. It no longer works."),
            Flash::EmailVerified => (
                "ok",
                "Your email address is confirmed. You can create instances now.",
            ),
            Flash::VerificationInvalid => (
                "error",
                "This confirmation link is invalid, expired or already used. Sign in to request a new one.",
            ),
            Flash::VerificationSent => ("info", "We have mailed you a new confirmation link."),
        };
        FlashView { kind, message }
    }
}

/// Reads one cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `__Host-` cookie: `Secure`, `Path=/`, no `Domain` (the prefix demands all three).
fn host_cookie(name: &str, value: &str, same_site: &str, max_age: Option<u64>) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    // Values are base64url tokens or fixed codes: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// AUTH-3: the session cookie, exactly `__Host-clawy_session=…; Path=/; Secure;
/// HttpOnly; SameSite=Lax`. No `Max-Age`: it also ends when the browser closes; the
/// idle and absolute timeouts are enforced on the server.
pub fn session_cookie(token: &str) -> HeaderValue {
    host_cookie(SESSION_COOKIE, token, "Lax", None)
}

pub fn clear_session_cookie() -> HeaderValue {
    host_cookie(SESSION_COOKIE, "", "Lax", Some(0))
}

/// Holds a reset token (already checked to be base64url) for at most the token's hour.
pub fn reset_token_cookie(token: &str) -> HeaderValue {
    host_cookie(RESET_COOKIE, token, "Lax", Some(3600))
}

/// Kept as long as the token is valid (`DEVICE_TOKEN_TTL`).
pub fn device_cookie(token: &str) -> HeaderValue {
    host_cookie(
        DEVICE_COOKIE,
        token,
        "Lax",
        Some(clawy_core::accounts::DEVICE_TOKEN_TTL.as_secs()),
    )
}

pub fn clear_reset_token_cookie() -> HeaderValue {
    host_cookie(RESET_COOKIE, "", "Lax", Some(0))
}

/// The body of a form that carries nothing but its CSRF token (buttons: revoke,
/// delete, log out).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct CsrfOnly {
    pub csrf_token: String,
}

/// Everything a page handler needs about the request.
pub struct Web {
    pub state: AppState,
    pub session: Option<AuthenticatedSession>,
    /// The raw session cookie as sent (to end it at logout / replace it at login).
    raw_session: Option<String>,
    pub client: ClientInfo,
    headers: HeaderMap,
    path_and_query: String,
    flash: Option<Flash>,
    had_flash_cookie: bool,
    anon_csrf: Option<String>,
    anon_csrf_is_new: bool,
}

impl FromRequestParts<AppState> for Web {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state)
            .await
            .map_err(|e| WebError::Internal(format!("client address: {e:?}")))?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let client = ClientInfo::new(addr, user_agent);
        let raw_session = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned);
        let session = match &raw_session {
            Some(raw) => match state.core.sessions().authenticate(raw).await {
                Ok(s) => Some(s),
                Err(clawy_core::sessions::SessionError::Internal(e)) => {
                    return Err(WebError::Internal(format!("session lookup: {e:?}")));
                }
                // Unknown or expired: treated as signed out.
                Err(_) => None,
            },
            None => None,
        };
        let flash_cookie = cookie(&parts.headers, FLASH_COOKIE);
        let flash = flash_cookie.and_then(Flash::parse);
        let existing_csrf = cookie(&parts.headers, ANON_CSRF_COOKIE)
            .filter(|v| v.len() >= 32 && v.len() <= 128)
            .map(str::to_owned);
        Ok(Web {
            state: state.clone(),
            session,
            raw_session,
            client,
            headers: parts.headers.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned()),
            had_flash_cookie: flash_cookie.is_some(),
            flash,
            anon_csrf_is_new: false,
            anon_csrf: existing_csrf,
        })
    }
}

/// A page for a signed-in person: the request's context and their session. Anyone
/// signed out is sent to the login page, and back here afterwards.
pub struct SignedIn {
    pub web: Web,
    pub session: AuthenticatedSession,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let web = Web::from_request_parts(parts, state).await?;
        match web.session.clone() {
            Some(session) => Ok(SignedIn { web, session }),
            None => Err(WebError::SignInRequired {
                next: web.path_and_query.clone(),
            }),
        }
    }
}

impl SignedIn {
    /// The signed-in person.
    pub fn user(&self) -> &User {
        &self.session.user
    }
}

/// A page for an operator. Anyone else, signed out included, sees the ordinary "not
/// found", so operator pages do not reveal they exist.
pub struct OperatorPage {
    pub web: Web,
    pub operator: User,
}

impl FromRequestParts<AppState> for OperatorPage {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match SignedIn::from_request_parts(parts, state).await {
            Ok(SignedIn { web, session }) if session.user.is_operator => Ok(OperatorPage {
                web,
                operator: session.user,
            }),
            Ok(_) | Err(WebError::SignInRequired { .. }) => Err(WebError::NotFound),
            Err(other) => Err(other),
        }
    }
}

impl OperatorPage {
    /// ACCESS-3: operator actions are recorded as `operator:<email>`.
    pub fn actor(&self) -> Actor {
        Actor::operator(
            &self.operator.id,
            &self.operator.email,
            self.web.client.clone(),
        )
    }
}

impl Web {
    /// The caller for audit records: the signed-in person, or anonymous.
    pub fn actor(&self) -> Actor {
        match &self.session {
            Some(s) => s.user.actor(self.client.clone()),
            None => Actor::anonymous(self.client.clone()),
        }
    }

    /// A cookie of this request.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(&self.headers, name)
    }

    pub fn raw_session(&self) -> Option<&str> {
        self.raw_session.as_deref()
    }

    /// The known-device cookie as sent, if any.
    pub fn device_token(&self) -> Option<&str> {
        cookie(&self.headers, DEVICE_COOKIE)
    }

    /// The token this page's forms carry: the session's, or the signed-out one (created
    /// now, and set as a cookie by [`Web::finish`], if the browser has none yet).
    pub fn csrf_token(&mut self) -> String {
        if let Some(s) = &self.session {
            return s.csrf_token.clone();
        }
        self.anon_token()
    }

    fn anon_token(&mut self) -> String {
        if let Some(t) = &self.anon_csrf {
            return t.clone();
        }
        let t = random_token();
        self.anon_csrf = Some(t.clone());
        self.anon_csrf_is_new = true;
        t
    }

    /// The layout of a page: user, CSRF token, flash (consumed).
    pub fn layout(&mut self, title: &str, nav: &'static str) -> Layout {
        let csrf_token = self.csrf_token();
        Layout {
            title: title.to_owned(),
            nav,
            user: self.session.as_ref().map(|s| UserView {
                email: s.user.email.clone(),
                is_operator: s.user.is_operator,
            }),
            csrf_token,
            flash: self.flash.take().map(Flash::view),
            insecure_origin: !cookies_work_at(&self.state.core.config().base_url),
        }
    }

    /// AUTH-3: a state-changing form must come from our own origin and carry the right
    /// token — the session's when signed in, else the signed-out cookie's.
    pub fn check_form(&self, presented: &str) -> Result<(), WebError> {
        if let Err(e) = check_same_origin(&self.headers, &self.state.http.origin) {
            tracing::info!(reason = %e, "form refused: origin check");
            return Err(WebError::CsrfFailed);
        }
        let by_session = self
            .session
            .as_ref()
            .is_some_and(|s| s.verify_csrf(presented));
        let by_cookie = self
            .anon_csrf
            .as_deref()
            .filter(|_| !self.anon_csrf_is_new)
            .is_some_and(|t| {
                !presented.is_empty() && constant_time_eq(t.as_bytes(), presented.as_bytes())
            });
        if by_session || by_cookie {
            Ok(())
        } else {
            tracing::info!(
                signed_in = self.session.is_some(),
                has_csrf_cookie = self.anon_csrf.is_some() && !self.anon_csrf_is_new,
                "form refused: CSRF token missing or wrong"
            );
            Err(WebError::CsrfFailed)
        }
    }

    /// Adds the cookies this request decided on: the signed-out CSRF cookie if newly
    /// made, and the removal of a flash that has now been shown.
    pub fn finish(&self, mut resp: Response) -> Response {
        let h = resp.headers_mut();
        if self.anon_csrf_is_new {
            if let Some(t) = &self.anon_csrf {
                h.append(
                    header::SET_COOKIE,
                    host_cookie(ANON_CSRF_COOKIE, t, "Strict", None),
                );
            }
        }
        if self.had_flash_cookie {
            h.append(
                header::SET_COOKIE,
                host_cookie(FLASH_COOKIE, "", "Lax", Some(0)),
            );
        }
        resp
    }
}

/// Whether browsers accept our `Secure` cookies at this address: https anywhere, plain
/// http only on loopback (browsers treat localhost as a secure context).
pub fn cookies_work_at(base_url: &url::Url) -> bool {
    if base_url.scheme() == "https" {
        return true;
    }
    match base_url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

/// 303 to `to` with a one-shot flash message for the next page.
pub fn redirect_with_flash(to: &str, flash: Flash) -> Response {
    let mut resp = Redirect::to(to).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        host_cookie(FLASH_COOKIE, flash.code(), "Lax", Some(60)),
    );
    resp
}

/// Only same-site paths are followed after login (no open redirect).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if is_local_path(n) => n,
        _ => "/",
    }
}

/// A path on this site, and nothing a browser could read as another origin. Browsers
/// strip tab/CR/LF from URLs and read `\` as `/` (WHATWG URL parsing), so `/\t/evil`
/// and `/\evil` are protocol-relative (`//evil`) in disguise: any control character,
/// whitespace or backslash is refused outright rather than normalised, and so is
/// anything longer than a path of ours can be.
fn is_local_path(n: &str) -> bool {
    n.len() <= 2048
        && n.starts_with('/')
        && !n.starts_with("//")
        && !n.contains("://")
        && !n
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn auth_3_session_cookie_has_exact_flags() {
        let c = session_cookie("abc");
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-clawy_session=abc; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn cookie_parsing_finds_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-clawy_session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn next_is_never_an_open_redirect() {
        assert_eq!(safe_next(Some("/account")), "/account");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        // Browsers drop tab/CR/LF and read a backslash as a slash: each of these
        // would become `//evil.example`.
        for hostile in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/\\/evil.example",
            "/x\\..\\\\evil.example",
            "/\u{0}/evil.example",
            "/ /evil.example",
            "/\u{85}/evil.example",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(
            safe_next(Some("/instances/abc?tab=events")),
            "/instances/abc?tab=events"
        );
    }

    #[test]
    fn secure_cookies_work_on_https_and_loopback_only() {
        let ok = |u: &str| cookies_work_at(&url::Url::parse(u).unwrap());
        assert!(ok("https://clawy.example"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://localhost:8080"));
        assert!(ok("http://[::1]:8080"));
        assert!(!ok("http://clawy.example"));
        assert!(!ok("http://192.168.1.5:8080"));
    }

    #[test]
    fn flash_codes_round_trip() {
        for f in Flash::ALL {
            assert_eq!(Flash::parse(f.code()), Some(f));
        }
        assert_eq!(Flash::parse("<script>"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No open redirect for any input: the result is "/" or a path on this
            /// site that no browser can read as another origin.
            #[test]
            fn safe_next_never_leaves_the_site(next in prop_oneof!["/[a-z/?=&.-]{0,30}", ".{0,60}", "/[\\\\\t\n /]{1,4}[a-z.]{0,20}"]) {
                let out = safe_next(Some(&next));
                prop_assert!(out == "/" || out == next);
                prop_assert!(out.starts_with('/'));
                prop_assert!(!out.starts_with("//"));
                prop_assert!(!out.contains("://"));
                prop_assert!(!out.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\'));
            }

            /// Hostile Cookie headers: parsing never panics and finds only an exact
            /// cookie name.
            #[test]
            fn cookie_parsing_never_panics(header in ".{0,200}") {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&header) {
                    h.insert(axum::http::header::COOKIE, v);
                    if let Some(found) = cookie(&h, SESSION_COOKIE) {
                        let pair = format!("{}={}", SESSION_COOKIE, found);
                        prop_assert!(header.contains(&pair));
                    }
                }
            }
        }
    }
}
