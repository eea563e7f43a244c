//! Error plumbing shared by every domain module.
//!
//! Each domain module has its own `thiserror` enum. They all implement [`DomainError`],
//! which gives a stable machine `code()` (used in JSON error bodies) and a coarse
//! [`ErrorKind`] that the HTTP layer maps to a status in one place. The `Display` text of
//! an error is a message a person can act on; for [`ErrorKind::Internal`] it is generic,
//! the detail is only in `Debug`/`source()` for the logs (never a secret).

use std::time::Duration;

/// What kind of failure this is, for mapping to HTTP statuses in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist, or belongs to someone else (never "forbidden": that
    /// would leak existence). HTTP 404.
    NotFound,
    /// The input is invalid; `field` names the offending input. HTTP 400/422.
    Invalid { field: &'static str },
    /// The request conflicts with existing state (duplicate). HTTP 409.
    Conflict,
    /// Bad or missing credentials. HTTP 401.
    Unauthorized,
    /// Authenticated but not allowed (e.g. tier too low, not an operator). HTTP 403.
    Forbidden,
    /// Too many attempts; try again after `retry_after`. HTTP 429 with `Retry-After`.
    Throttled { retry_after: Duration },
    /// A dependency (mail server) is not available. HTTP 503.
    Unavailable,
    /// A bug or an infrastructure failure. HTTP 500 with a generic body.
    Internal,
}

/// Implemented by every domain error enum.
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// Stable machine-readable code, e.g. `"password_too_short"`.
    fn code(&self) -> &'static str;
    /// Coarse category for the HTTP mapping.
    fn kind(&self) -> ErrorKind;
}

/// An infrastructure failure (database, file system, crypto). Its `Display` is generic
/// on purpose; log it with `{:?}` to see the cause.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("internal error (database)")]
    Database(#[from] sqlx::Error),
    #[error("internal error (migrations)")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("internal error (file system)")]
    Io(#[from] std::io::Error),
    #[error("internal error (password hashing)")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("internal error (task)")]
    Join(#[from] tokio::task::JoinError),
    #[error("internal error: {0}")]
    Other(String),
}

impl InternalError {
    pub fn other(msg: impl Into<String>) -> Self {
        InternalError::Other(msg.into())
    }
}

impl DomainError for InternalError {
    fn code(&self) -> &'static str {
        "internal"
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Lets a module error enum with an `Internal(InternalError)` variant be built with `?`
/// from sqlx and I/O errors.
macro_rules! internal_from {
    ($ty:ty) => {
        impl From<sqlx::Error> for $ty {
            fn from(e: sqlx::Error) -> Self {
                <$ty>::Internal($crate::error::InternalError::Database(e))
            }
        }
        impl From<std::io::Error> for $ty {
            fn from(e: std::io::Error) -> Self {
                <$ty>::Internal($crate::error::InternalError::Io(e))
            }
        }
        impl From<tokio::task::JoinError> for $ty {
            fn from(e: tokio::task::JoinError) -> Self {
                <$ty>::Internal($crate::error::InternalError::Join(e))
            }
        }
        impl From<bcrypt::BcryptError> for $ty {
            fn from(e: bcrypt::BcryptError) -> Self {
                <$ty>::Internal($crate::error::InternalError::Bcrypt(e))
            }
        }
    };
}
pub(crate) use internal_from;

/// Any domain error, boxed, for callers that do not care which module failed
/// (start-up code, the admin CLI).
#[derive(Debug, thiserror::Error)]
#[error("{inner}")]
pub struct CoreError {
    code: &'static str,
    kind: ErrorKind,
    #[source]
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl CoreError {
    pub fn new<E: DomainError>(e: E) -> Self {
        CoreError {
            code: e.code(),
            kind: e.kind(),
            inner: Box::new(e),
        }
    }
}

impl DomainError for CoreError {
    fn code(&self) -> &'static str {
        self.code
    }
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Milliseconds → a `Duration` rounded up to whole seconds (for `Retry-After`), at least 1 s.
pub fn retry_after_from_ms(ms: i64) -> Duration {
    let secs = (ms.max(1) + 999) / 1000;
    Duration::from_secs(secs.max(1) as u64)
}

/// The error and its causes on one line, each cause once (`a: b: c`). For local
/// command-line output only (`clawy admin`, `clawy up`): HTTP answers never carry
/// causes.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}
