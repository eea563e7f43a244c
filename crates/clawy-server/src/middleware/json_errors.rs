//! Under `/api/`, every error response is JSON in the one shape
//! `{"error":{"code":"…","message":"…"}}` — also those produced by layers and by axum
//! itself (405, 413 from the body limit, 503 from the timeout), which are plain text.

use crate::error::{ApiError, payload_too_large};
use axum::extract::Request;
use axum::http::{StatusCode, header};
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
    let mut converted = error_for_status(status).into_response();
    // Keep headers that matter to the client (Allow on 405, Retry-After, …).
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = resp.headers().get(&name) {
            converted.headers_mut().insert(name, v.clone());
        }
    }
    converted
}

/// The JSON error for a bare status produced outside our handlers.
pub fn error_for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found(
            "No such API route. See /api/v1/openapi.json for the routes that exist.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "This route does not accept this HTTP method; the Allow header lists the ones it does.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::new(
            status,
            "timeout",
            "The request took too long and was stopped. Please try again.",
        ),
        s if s.is_server_error() => {
            ApiError::internal(format!("bare {s} response on an API route"))
        }
        s => ApiError::new(
            s,
            "bad_request",
            format!(
                "The request was refused ({}).",
                s.canonical_reason().unwrap_or("client error")
            ),
        ),
    }
}
