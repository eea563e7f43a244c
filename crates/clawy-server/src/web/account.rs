//! `/account`: change password, list and revoke sessions (AUTH-1, AUTH-3).

use axum::Router;
use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clawy_core::SecretString;
use clawy_core::accounts::AccountError;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::context::{CsrfOnly, Flash, SignedIn, redirect_with_flash};
use super::error::field_error;
use super::render::page;
use super::{FieldErrors, INVALID_FORM, WebError, WebResult, show_time};
use crate::pagination::PageQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account_page))
        .route("/account/password", post(change_password))
        .route("/account/sessions/{id}/revoke", post(revoke_session))
        .route("/account/verify-email", post(resend_verification))
}

#[derive(Serialize)]
struct SessionRow {
    id: String,
    current: bool,
    /// "Chrome on Linux"; the full user agent is in the tooltip.
    browser: String,
    user_agent: Option<String>,
    client_addr: Option<String>,
    created: String,
    created_iso: String,
    last_seen: String,
    last_seen_iso: String,
}

/// The account page: the password form (with `errors` after a failed change) and a
/// page of the sessions, most recently used first.
async fn render_account(
    page_: &mut SignedIn,
    q: &PageQuery,
    status: StatusCode,
    errors: FieldErrors,
) -> WebResult {
    let SignedIn { web, session } = page_;
    let req = q.request()?;
    let sessions = web.state.core.sessions();
    let listed = sessions.page_for_user(&session.user.id, &req).await?;
    let (rows, pager) = q.rows("/account", listed, |s| {
        let (created, created_iso) = show_time(s.created_at);
        let (last_seen, last_seen_iso) = show_time(s.last_seen_at);
        SessionRow {
            current: s.id == session.session.id,
            browser: describe_user_agent(s.user_agent.as_deref()),
            id: s.id,
            user_agent: s.user_agent,
            client_addr: s.client_addr,
            created,
            created_iso,
            last_seen,
            last_seen_iso,
        }
    });
    let layout = web.layout("Account", "account");
    let resp = page(
        status,
        "account.html",
        &layout,
        context! { sessions => rows, pager, errors => errors },
    );
    Ok(web.finish(resp))
}

/// A short, human name for a user agent ("Firefox on macOS"); good enough to recognise
/// one's own devices, never used for decisions.
fn describe_user_agent(ua: Option<&str>) -> String {
    let Some(ua) = ua.filter(|u| !u.trim().is_empty()) else {
        return "Unknown browser".to_owned();
    };
    let browser = if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("OPR/") {
        "Opera"
    } else if ua.contains("Chrome/") || ua.contains("Chromium/") {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else if ua.starts_with("curl/") {
        "curl"
    } else {
        return ua.chars().take(40).collect();
    };
    let os = if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("Linux")
    } else {
        None
    };
    match os {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_owned(),
    }
}

async fn account_page(mut page_: SignedIn, Query(q): Query<PageQuery>) -> WebResult {
    render_account(&mut page_, &q, StatusCode::OK, FieldErrors::new()).await
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PasswordForm {
    csrf_token: String,
    current_password: String,
    new_password: String,
    new_password_confirm: String,
}

async fn change_password(mut page_: SignedIn, Form(f): Form<PasswordForm>) -> WebResult {
    let SignedIn { web, session } = &mut page_;
    web.check_form(&f.csrf_token)?;
    let mut errors = FieldErrors::new();
    let mut status = INVALID_FORM;
    if f.new_password != f.new_password_confirm {
        errors.insert(
            "new_password_confirm",
            "The two new passwords do not match.".to_owned(),
        );
    } else {
        let current = SecretString::from(f.current_password);
        let new = SecretString::from(f.new_password);
        // AUTH-3: this session stays, every other one of the account ends.
        let result = web
            .state
            .core
            .accounts()
            .change_password(
                &session.user.id,
                &current,
                &new,
                Some(&session.session.id),
                &web.actor(),
            )
            .await;
        match result {
            Ok(()) => {
                return Ok(web.finish(redirect_with_flash("/account", Flash::PasswordChanged)));
            }
            Err(AccountError::Throttled { retry_after }) => {
                return Err(WebError::Throttled { retry_after });
            }
            Err(e) => {
                status = field_error(
                    e,
                    &[
                        ("current_password", "current_password"),
                        ("password", "new_password"),
                    ],
                    &mut errors,
                )?
            }
        }
    }
    render_account(&mut page_, &PageQuery::default(), status, errors).await
}

async fn revoke_session(
    SignedIn { web, session }: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> WebResult {
    web.check_form(&f.csrf_token)?;
    web.state
        .core
        .sessions()
        .revoke(&session.user.id, &id, &web.actor())
        .await?;
    Ok(web.finish(redirect_with_flash("/account", Flash::SessionRevoked)))
}

/// Mails a new verification link (rate-limited in core).
async fn resend_verification(
    SignedIn { web, session }: SignedIn,
    Form(f): Form<CsrfOnly>,
) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let accounts = web.state.core.accounts();
    if !accounts.is_email_verified(&session.user.id).await? {
        accounts.send_verification(&session.user).await?;
    }
    Ok(web.finish(redirect_with_flash("/", Flash::VerificationSent)))
}

#[cfg(test)]
mod tests {
    use super::describe_user_agent;

    #[test]
    fn user_agents_get_short_names() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(describe_user_agent(Some(chrome)), "Chrome on Linux");
        let ff =
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(describe_user_agent(Some(ff)), "Firefox on macOS");
        assert_eq!(describe_user_agent(Some("clawy-tests")), "clawy-tests");
        assert_eq!(describe_user_agent(None), "Unknown browser");
    }
}
