//! HSTS, only when the public base URL is https: sent over plain http it would be
//! meaningless, and on a laptop install it would pin `localhost` to https.

use axum::Router;
use axum::http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

pub const HSTS_VALUE: &str = "max-age=63072000; includeSubDomains";

pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    base_url_is_https: bool,
) -> Router<S> {
    if !base_url_is_https {
        return router;
    }
    router.layer(SetResponseHeaderLayer::overriding(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS_VALUE),
    ))
}
