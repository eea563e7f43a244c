//! The template environment: built once, templates embedded in the binary, HTML
//! autoescaping always on (so user input such as key names can never become markup).

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::static_files;

/// Every template, embedded at compile time so the binary is self-contained.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    (
        "auth_base.html",
        include_str!("../../templates/auth_base.html"),
    ),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("landing.html", include_str!("../../templates/landing.html")),
    (
        "overview.html",
        include_str!("../../templates/overview.html"),
    ),
    ("signup.html", include_str!("../../templates/signup.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "forgot_password.html",
        include_str!("../../templates/forgot_password.html"),
    ),
    (
        "reset_password.html",
        include_str!("../../templates/reset_password.html"),
    ),
    ("account.html", include_str!("../../templates/account.html")),
    (
        "ssh_keys.html",
        include_str!("../../templates/ssh_keys.html"),
    ),
    (
        "api_keys.html",
        include_str!("../../templates/api_keys.html"),
    ),
    (
        "api_key_created.html",
        include_str!("../../templates/api_key_created.html"),
    ),
    (
        "instance_created.html",
        include_str!("../../templates/instance_created.html"),
    ),
    (
        "activity.html",
        include_str!("../../templates/activity.html"),
    ),
    (
        "operator_nav.html",
        include_str!("../../templates/operator_nav.html"),
    ),
    (
        "operator_users.html",
        include_str!("../../templates/operator_users.html"),
    ),
    (
        "operator_reports.html",
        include_str!("../../templates/operator_reports.html"),
    ),
    (
        "security.html",
        include_str!("../../templates/security.html"),
    ),
    (
        "security_report.html",
        include_str!("../../templates/security_report.html"),
    ),
    (
        "security_report_thanks.html",
        include_str!("../../templates/security_report_thanks.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "instances_macros.html",
        include_str!("../../templates/instances_macros.html"),
    ),
    (
        "instances.html",
        include_str!("../../templates/instances.html"),
    ),
    (
        "instances_new.html",
        include_str!("../../templates/instances_new.html"),
    ),
    (
        "instances_show.html",
        include_str!("../../templates/instances_show.html"),
    ),
    (
        "instances_delete.html",
        include_str!("../../templates/instances_delete.html"),
    ),
    (
        "instances_operator.html",
        include_str!("../../templates/instances_operator.html"),
    ),
    ("hosts.html", include_str!("../../templates/hosts.html")),
    (
        "host_credentials.html",
        include_str!("../../templates/host_credentials.html"),
    ),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(build_env);

fn build_env() -> Environment<'static> {
    let mut env = Environment::new();
    // Escape everything, whatever the template's name: no template renders raw input.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // A missing optional field (e.g. `form.email` on a fresh form) renders as empty.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.add_global("asset_version", static_files::asset_version());
    for (name, source) in TEMPLATES {
        // A broken template is a build defect; tests render every template, so it
        // shows up there rather than being silently skipped here.
        if let Err(err) = env.add_template(name, source) {
            tracing::error!(template = name, error = %err, "template failed to compile");
        }
    }
    env
}

/// The signed-in person as the layout needs them (nav, operator link).
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub email: String,
    pub is_operator: bool,
}

/// A one-shot message shown at the top of the next page (Post/Redirect/Get).
#[derive(Debug, Clone, Serialize)]
pub struct FlashView {
    pub kind: &'static str,
    pub message: &'static str,
}

/// What the layout of every page needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub user: Option<UserView>,
    pub csrf_token: String,
    pub flash: Option<FlashView>,
    /// `base_url` is plain http on a non-loopback host: browsers will refuse the
    /// `Secure` session cookie, so say so instead of failing silently.
    pub insecure_origin: bool,
}

impl Layout {
    pub fn new(title: impl Into<String>, nav: &'static str) -> Self {
        Self {
            title: title.into(),
            nav,
            ..Self::default()
        }
    }
}

/// Renders a template to a string; `page` is merged over the layout's fields.
pub fn render_to_string(
    name: &str,
    layout: &Layout,
    page: Value,
) -> Result<String, minijinja::Error> {
    let ctx = minijinja::context! { ..page, ..Value::from_serialize(layout) };
    ENV.get_template(name)?.render(ctx)
}

/// Renders a full HTML page with `status`. A template failure is logged and becomes
/// a plain 500 (the detail never reaches the browser).
pub fn page(status: StatusCode, name: &str, layout: &Layout, page: Value) -> Response {
    match render_to_string(name, layout, page) {
        Ok(body) => {
            let mut resp = (status, Html(body)).into_response();
            let h = resp.headers_mut();
            // Pages carry per-person data and CSRF tokens: never cache them.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(err) => {
            tracing::error!(template = name, error = %err, "template render failed");
            internal_error()
        }
    }
}

/// A 500 that does not depend on the template engine working.
pub fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error · Clawy</title></head><body><h1>Something went wrong</h1><p>The error has been logged. Please try again.</p></body></html>"),
    )
        .into_response()
}

/// An error page in the product's look.
pub fn error_page(
    status: StatusCode,
    heading: &str,
    message: &str,
    layout: Option<Layout>,
) -> Response {
    let mut layout = layout.unwrap_or_default();
    layout.title = heading.to_owned();
    page(
        status,
        "error.html",
        &layout,
        minijinja::context! { status => status.as_u16(), heading => heading, message => message },
    )
}

/// 404 for unknown pages (H2's fallback calls this for non-API paths).
pub fn render_not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address. It may have moved, or you may not have access to it.",
        None,
    )
}

/// 403 when a form's CSRF token or the request's origin does not check out (AUTH-3).
pub fn render_csrf_failed() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "For your safety we could not accept this form: it was not sent from this site or its security token has expired. Go back, reload the page and try again.",
        None,
    )
}

/// 429 with `Retry-After` (AUTH-5, REPORT-1).
pub fn render_too_many_requests(retry_after_secs: u64) -> Response {
    let minutes = retry_after_secs.div_ceil(60).max(1);
    let message = format!(
        "Too many attempts from here. Please wait {minutes} minute{} and try again.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut resp = error_page(StatusCode::TOO_MANY_REQUESTS, "Slow down", &message, None);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn user_input_is_escaped() {
        let layout = Layout::new("x", "");
        let html = render_to_string(
            "error.html",
            &layout,
            minijinja::context! { status => 400, heading => "<script>alert(1)</script>", message => "\"'&" },
        )
        .unwrap();
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn templates_have_no_inline_script_or_style() {
        // CSP forbids 'unsafe-inline'; these would be blocked in the browser.
        for (name, src) in TEMPLATES {
            assert!(!src.contains("style="), "{name} has a style attribute");
            assert!(!src.contains("<style"), "{name} has a style element");
            assert!(
                !src.contains(" onclick") && !src.contains(" onsubmit"),
                "{name} has an inline handler"
            );
            for (i, _) in src.match_indices("<script") {
                assert!(
                    src[i..].starts_with("<script src="),
                    "{name} has an inline script"
                );
            }
        }
    }
}
