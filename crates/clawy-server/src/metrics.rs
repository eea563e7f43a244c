//! `/healthz` and `/metrics` (Prometheus text format).
//!
//! Counters live in memory per process. `/metrics` is for operators only: an operator's
//! session or admin key, or a loopback client (a Prometheus on the same host). Everyone
//! else gets the same 404 as for a route that does not exist.

use crate::auth::{ClientAddr, MaybeCaller};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clawy_core::actor::Tier;
use clawy_proto::api::Health;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route, status) → count. Routes are matched patterns, so the label set is
    /// bounded by the router (unmatched paths share one label).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    api_key_auth_failures: AtomicU64,
    throttled: AtomicU64,
    csrf_rejections: AtomicU64,
    security_reports: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((method.to_owned(), route.to_owned(), status))
                .or_insert(0) += 1;
        }
    }
    pub fn api_key_auth_failed(&self) {
        self.api_key_auth_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// An answer 429 (AUTH-5 / report rate limit).
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
    pub fn csrf_rejected(&self) {
        self.csrf_rejections.fetch_add(1, Ordering::Relaxed);
    }
    pub fn security_report_received(&self) {
        self.security_reports.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP clawy_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE clawy_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((method, route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "clawy_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape_label(method),
                    escape_label(route)
                );
            }
        }
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "clawy_api_key_auth_failures_total",
                "Requests with an invalid, revoked or expired API key (this process).",
                &self.api_key_auth_failures,
            ),
            (
                "clawy_throttled_total",
                "Requests answered 429 by the API (rate limits, AUTH-5; this process).",
                &self.throttled,
            ),
            (
                "clawy_csrf_rejections_total",
                "Cookie-authenticated API changes refused by CSRF/origin checks (this process).",
                &self.csrf_rejections,
            ),
            (
                "clawy_security_reports_total",
                "Vulnerability reports received through the API (this process).",
                &self.security_reports,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware counting every response by matched route (applied with `Router::layer`, so
/// the matched path is known; unmatched requests count as `unmatched`).
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    state
        .metrics
        .record_request(&method, &route, resp.status().as_u16());
    resp
}

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.core.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok".into(),
                database: "ok".into(),
            }),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = ?err, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Health {
                    status: "unavailable".into(),
                    database: "unreachable".into(),
                }),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: operators (session, or an operator's admin key) and loopback only.
pub async fn metrics(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    uri: Uri,
    headers: axum::http::HeaderMap,
    caller: MaybeCaller,
) -> Result<Response, ApiError> {
    let operator = caller
        .0
        .as_ref()
        .is_some_and(|c| c.user.is_operator && c.tier.allows(Tier::Admin));
    // A request forwarded by a reverse proxy on this host (Caddy) also comes from
    // loopback; it is local only if nothing says it was forwarded.
    let forwarded = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    let local = addr.is_loopback() && !forwarded;
    if !(operator || local) {
        // Exactly the answer for a path that does not exist.
        return Ok(crate::app::not_found_for(&uri));
    }
    let mut text = state.metrics.render();
    text.push_str(&audit_counters(&state).await);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// Account events counted from the append-only audit log, so they are totals across
/// restarts and replicas and need no instrumentation in the page handlers.
async fn audit_counters(state: &AppState) -> String {
    use sqlx::Row;
    const TRACKED: &[(&str, &str, &str)] = &[
        (
            "clawy_logins_total",
            "login_ok",
            "Successful password logins.",
        ),
        (
            "clawy_login_failures_total",
            "login_failed",
            "Failed password logins.",
        ),
        (
            "clawy_login_throttled_total",
            "login_throttled",
            "Logins refused by throttling (AUTH-5).",
        ),
        (
            "clawy_account_locks_total",
            "account_locked",
            "Soft account locks started (AUTH-5).",
        ),
    ];
    let rows = sqlx::query(
        "SELECT action, COUNT(*) AS n FROM audit_events \
         WHERE action IN ('login_ok', 'login_failed', 'login_throttled', 'account_locked') \
         GROUP BY action",
    )
    .fetch_all(state.core.store().pool())
    .await;
    let counts: BTreeMap<String, i64> = match rows {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.try_get::<String, _>("action").ok()?,
                    r.try_get::<i64, _>("n").ok()?,
                ))
            })
            .collect(),
        Err(err) => {
            tracing::warn!(error = ?err, "metrics: cannot count audit events");
            return String::new();
        }
    };
    let mut out = String::new();
    for (name, action, help) in TRACKED {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", counts.get(*action).copied().unwrap_or(0));
    }
    out
}
