//! The web dashboard and the public security pages: server-rendered HTML (minijinja),
//! no inline scripts or styles, fully usable without JavaScript.
//!
//! A handler states the privilege it needs in its signature: [`context::Web`] (anyone),
//! [`context::SignedIn`] (a session; else the login page) or [`context::OperatorPage`]
//! (an operator; else "not found"). Errors become pages in one place ([`error`]).
//!
//! Every state-changing form is a POST checked by [`context::Web::check_form`]
//! (origin + CSRF token, AUTH-3); GET handlers only read. After a successful POST the
//! handler redirects (303) with a one-shot flash message — except where a secret is
//! shown once (a new API key), which is rendered directly with `Cache-Control: no-store`.

use axum::Router;
use chrono::{DateTime, Utc};

use crate::state::AppState;

mod account;
mod activity;
mod api_keys;
mod auth_pages;
pub mod charts;
pub mod context;
pub mod error;
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

pub use error::{FieldErrors, INVALID_FORM, WebError, WebResult};

/// A time as shown in tables, and its ISO form for `<time datetime>`.
pub fn show_time(t: DateTime<Utc>) -> (String, String) {
    (
        t.format("%Y-%m-%d %H:%M UTC").to_string(),
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
