//! Signup, login, logout and password reset (AUTH-1, AUTH-3, AUTH-5).

use axum::extract::{Form, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::{Router, routing::post};
use clawy_core::Actor;
use clawy_core::SecretString;
use clawy_core::accounts::AccountError;
use minijinja::context;
use serde::Deserialize;

use super::context::{
    CsrfOnly, Flash, RESET_COOKIE, Web, clear_reset_token_cookie, clear_session_cookie,
    redirect_with_flash, reset_token_cookie, safe_next, session_cookie,
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
}

async fn signup_page(mut web: Web) -> WebResult {
    if web.session.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let layout = web.layout("Sign up", "signup");
    let resp = page(
        StatusCode::OK,
        "signup.html",
        &layout,
        context! { form => context!{}, errors => FieldErrors::new() },
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
        match core.accounts().signup(&f.email, &password, &caller).await {
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
            Err(e) => {
                status = field_error(
                    e,
                    &[("email", "email"), ("password", "password")],
                    &mut errors,
                )?
            }
        }
    }
    // AUTH-1: the password is never echoed back; the email is.
    let layout = web.layout("Sign up", "signup");
    let resp = page(
        status,
        "signup.html",
        &layout,
        context! { form => context! { email => f.email }, errors => errors },
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
        .authenticate(&f.email, &password, &caller)
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
    let layout = web.layout("Choose a new password", "login");
    let resp = page(
        StatusCode::OK,
        "reset_password.html",
        &layout,
        context! { invalid => invalid, errors => FieldErrors::new() },
    );
    Ok(web.finish(resp))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ResetForm {
    csrf_token: String,
    password: String,
    password_confirm: String,
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
            .complete_password_reset(&token, &password, &caller)
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
    let layout = web.layout("Choose a new password", "login");
    let mut resp = page(
        status,
        "reset_password.html",
        &layout,
        context! { invalid => invalid, errors => errors },
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
