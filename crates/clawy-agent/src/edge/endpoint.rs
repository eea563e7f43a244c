//! The agent's loopback HTTP endpoint for its Caddy:
//! - `GET /ask?domain=<sni>`: Caddy's on-demand TLS gate (DATA-1). 200 only for
//!   the exact lowercase hostname of an instance defined on this host; 403
//!   otherwise; 400 without `domain`. One hash lookup: the same cost at 10 and at
//!   10,000 instances.
//! - `/edge/error`: Caddy's error route and fallback route proxy here with the
//!   original `Host` and the reason in `X-Clawy-Edge-Status`; the page and status
//!   depend on the instance: unknown → 404, stopped → 503 "this instance is
//!   stopped", running but not answering → 502.
//!
//! Only loopback may reach it (settings validation refuses other addresses).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use tokio::sync::watch;

use super::caddy_config::{ASK_PATH, EDGE_STATUS_HEADER, ERROR_PATH};
use super::index::{EdgeIndex, HostStatus};

#[derive(Clone)]
struct EndpointState {
    index: Arc<EdgeIndex>,
}

/// The router (tests mount it on their own listener).
pub fn router(index: Arc<EdgeIndex>) -> Router {
    Router::new()
        .route(ASK_PATH, get(ask))
        .route(ERROR_PATH, any(error_page))
        .fallback(any(not_found))
        .with_state(EndpointState { index })
}

/// Binds `addr` and serves until `shutdown` turns true. Returns the bound
/// address (port 0 picks one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    index: Arc<EdgeIndex>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(index);
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "edge endpoint stopped");
        }
    });
    Ok((local, task))
}

#[derive(Deserialize)]
struct AskQuery {
    domain: Option<String>,
}

async fn ask(State(s): State<EndpointState>, Query(q): Query<AskQuery>) -> StatusCode {
    match q.domain {
        None => StatusCode::BAD_REQUEST,
        Some(d) if s.index.approves(&d) => StatusCode::OK,
        Some(_) => StatusCode::FORBIDDEN,
    }
}

/// What went wrong, as Caddy told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NoRoute,
    Status(u16),
    Unknown,
}

fn reason(headers: &HeaderMap) -> Reason {
    match headers
        .get(EDGE_STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some("no-route") => Reason::NoRoute,
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|c| (400..600).contains(c))
            .map(Reason::Status)
            .unwrap_or(Reason::Unknown),
        None => Reason::Unknown,
    }
}

/// The `Host` without port, lowercased (Caddy's host matching ignores case).
fn request_host(headers: &HeaderMap) -> String {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
        _ => raw,
    };
    host.to_ascii_lowercase()
}

async fn error_page(State(s): State<EndpointState>, headers: HeaderMap) -> Response {
    let why = reason(&headers);
    let host = request_host(&headers);
    match (s.index.host_status(&host), why) {
        (HostStatus::Unknown, _) | (_, Reason::NoRoute) => page(
            StatusCode::NOT_FOUND,
            "No instance here",
            "There is no Clawy instance at this address. Check the link you followed.",
        ),
        (HostStatus::Stopped, _) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "This instance is stopped",
            "Its owner has stopped this Clawy instance. It answers again once it is started.",
        ),
        (HostStatus::Running(_), Reason::Status(code)) if code < 500 => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            page(
                status,
                "Request refused",
                "The edge could not handle this request.",
            )
        }
        (HostStatus::Running(_), _) => page(
            StatusCode::BAD_GATEWAY,
            "This instance is not answering",
            "The instance is running but its gateway does not answer yet. If it was just started, try again in a minute.",
        ),
    }
}

async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "Nothing here.")
}

/// A small self-contained page: fixed texts only (the `Host` is never echoed),
/// no scripts, nothing cached.
fn page(status: StatusCode, title: &'static str, text: &'static str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Clawy</title><style>\
body{{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:flex;\
min-height:100vh;align-items:center;justify-content:center;margin:0}}\
main{{max-width:32rem;padding:2rem;border:1px solid #334155;border-radius:12px;background:#1e293b}}\
h1{{margin-top:0;font-size:1.4rem}}.brand{{color:#f97316;font-weight:700;letter-spacing:.04em}}\
</style></head><body><main><p class=\"brand\">Clawy</p><h1>{title}</h1><p>{text}</p>\
<p><small>HTTP {code}</small></p></main></body></html>",
        code = status.as_u16()
    );
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::edge::index::EdgeState;
    use axum::body::Body;
    use axum::http::Request;
    use clawy_proto::names::DnsName;
    use std::net::Ipv4Addr;
    use tower::ServiceExt;

    fn app() -> Router {
        let n = |s: &str| DnsName::parse(s, "t", 1).unwrap();
        let i = Arc::new(EdgeIndex::new(n("claws.example.com")));
        i.upsert(
            &n("run.claws.example.com"),
            EdgeState::Running(Ipv4Addr::new(10, 0, 0, 2)),
        )
        .unwrap();
        i.upsert(&n("stop.claws.example.com"), EdgeState::Stopped)
            .unwrap();
        router(i)
    }

    async fn call(uri: &str, host: &str, why: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri).header("host", host);
        if let Some(w) = why {
            req = req.header(EDGE_STATUS_HEADER, w);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// DATA-1: the ask endpoint's answers.
    #[tokio::test]
    async fn data_1_ask_endpoint() {
        assert_eq!(
            call("/ask?domain=run.claws.example.com", "x", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call("/ask?domain=stop.claws.example.com", "x", None)
                .await
                .0,
            StatusCode::OK
        );
        for refused in [
            "RUN.claws.example.com",
            "10.0.0.2",
            "",
            "other.claws.example.com",
            "run.claws.example.com.evil",
        ] {
            let uri = format!(
                "/ask?domain={}",
                url::form_urlencoded::byte_serialize(refused.as_bytes()).collect::<String>()
            );
            assert_eq!(
                call(&uri, "x", None).await.0,
                StatusCode::FORBIDDEN,
                "{refused}"
            );
        }
        assert_eq!(call("/ask", "x", None).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn error_pages_depend_on_the_instance() {
        let (s, body) = call(ERROR_PATH, "stop.claws.example.com", Some("502")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("This instance is stopped"));
        let (s, _) = call(ERROR_PATH, "STOP.claws.example.com:443", Some("502")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let (s, body) = call(ERROR_PATH, "gone.claws.example.com", Some("502")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(!body.contains("gone.claws"), "the Host is never echoed");
        let (s, _) = call(ERROR_PATH, "run.claws.example.com", Some("502")).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        let (s, _) = call(ERROR_PATH, "run.claws.example.com", Some("no-route")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(ERROR_PATH, "<script>", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
