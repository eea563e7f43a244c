//! Under `/api/`, every error response is JSON in the one shape
//! `{"error":{"code":"…","message":"…"}}` — also those produced by layers and by axum
//! itself (405, 413 from the body limit, 503 from the timeout), which are plain text.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn json_errors_for_api(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let resp = next.run(req).await;
    if !is_api || !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let status = resp.status();
    let mut converted = ApiError::from_status(status).into_response();
    // Keep headers that matter to the client (Allow on 405, Retry-After, …).
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = resp.headers().get(&name) {
            converted.headers_mut().insert(name, v.clone());
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::time::Duration;
    use tower::ServiceExt;

    fn app() -> Router {
        let r = Router::new()
            .route("/api/v1/slow", get(std::future::pending::<&'static str>))
            .route("/slow", get(std::future::pending::<&'static str>));
        let r = crate::middleware::timeout::apply(r, Duration::from_millis(50));
        r.layer(axum::middleware::from_fn(json_errors_for_api))
    }

    async fn call(path: &str) -> (StatusCode, String, String) {
        let resp = app()
            .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn api_timeout_becomes_json_503() {
        let (status, ct, body) = call("/api/v1/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(ct.starts_with("application/json"), "{ct}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "timeout");
    }

    #[tokio::test]
    async fn page_timeout_is_left_alone() {
        let (status, ct, _) = call("/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!ct.starts_with("application/json"));
    }
}
