//! Tower layers applied to every response, one file per concern.

pub mod body_limit;
pub mod hsts;
pub mod json_errors;
pub mod security_headers;
pub mod timeout;
pub mod trace;

/// Largest request body accepted (API JSON and dashboard forms alike).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
