//! Request body limit. Two layers on purpose: axum's `DefaultBodyLimit` makes our body
//! extractors reject long bodies (JSON 413 via `ApiError`), and tower-http's
//! `RequestBodyLimitLayer` refuses a too-large `Content-Length` before any handler runs
//! (its plain 413 is turned into the JSON shape by `json_errors` for `/api/*`).

use super::BODY_LIMIT_BYTES;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_http::limit::RequestBodyLimitLayer;

pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
}

/// Applied outside `json_errors` (which rebuilds bare 413s as JSON), so every 413
/// leaves with `Connection: close`.
pub fn close_connection_after_413<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
) -> Router<S> {
    router.layer(axum::middleware::map_response(close_after_413))
}

/// The rest of a refused body is still on the wire, so the connection cannot carry
/// another request: say so, or a client reusing it races the close.
async fn close_after_413(mut resp: Response) -> Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
