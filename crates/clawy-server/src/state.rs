//! What every handler can reach: the domain core and the HTTP layer's own settings.

use crate::metrics::Metrics;
use clawy_core::Core;
use std::sync::Arc;
use std::time::Duration;

/// Cheap to clone: everything is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub metrics: Arc<Metrics>,
    pub http: Arc<HttpSettings>,
}

/// Derived once from the config at start-up.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `scheme://host[:port]` of `base_url`: the only origin allowed to send
    /// cookie-authenticated state changes (AUTH-3).
    pub origin: String,
    /// `base_url` is https: send HSTS.
    pub https: bool,
    pub request_timeout: Duration,
}

impl AppState {
    pub fn new(core: Arc<Core>) -> AppState {
        let config = core.config();
        let http = HttpSettings {
            origin: crate::auth::origin::origin_of(&config.base_url),
            https: config.is_tls(),
            request_timeout: crate::middleware::timeout::REQUEST_TIMEOUT,
        };
        AppState {
            core,
            metrics: Arc::new(Metrics::default()),
            http: Arc::new(http),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}
