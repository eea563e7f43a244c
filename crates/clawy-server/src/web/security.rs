//! REPORT-1: the security page (rendered from the same promise list the tests check),
//! `/.well-known/security.txt` (RFC 9116) and the vulnerability report form.

use axum::Router;
use axum::extract::{Form, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use clawy_core::Actor;
use clawy_core::installation::{InstallationFacts, PromiseStatus, status_of};
use clawy_core::promises::{self, CATEGORIES, PROMISES};
use clawy_core::reports::ReportError;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::context::Web;
use super::error::field_error;
use super::render::page;
use super::{FieldErrors, WebError, WebResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/security", get(security_page))
        .route("/.well-known/security.txt", get(security_txt))
        // RFC 9116 §3: the legacy location may redirect to the canonical one.
        .route(
            "/security.txt",
            get(|| async { Redirect::permanent("/.well-known/security.txt") }),
        )
        .route("/security/report", get(report_page).post(submit_report))
        .route("/security/report/thanks", get(thanks_page))
}

#[derive(Serialize)]
struct PromiseView {
    id: &'static str,
    title: &'static str,
    text: &'static str,
    /// Why the promise is not yet kept (no test proves it yet), shown beside it.
    not_yet_kept: Option<&'static str>,
    /// Not kept on this installation: why (from `clawy_core::installation`).
    not_active: Option<String>,
}

#[derive(Serialize)]
struct GroupView {
    anchor: String,
    title: &'static str,
    summary: &'static str,
    promises: Vec<PromiseView>,
}

/// The promises grouped by category, in the order of the published list, each with
/// whether this installation keeps it.
fn promise_groups(facts: &InstallationFacts) -> Vec<GroupView> {
    CATEGORIES
        .iter()
        .map(|c| GroupView {
            anchor: c.id.to_ascii_lowercase(),
            title: c.title,
            summary: c.summary,
            promises: PROMISES
                .iter()
                .filter(|p| p.category == c.id)
                .map(|p| PromiseView {
                    id: p.id,
                    title: p.title,
                    text: p.text,
                    not_yet_kept: promises::not_yet_kept(p.id),
                    // A promise no test proves yet says so on its own; the
                    // installation's status is only shown for the others.
                    not_active: match status_of(p.id, facts) {
                        _ if promises::not_yet_kept(p.id).is_some() => None,
                        PromiseStatus::Active => None,
                        PromiseStatus::NotActive { why } => Some(why),
                    },
                })
                .collect(),
        })
        .collect()
}

async fn security_page(mut web: Web) -> WebResult {
    let facts = InstallationFacts::gather(&web.state.core)
        .await
        .map_err(|e| WebError::Internal(format!("installation facts: {e:?}")))?;
    let config = web.state.core.config();
    let contact = contact_display(&config.security_contact);
    // AUTH-5: the limits stated are the ones this installation runs with.
    let t = &config.throttle;
    let limits = context! {
        ip_max_failures => t.ip_max_failures,
        api_key_ip_max_failures => t.api_key_ip_max_failures,
        window_minutes => t.ip_window_seconds.div_ceil(60),
        ipv6_prefix => t.ipv6_bucket_prefix,
        account_threshold => t.account_lock_threshold,
        lock_base_seconds => t.account_lock_base_seconds,
        lock_max_minutes => t.account_lock_max_seconds.div_ceil(60),
    };
    let layout = web.layout("Security", "security");
    let resp = page(
        StatusCode::OK,
        "security.html",
        &layout,
        context! { groups => promise_groups(&facts), security_contact => contact, limits => limits },
    );
    Ok(web.finish(resp))
}

/// The configured contact as a URI: an email address becomes `mailto:`.
fn contact_uri(contact: &str) -> String {
    let c = contact.trim();
    if c.starts_with("mailto:") || c.starts_with("https://") {
        c.to_owned()
    } else {
        format!("mailto:{c}")
    }
}

fn contact_display(contact: &str) -> String {
    contact.trim().trim_start_matches("mailto:").to_owned()
}

/// RFC 9116 body. `Expires` is one year from `now` (the RFC recommends less than a
/// year; the file is generated per request, so it never goes stale).
pub fn security_txt_body(contact: &str, base_url: &str, now: DateTime<Utc>) -> String {
    let base = base_url.trim_end_matches('/');
    let expires = (now + Duration::days(365)).format("%Y-%m-%dT%H:%M:%SZ");
    format!(
        "Contact: {contact}\nExpires: {expires}\nPreferred-Languages: en\nCanonical: {base}/.well-known/security.txt\nPolicy: {base}/security\n",
        contact = contact_uri(contact),
    )
}

async fn security_txt(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let core = &state.core;
    let body = security_txt_body(
        &core.config().security_contact,
        core.config().base_url.as_str(),
        core.now(),
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Default, Deserialize, Serialize)]
#[serde(default)]
struct ReportForm {
    #[serde(skip_serializing)]
    csrf_token: String,
    email: String,
    title: String,
    details: String,
}

async fn report_page(mut web: Web) -> WebResult {
    let layout = web.layout("Report a vulnerability", "security");
    let resp = page(
        StatusCode::OK,
        "security_report.html",
        &layout,
        context! { form => ReportForm::default(), errors => FieldErrors::new() },
    );
    Ok(web.finish(resp))
}

async fn submit_report(mut web: Web, Form(f): Form<ReportForm>) -> WebResult {
    web.check_form(&f.csrf_token)?;
    let caller = match &web.session {
        Some(s) => s.user.actor(web.client.clone()),
        None => Actor::anonymous(web.client.clone()),
    };
    let email = Some(f.email.as_str()).filter(|e| !e.trim().is_empty());
    let result = web
        .state
        .core
        .reports()
        .create(email, &f.title, &f.details, &caller)
        .await;
    let mut errors = FieldErrors::new();
    let status = match result {
        Ok(report) => {
            let to = format!("/security/report/thanks?id={}", report.tracking_id);
            return Ok(web.finish(Redirect::to(&to).into_response()));
        }
        // REPORT-1: rate-limited per client address → 429 page with Retry-After.
        Err(ReportError::RateLimited { retry_after }) => {
            return Err(WebError::Throttled { retry_after });
        }
        Err(e) => field_error(
            e,
            &[("title", "title"), ("body", "details"), ("email", "email")],
            &mut errors,
        )?,
    };
    let layout = web.layout("Report a vulnerability", "security");
    let resp = page(
        status,
        "security_report.html",
        &layout,
        context! { form => f, errors },
    );
    Ok(web.finish(resp))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ThanksQuery {
    id: String,
}

/// Tracking ids look like `CLAWY-2026-7KQ2MX`; anything else is not shown.
fn is_tracking_id(s: &str) -> bool {
    s.starts_with("CLAWY-")
        && s.len() <= 32
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

async fn thanks_page(mut web: Web, Query(q): Query<ThanksQuery>) -> WebResult {
    if !is_tracking_id(&q.id) {
        return Err(WebError::NotFound);
    }
    let layout = web.layout("Thank you", "security");
    let resp = page(
        StatusCode::OK,
        "security_report_thanks.html",
        &layout,
        context! { tracking_id => q.id },
    );
    Ok(web.finish(resp))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn report_1_security_txt_has_rfc9116_fields() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 7, 0, 0).unwrap();
        let body = security_txt_body("security@clawy.example", "https://clawy.example/", now);
        assert_eq!(
            body,
            "Contact: mailto:security@clawy.example\nExpires: 2027-11-25T07:00:00Z\nPreferred-Languages: en\nCanonical: https://clawy.example/.well-known/security.txt\nPolicy: https://clawy.example/security\n"
        );
        let https = security_txt_body("https://clawy.example/report", "https://clawy.example", now);
        assert!(https.starts_with("Contact: https://clawy.example/report\n"));
    }

    #[test]
    fn report_1_every_promise_is_in_a_group() {
        let n: usize = promise_groups(&InstallationFacts::default())
            .iter()
            .map(|g| g.promises.len())
            .sum();
        assert_eq!(n, PROMISES.len());
    }

    #[test]
    fn only_tracking_ids_are_echoed() {
        assert!(is_tracking_id("CLAWY-2026-7KQ2MX"));
        assert!(!is_tracking_id("<b>hi</b>"));
        assert!(!is_tracking_id("hello"));
    }
}
