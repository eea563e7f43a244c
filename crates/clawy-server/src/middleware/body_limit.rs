//! Request body limit. Two layers on purpose: axum's `DefaultBodyLimit` makes our body
//! extractors reject long bodies (JSON 413 via `ApiError`), and tower-http's
//! `RequestBodyLimitLayer` refuses a too-large `Content-Length` before any handler runs
//! (its plain 413 is turned into the JSON shape by `json_errors` for `/api/*`).

use super::BODY_LIMIT_BYTES;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::limit::RequestBodyLimitLayer;

pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
}
