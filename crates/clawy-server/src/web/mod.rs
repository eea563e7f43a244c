//! The web dashboard and the public security pages: server-rendered HTML (minijinja),
//! no inline scripts or styles, fully usable without JavaScript.
//!
//! Every state-changing form is a POST checked by [`context::Web::check_form`]
//! (origin + CSRF token, AUTH-3); GET handlers only read. After a successful POST the
//! handler redirects (303) with a one-shot flash message — except where a secret is
//! shown once (a new API key), which is rendered directly with `Cache-Control: no-store`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use clawy_core::error::{DomainError, ErrorKind};

use crate::state::AppState;

mod account;
mod activity;
mod api_keys;
mod auth_pages;
pub mod charts;
pub mod context;
mod hosts;
mod instances;
mod operator;
mod overview;
pub mod render;
mod security;
mod ssh_keys;
pub mod static_files;

pub use render::{render_csrf_failed, render_not_found, render_too_many_requests};

/// All page routes (merged into the app by `app::router`).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(static_files::router())
        .merge(overview::router())
        .merge(auth_pages::router())
        .merge(account::router())
        .merge(ssh_keys::router())
        .merge(api_keys::router())
        .merge(activity::router())
        .merge(operator::router())
        .merge(instances::router())
        .merge(hosts::router())
        .merge(security::router())
}

/// Why a page request did not produce its page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not signed in (or the session ended): go to the login page, then back to `next`.
    #[error("sign-in required")]
    SignInRequired { next: String },
    /// AUTH-3: missing/wrong CSRF token or a cross-site origin.
    #[error("CSRF or origin check failed")]
    CsrfFailed,
    /// Unknown, someone else's, or operator-only for a non-operator (never 403: that
    /// would reveal existence).
    #[error("not found")]
    NotFound,
    /// AUTH-5 / REPORT-1 rate limits.
    #[error("too many requests")]
    Throttled { retry_after: Duration },
    /// A request the domain refused, with a message a person can act on.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// A bug or infrastructure failure; the detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl<E: DomainError> From<E> for WebError {
    fn from(err: E) -> Self {
        match err.kind() {
            ErrorKind::NotFound => WebError::NotFound,
            ErrorKind::Throttled { retry_after } => WebError::Throttled { retry_after },
            ErrorKind::Unauthorized => WebError::SignInRequired {
                next: "/".to_owned(),
            },
            ErrorKind::Internal => WebError::Internal(format!("{err:?}")),
            ErrorKind::Invalid { .. } => WebError::Rejected {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: err.to_string(),
            },
            ErrorKind::Conflict => WebError::Rejected {
                status: StatusCode::CONFLICT,
                message: err.to_string(),
            },
            ErrorKind::Forbidden => WebError::NotFound,
            ErrorKind::Unavailable => WebError::Rejected {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: err.to_string(),
            },
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignInRequired { next } => {
                let target = if next == "/" {
                    "/login".to_owned()
                } else {
                    format!(
                        "/login?next={}",
                        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                    )
                };
                Redirect::to(&target).into_response()
            }
            WebError::CsrfFailed => render_csrf_failed(),
            WebError::NotFound => render_not_found(),
            WebError::Throttled { retry_after } => render_too_many_requests(retry_after.as_secs()),
            WebError::Rejected { status, message } => {
                render::error_page(status, "That did not work", &message, None)
            }
            WebError::Internal(detail) => {
                tracing::error!(%detail, "page failed");
                render::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Please try again; if it keeps happening, contact the operator.",
                    None,
                )
            }
        }
    }
}

pub type WebResult = Result<Response, WebError>;

/// Field name → message, shown next to the field; `_form` is shown above the form.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// A time as shown in tables, and its ISO form for `<time datetime>`.
pub fn show_time(t: DateTime<Utc>) -> (String, String) {
    (
        t.format("%Y-%m-%d %H:%M UTC").to_string(),
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Status for a re-rendered form with validation errors.
pub const INVALID_FORM: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
