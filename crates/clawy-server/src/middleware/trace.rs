//! One tracing span per request. AUTH-1/AUTH-2: the span records method, the path
//! *without* the query string, and the status — never headers (Authorization, Cookie)
//! and never query strings (which could carry a reset token).

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::Request;
use std::time::Duration;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<_>| {
                // The matched route (`/api/v1/api-keys/{id}`) when there is one, so ids and
                // tokens in paths (`/reset/{token}`) are not logged either.
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_else(|| "unmatched".to_owned());
                tracing::info_span!("request", method = %req.method(), route = %route, status = tracing::field::Empty)
            })
            .on_request(())
            .on_response(|resp: &axum::response::Response, latency: Duration, span: &Span| {
                span.record("status", resp.status().as_u16());
                tracing::info!(latency_ms = latency.as_millis() as u64, status = resp.status().as_u16(), "response");
            })
            .on_body_chunk(())
            .on_eos(())
            .on_failure(()),
    )
}
