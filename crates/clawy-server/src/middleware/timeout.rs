//! Request timeout: a handler that takes longer is cut off with 503 (JSON for `/api/*`,
//! via `json_errors`), so a slow dependency cannot pile up connections.

use axum::Router;
use axum::http::StatusCode;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, timeout: Duration) -> Router<S> {
    router.layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        timeout,
    ))
}
