//! The one place where failures of page requests become responses, and where domain
//! errors are sorted into "show it on the form" and "show an error page".
//!
//! - [`WebError`] is the only error type page handlers return; its `IntoResponse`
//!   renders every error page (sign-in redirect, 403/404/429/500 pages).
//! - `From<E: DomainError>` is the only mapping from domain errors to pages.
//! - [`form_status`] says which domain errors a form shows next to its fields, and
//!   with which status; handlers only say which field an error belongs to.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use clawy_core::error::{DomainError, ErrorKind};

use super::render::{self, render_csrf_failed, render_not_found, render_too_many_requests};

/// Why a page request did not produce its page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not signed in (or the session ended): go to the login page, then back to `next`.
    #[error("sign-in required")]
    SignInRequired { next: String },
    /// AUTH-3: missing/wrong CSRF token or a cross-site origin.
    #[error("CSRF or origin check failed")]
    CsrfFailed,
    /// Unknown, someone else's, or operator-only for a non-operator (never 403: that
    /// would reveal existence).
    #[error("not found")]
    NotFound,
    /// AUTH-5 / REPORT-1 rate limits.
    #[error("too many requests")]
    Throttled { retry_after: Duration },
    /// A request the domain refused, with a message a person can act on (a quota, a
    /// state that does not allow the action, a dependency that is down).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// A bug or infrastructure failure; the detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl<E: DomainError> From<E> for WebError {
    fn from(err: E) -> Self {
        let rejected = |status| WebError::Rejected {
            status,
            message: err.to_string(),
        };
        match err.kind() {
            ErrorKind::NotFound => WebError::NotFound,
            ErrorKind::Throttled { retry_after } => WebError::Throttled { retry_after },
            ErrorKind::Unauthorized => WebError::SignInRequired {
                next: "/".to_owned(),
            },
            ErrorKind::Internal => WebError::Internal(format!("{err:?}")),
            ErrorKind::Invalid { .. } => rejected(StatusCode::UNPROCESSABLE_ENTITY),
            ErrorKind::Conflict => rejected(StatusCode::CONFLICT),
            // Authenticated but not allowed: the person is told why (a quota, a tier).
            // "Not yours" is NotFound in the domain, never Forbidden, so nothing leaks.
            ErrorKind::Forbidden => rejected(StatusCode::FORBIDDEN),
            ErrorKind::Unavailable => rejected(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignInRequired { next } => {
                let target = if next == "/" {
                    "/login".to_owned()
                } else {
                    format!(
                        "/login?next={}",
                        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                    )
                };
                Redirect::to(&target).into_response()
            }
            WebError::CsrfFailed => render_csrf_failed(),
            WebError::NotFound => render_not_found(),
            WebError::Throttled { retry_after } => render_too_many_requests(retry_after.as_secs()),
            WebError::Rejected { status, message } => {
                render::error_page(status, "That did not work", &message, None)
            }
            WebError::Internal(detail) => {
                tracing::error!(%detail, "page failed");
                render::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Please try again; if it keeps happening, contact the operator.",
                    None,
                )
            }
        }
    }
}

pub type WebResult = Result<Response, WebError>;

/// Field name → message, shown next to the field; `_form` is shown above the form.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Status for a re-rendered form whose own checks failed (passwords that differ, a
/// date that does not parse).
pub const INVALID_FORM: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// The domain errors a form shows next to its fields, and the status of that page:
/// invalid input (422), a choice on the form that no longer exists (422), a clash
/// with what exists (409) and a refusal such as a quota (403). `None`: not the
/// person's input — an error page instead.
pub fn form_status(kind: ErrorKind) -> Option<StatusCode> {
    match kind {
        ErrorKind::Invalid { .. } | ErrorKind::NotFound => Some(StatusCode::UNPROCESSABLE_ENTITY),
        ErrorKind::Conflict => Some(StatusCode::CONFLICT),
        ErrorKind::Forbidden => Some(StatusCode::FORBIDDEN),
        ErrorKind::Unauthorized
        | ErrorKind::Throttled { .. }
        | ErrorKind::Unavailable
        | ErrorKind::Internal => None,
    }
}

/// Puts a domain error on the form field `field` (`_form`: above the form) with
/// `message`, or turns it into an error page ([`form_status`] decides).
pub fn on_form<E: DomainError>(
    err: E,
    field: &'static str,
    message: String,
    errors: &mut FieldErrors,
) -> Result<StatusCode, WebError> {
    match form_status(err.kind()) {
        Some(status) => {
            errors.insert(field, message);
            Ok(status)
        }
        None => Err(err.into()),
    }
}

/// [`on_form`] for the common case: the domain's invalid field renamed through
/// `field_map` (domain field → form field); a clash goes on the first mapped field;
/// anything else above the form.
pub fn field_error<E: DomainError>(
    err: E,
    field_map: &[(&'static str, &'static str)],
    errors: &mut FieldErrors,
) -> Result<StatusCode, WebError> {
    let field = match err.kind() {
        ErrorKind::Invalid { field } => field_map
            .iter()
            .find(|(from, _)| *from == field)
            .map(|(_, to)| *to)
            .unwrap_or("_form"),
        ErrorKind::Conflict => field_map.first().map(|(_, to)| *to).unwrap_or("_form"),
        _ => "_form",
    };
    let message = err.to_string();
    on_form(err, field, message, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("You have reached your limit of 3 instances. Delete one first.")]
    struct Quota;
    impl DomainError for Quota {
        fn code(&self) -> &'static str {
            "quota_exceeded"
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Forbidden
        }
    }

    /// A refusal is shown with its reason, not disguised as "not found".
    #[test]
    fn forbidden_is_a_403_with_its_message() {
        match WebError::from(Quota) {
            WebError::Rejected { status, message } => {
                assert_eq!(status, StatusCode::FORBIDDEN);
                assert!(message.contains("limit of 3 instances"));
            }
            other => panic!("{other:?}"),
        }
        let mut errors = FieldErrors::new();
        assert_eq!(
            field_error(Quota, &[("name", "name")], &mut errors).ok(),
            Some(StatusCode::FORBIDDEN)
        );
        assert!(errors["_form"].contains("limit of 3"));
    }
}
