//! Signup, login, logout and password reset (AUTH-1, AUTH-3, AUTH-5).

use axum::extract::{Form, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::{Router, routing::post};
use clawy_core::Actor;
use clawy_core::SecretString;
use clawy_core::accounts::AccountError;
use clawy_core::config::SignupMode;
use minijinja::context;
use serde::Deserialize;

use super::context::{
    CsrfOnly, Flash, RESET_COOKIE, Web, clear_reset_token_cookie, clear_session_cookie,
    device_cookie, redirect_with_flash, reset_token_cookie, safe_next, session_cookie,
};
use super::error::field_error;
use super::render::page;
use super::{FieldErrors, INVALID_FORM, WebError, WebResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", get(signup_page).post(signup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/reset-password", get(reset_page).post(reset))
        .route("/verify-email", get(verify_email_page))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CredentialsForm {
    csrf_token: String,
    email: String,
    password: String,
    password_confirm: String,
    next: Option<String>,
    /// Invite-only signup: the invitation from the operator's link.
    invite: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InviteQuery {
    invite: String,
}

async fn signup_page(mut web: Web, Query(q): Query<InviteQuery>) -> WebResult {
    if web.session.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let invite_only = web.state.core.config().signup_mode == SignupMode::Invite;
    let layout = web.layout("Sign up", "signup");
    let resp = page(
        StatusCode::OK,
        "signup.html",
        &layout,
        context! { form => context!{ invite => q.invite }, errors => FieldErrors::new(), invite_only },
    );
    Ok(web.finish(resp))
}

async fn signup(mut web: Web, Form(f): Form<CredentialsForm>) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let mut errors = FieldErrors::new();
    let mut status = INVALID_FORM;
    if f.password != f.password_confirm {
        errors.insert(
            "password_confirm",
            "The two passwords do not match.".to_owned(),
        );
    }
    let password = SecretString::from(f.password);
    if errors.is_empty() {
        let core = &web.state.core;
        let caller = Actor::anonymous(web.client.clone());
        let invite = Some(f.invite.trim())
            .filter(|i| !i.is_empty())
            .map(|i| SecretString::from(i.to_owned()));
        match core
            .accounts()
            .signup_with(&f.email, &password, invite.as_ref(), &caller)
            .await
        {
            Ok(user) => {
                // AUTH-3: a brand-new session; whatever this browser carried before is ended.
                if let Some(raw) = web.raw_session() {
                    core.sessions().logout(raw, &caller).await?;
                }
                let new = core.sessions().create(&user, &web.client).await?;
                let mut resp = redirect_with_flash("/", Flash::Welcome);
                resp.headers_mut()
                    .append(header::SET_COOKIE, session_cookie(new.token.expose()));
                return Ok(web.finish(resp));
            }
            Err(e @ AccountError::InviteRequired) => {
                errors.insert("invite", e.to_string());
            }
            Err(e) => {
                status = field_error(
                    e,
                    &[
                        ("email", "email"),
                        ("password", "password"),
                        ("invite", "invite"),
                    ],
                    &mut errors,
                )?
            }
        }
    }
    // AUTH-1: the password is never echoed back; the email is.
    let invite_only = web.state.core.config().signup_mode == SignupMode::Invite;
    let layout = web.layout("Sign up", "signup");
    let resp = page(
        status,
        "signup.html",
        &layout,
        context! { form => context! { email => f.email, invite => f.invite }, errors => errors, invite_only },
    );
    Ok(web.finish(resp))
}

async fn login_page(mut web: Web, Query(q): Query<NextQuery>) -> WebResult {
    if web.session.is_some() {
        return Ok(Redirect::to(safe_next(q.next.as_deref())).into_response());
    }
    let layout = web.layout("Log in", "login");
    let next = safe_next(q.next.as_deref()).to_owned();
    let resp = page(
        StatusCode::OK,
        "login.html",
        &layout,
        context! { form => context!{}, errors => FieldErrors::new(), next => next },
    );
    Ok(web.finish(resp))
}

async fn login(mut web: Web, Form(f): Form<CredentialsForm>) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let core = &web.state.core;
    let caller = Actor::anonymous(web.client.clone());
    let password = SecretString::from(f.password);
    let next = safe_next(f.next.as_deref()).to_owned();
    match core
        .accounts()
        .authenticate_from(&f.email, &password, &caller, web.device_token())
        .await
    {
        Ok(user) => {
            // AUTH-3: no session fixation — the session this browser had (if any) is
            // ended and a new id is issued.
            if let Some(raw) = web.raw_session() {
                core.sessions().logout(raw, &caller).await?;
            }
            let new = core.sessions().create(&user, &web.client).await?;
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, session_cookie(new.token.expose()));
            // AUTH-5: this browser is now a known device of the account.
            let device = core.accounts().issue_device_token(&user);
            resp.headers_mut()
                .append(header::SET_COOKIE, device_cookie(device.expose()));
            Ok(web.finish(resp))
        }
        // AUTH-5: throttled → 429 page with Retry-After.
        Err(AccountError::Throttled { retry_after }) => Err(WebError::Throttled { retry_after }),
        // One message for unknown email, wrong password and malformed input.
        Err(AccountError::InvalidCredentials | AccountError::InvalidEmail(_)) => {
            let mut errors = FieldErrors::new();
            errors.insert("_form", AccountError::InvalidCredentials.to_string());
            // A stale cookie is useless now; the browser drops it.
            let layout = web.layout("Log in", "login");
            let mut resp = page(
                StatusCode::UNAUTHORIZED,
                "login.html",
                &layout,
                context! { form => context! { email => f.email }, errors => errors, next => next },
            );
            if web.raw_session().is_some() && web.session.is_none() {
                resp.headers_mut()
                    .append(header::SET_COOKIE, clear_session_cookie());
            }
            Ok(web.finish(resp))
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(web: Web, Form(f): Form<CsrfOnly>) -> WebResult {
    if web.session.is_some() {
        web.check_form(&f.csrf_token)?;
    }
    // AUTH-3: the server-side session is deleted, not just the cookie.
    if let Some(raw) = web.raw_session() {
        web.state.core.sessions().logout(raw, &web.actor()).await?;
    }
    let mut resp = redirect_with_flash("/login", Flash::SignedOut);
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie());
    Ok(web.finish(resp))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ForgotForm {
    csrf_token: String,
    email: String,
}

async fn forgot_page(mut web: Web) -> WebResult {
    let layout = web.layout("Reset your password", "login");
    let resp = page(
        StatusCode::OK,
        "forgot_password.html",
        &layout,
        context! { form => context!{}, errors => FieldErrors::new(), sent => false },
    );
    Ok(web.finish(resp))
}

async fn forgot(mut web: Web, Form(f): Form<ForgotForm>) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let caller = Actor::anonymous(web.client.clone());
    let mut errors = FieldErrors::new();
    let mut status = StatusCode::OK;
    let sent = match web
        .state
        .core
        .accounts()
        .request_password_reset(&f.email, &caller)
        .await
    {
        Ok(()) => true,
        Err(AccountError::Throttled { retry_after }) => {
            return Err(WebError::Throttled { retry_after });
        }
        Err(e) => {
            status = field_error(e, &[("email", "email")], &mut errors)?;
            false
        }
    };
    let layout = web.layout("Reset your password", "login");
    let resp = page(
        status,
        "forgot_password.html",
        &layout,
        context! { form => context! { email => f.email }, errors => errors, sent => sent },
    );
    Ok(web.finish(resp))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TokenQuery {
    token: String,
}

/// The link from the verification mail. A GET that changes state, exceptionally: the
/// token is single-use, unguessable and proves the click came from the mailbox, and
/// the only change is "this address is confirmed" (nothing a forged request could
/// abuse). The token leaves the URL at once (redirect).
async fn verify_email_page(web: Web, Query(q): Query<TokenQuery>) -> WebResult {
    let token = q.token.trim();
    if !looks_like_token(token) {
        return Ok(web.finish(redirect_with_flash("/", Flash::VerificationInvalid)));
    }
    let caller = Actor::anonymous(web.client.clone());
    let flash = match web
        .state
        .core
        .accounts()
        .verify_email(&SecretString::from(token.to_owned()), &caller)
        .await
    {
        Ok(_) => Flash::EmailVerified,
        Err(AccountError::VerificationTokenInvalid) => Flash::VerificationInvalid,
        Err(e) => return Err(e.into()),
    };
    Ok(web.finish(redirect_with_flash("/", flash)))
}

/// Reset tokens are base64url; anything else is not one (and never goes into a cookie).
fn looks_like_token(t: &str) -> bool {
    (16..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The link from the email lands here with `?token=`. The token moves into a short-lived
/// cookie and the browser is sent to the bare URL, so the token is not left in the
/// history, the address bar, or the `Referer` of anything the page loads.
async fn reset_page(mut web: Web, Query(q): Query<TokenQuery>) -> WebResult {
    let token = q.token.trim();
    if !token.is_empty() && looks_like_token(token) {
        let mut resp = Redirect::to("/reset-password").into_response();
        resp.headers_mut()
            .append(header::SET_COOKIE, reset_token_cookie(token));
        return Ok(web.finish(resp));
    }
    let invalid = !token.is_empty() || web.cookie(RESET_COOKIE).is_none();
    let keys = reset_keys(&web).await?;
    let layout = web.layout("Choose a new password", "login");
    let resp = page(
        StatusCode::OK,
        "reset_password.html",
        &layout,
        context! { invalid => invalid, errors => FieldErrors::new(), keys => keys },
    );
    Ok(web.finish(resp))
}

#[derive(serde::Serialize)]
struct ResetKeyView {
    name: String,
    tier: &'static str,
    prefix: String,
    last_used: Option<String>,
}

/// AUTH-2/AUTH-3: the reset page lists the account's live API keys (the reset token
/// proves who is asking), so someone resetting after a compromise sees what a stolen
/// session may have minted and can revoke it all in the same step.
async fn reset_keys(web: &Web) -> Result<Vec<ResetKeyView>, WebError> {
    let Some(token) = web.cookie(RESET_COOKIE) else {
        return Ok(Vec::new());
    };
    let core = &web.state.core;
    let user = match core
        .accounts()
        .reset_token_user(&SecretString::from(token.to_owned()))
        .await
    {
        Ok(u) => u,
        Err(AccountError::ResetTokenInvalid) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let now = core.now();
    Ok(core
        .api_keys()
        .list(&user.id)
        .await?
        .into_iter()
        .filter(|k| k.revoked_at.is_none() && !k.is_expired_at(now))
        .map(|k| ResetKeyView {
            name: k.name,
            tier: k.tier.as_str(),
            prefix: k.prefix,
            last_used: k.last_used_at.map(|t| super::show_time(t).0),
        })
        .collect())
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ResetForm {
    csrf_token: String,
    password: String,
    password_confirm: String,
    /// "I think someone else had access": revoke every API key too.
    revoke_api_keys: String,
}

async fn reset(mut web: Web, Form(f): Form<ResetForm>) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let mut errors = FieldErrors::new();
    let mut status = INVALID_FORM;
    let mut invalid = false;
    let token = web.cookie(RESET_COOKIE).map(str::to_owned);
    if f.password != f.password_confirm {
        errors.insert(
            "password_confirm",
            "The two passwords do not match.".to_owned(),
        );
    } else if let Some(token) = token {
        let caller = Actor::anonymous(web.client.clone());
        let token = SecretString::from(token);
        let password = SecretString::from(f.password);
        match web
            .state
            .core
            .accounts()
            .complete_password_reset_with(&token, &password, !f.revoke_api_keys.is_empty(), &caller)
            .await
        {
            Ok(_) => {
                // AUTH-3: every session of the account ended, this browser's included.
                let mut resp = redirect_with_flash("/login", Flash::PasswordReset);
                let h = resp.headers_mut();
                h.append(header::SET_COOKIE, clear_session_cookie());
                h.append(header::SET_COOKIE, clear_reset_token_cookie());
                return Ok(web.finish(resp));
            }
            Err(AccountError::ResetTokenInvalid) => invalid = true,
            Err(e) => status = field_error(e, &[("password", "password")], &mut errors)?,
        }
    } else {
        invalid = true;
    }
    let keys = if invalid {
        Vec::new()
    } else {
        reset_keys(&web).await?
    };
    let layout = web.layout("Choose a new password", "login");
    let mut resp = page(
        status,
        "reset_password.html",
        &layout,
        context! { invalid => invalid, errors => errors, keys => keys },
    );
    if invalid {
        resp.headers_mut()
            .append(header::SET_COOKIE, clear_reset_token_cookie());
    }
    Ok(web.finish(resp))
}

#[cfg(test)]
mod tests {
    use super::looks_like_token;

    #[test]
    fn only_base64url_tokens_reach_the_cookie() {
        assert!(looks_like_token(
            "AbCdEfGhIjKlMnOpQrStUvWxYz012345-_abcdefghij"
        ));
        assert!(!looks_like_token("abc; Domain=evil.example; x=0123456789"));
        assert!(!looks_like_token("short"));
    }
}
