//! The agent's one error type and its mapping to HTTP, in one place.
//!
//! Status codes: `unauthorized` 401, `not_found` 404, `conflict` 409,
//! `capacity_exceeded` 409 (the request conflicts with what the host holds; a
//! retry elsewhere may succeed), `invalid_spec` 422 with `field`, `bad_request` 400,
//! `payload_too_large` 413, `timeout` 504, `internal` 500 with a generic message
//! (the detail goes to the log only).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clawy_proto::agent::{ErrorBody, ErrorCode, ErrorDetail};

use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("no VM with id `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("not enough {resource} on this host: {message}")]
    CapacityExceeded {
        resource: &'static str,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the operation timed out")]
    Timeout,
    /// Retryable: a hypervisor lock, a lock timeout, or a task still running when
    /// the request's budget ran out. The caller repeats the same call later.
    #[error("busy: {0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AgentError::Internal(e.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::Unauthorized => ErrorCode::Unauthorized,
            AgentError::NotFound(_) => ErrorCode::NotFound,
            AgentError::Conflict(_) => ErrorCode::Conflict,
            AgentError::InvalidSpec(_) => ErrorCode::InvalidSpec,
            AgentError::CapacityExceeded { .. } => ErrorCode::CapacityExceeded,
            AgentError::BadRequest(_) => ErrorCode::BadRequest,
            AgentError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            AgentError::Timeout => ErrorCode::Timeout,
            AgentError::Busy(_) => ErrorCode::Busy,
            AgentError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::Unauthorized => StatusCode::UNAUTHORIZED,
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Conflict(_) | AgentError::CapacityExceeded { .. } => StatusCode::CONFLICT,
            AgentError::InvalidSpec(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AgentError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            AgentError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (message, field) = match self {
            AgentError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal error; see the agent's log".to_string(), None)
            }
            AgentError::InvalidSpec(e) => (e.message.clone(), Some(e.field.clone())),
            AgentError::CapacityExceeded { resource, .. } => {
                (self.to_string(), Some((*resource).to_string()))
            }
            other => (other.to_string(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                field,
            },
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        if matches!(self, AgentError::PayloadTooLarge) {
            // The rest of the refused body is still on the wire: the connection cannot
            // carry another request, so tell the client not to reuse it (otherwise its
            // next request races the close and fails with a transport error).
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if matches!(self, AgentError::Busy(_)) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        if matches!(self, AgentError::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn internal_detail_is_not_sent() {
        let e = AgentError::Internal("/secret/path failed".into());
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.body().error.message.contains("/secret/path"));
    }

    #[test]
    fn invalid_spec_names_field() {
        let e = AgentError::InvalidSpec(SpecError {
            field: "vcpus".into(),
            message: "bad".into(),
        });
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body().error.field.as_deref(), Some("vcpus"));
    }

    #[test]
    fn busy_is_retryable_503() {
        let resp = AgentError::Busy("VM is locked (clone)".into()).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers().get(axum::http::header::RETRY_AFTER).unwrap(),
            "5"
        );
    }

    #[test]
    fn payload_too_large_closes_the_connection() {
        let resp = AgentError::PayloadTooLarge.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            resp.headers().get(axum::http::header::CONNECTION).unwrap(),
            "close"
        );
    }
}
