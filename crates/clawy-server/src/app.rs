//! The axum application: routes, fallbacks and the layer stack, and `serve`.

use crate::error::ApiError;
use crate::middleware::{body_limit, hsts, json_errors, security_headers, timeout, trace};
use crate::state::AppState;
use crate::{api, metrics};
use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clawy_core::Core;
use std::net::SocketAddr;
use std::sync::Arc;

/// The whole application for a core, state applied.
pub async fn build_app(core: Arc<Core>) -> Router {
    router(AppState::new(core))
}

/// The application for an existing state (tests keep the state to inspect metrics).
pub fn router(state: AppState) -> Router {
    let routes: Router<AppState> = Router::new()
        .nest("/api/v1", api::router())
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .fallback(fallback);
    let routes = with_web(routes);

    // Route-level layers first (they see the matched route), outermost last.
    let app = routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        metrics::count_requests,
    ));
    let app = trace::apply(app);
    let app = body_limit::apply(app);
    let app = timeout::apply(app, state.http.request_timeout);
    // Outside the limit and timeout layers, so their bare 413/503 become JSON too.
    let app = app.layer(axum::middleware::from_fn(json_errors::json_errors_for_api));
    let app = body_limit::close_connection_after_413(app);
    // Outermost: every response, including timeouts and rejections, carries the headers.
    let app = security_headers::apply(app);
    let app = hsts::apply(app, state.http.https);
    app.with_state(state)
}

fn with_web(routes: Router<AppState>) -> Router<AppState> {
    routes.merge(crate::web::router())
}

/// Unknown routes: JSON under `/api/`, an HTML page elsewhere.
async fn fallback(uri: Uri) -> Response {
    not_found_for(&uri)
}

/// The 404 for a path, in the shape its area uses; also used to hide operator-only
/// routes from everyone else.
pub fn not_found_for(uri: &Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::from_status(StatusCode::NOT_FOUND).into_response();
    }
    // The dashboard's own 404 page, in the product's look.
    crate::web::render_not_found()
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn serve(core: Arc<Core>) -> anyhow::Result<()> {
    let listen = core.config().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, base_url = %core.config().base_url, "clawy server listening");
    let app = build_app(core.clone()).await;
    serve_with(listener, app, shutdown_signal()).await?;
    Ok(())
}

/// Serves `app` on `listener` (with client addresses) until `shutdown` resolves.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Keeps `ApiError` in this module's vocabulary for handlers that return it.
pub type ApiResult<T> = Result<T, ApiError>;
