//! The one place where failures become HTTP responses.
//!
//! Every domain error (anything implementing [`clawy_core::error::DomainError`]) and every
//! request rejection (bad JSON, wrong content type, body too large, bad query string)
//! becomes an [`ApiError`], rendered as `{"error":{"code":"…","message":"…"}}`. A 500
//! carries a generic message; the detail goes to the log only (and never a secret: domain
//! errors keep secrets out of their `Debug` output).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clawy_core::error::{DomainError, ErrorKind};
use clawy_proto::api::{ErrorBody, ErrorDetail};
use std::borrow::Cow;
use std::time::Duration;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    field: Option<&'static str>,
    retry_after: Option<Duration>,
    /// Logged at `error` level for 5xx; never sent to the client.
    detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            field: None,
            retry_after: None,
            detail: None,
        }
    }

    /// Missing or bad credentials (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Authenticated but not allowed (403).
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// Not found — also the answer for another user's object, so existence never leaks.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 for a request that parsed but has an unacceptable value in `field`.
    pub fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        e.field = Some(field);
        e
    }

    /// AUTH-5: too many attempts (429 with `Retry-After`).
    pub fn throttled(retry_after: Duration) -> Self {
        let secs = retry_after.as_secs().max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("Too many attempts from your address. Try again in {secs} seconds."),
        );
        e.retry_after = Some(Duration::from_secs(secs));
        e
    }

    /// A bug or infrastructure failure: generic body, `detail` only in the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side. Please try again; if it keeps happening, contact the operator.",
        );
        e.detail = Some(detail.into());
        e
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The JSON body this error renders as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.map(str::to_owned),
            },
        }
    }
}

/// Every domain error maps here, by its kind — the only status mapping in the server.
impl<E: DomainError> From<E> for ApiError {
    fn from(err: E) -> Self {
        let (status, field, retry_after) = match err.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, None, None),
            ErrorKind::Invalid { field } => (StatusCode::UNPROCESSABLE_ENTITY, Some(field), None),
            ErrorKind::Conflict => (StatusCode::CONFLICT, None, None),
            ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, None, None),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, None, None),
            ErrorKind::Throttled { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                None,
                Some(Duration::from_secs(retry_after.as_secs().max(1))),
            ),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None, None),
            ErrorKind::Internal => return ApiError::internal(format!("{err:?}")),
        };
        ApiError {
            status,
            code: Cow::Borrowed(err.code()),
            message: err.to_string(),
            field,
            retry_after,
            detail: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            if let Some(detail) = &self.detail {
                tracing::error!(code = %self.code, %detail, "request failed");
            }
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"clawy\""),
            );
        }
        resp
    }
}

impl ApiError {
    /// Bad JSON bodies get a message a person can act on, never axum's plain-text
    /// default. (Not a `From` impl: `ApiError` already converts from every
    /// `DomainError`, and the compiler cannot rule out that axum's rejection becomes one.)
    pub fn from_json_rejection(rej: JsonRejection) -> Self {
        match rej {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the request body as JSON with the header `Content-Type: application/json`.",
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("The request body is not valid JSON: {}", e.body_detail()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!(
                    "The request body does not have the expected fields: {}",
                    e.body_detail()
                ),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                payload_too_large()
            }
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("The request body could not be read: {}", other.body_text()),
            ),
        }
    }

    pub fn from_query_rejection(rej: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("The query string is not valid: {}", rej.body_detail()),
        )
    }

    /// The JSON error for a bare status produced outside our handlers (axum's 404 and
    /// 405, the body limit's 413, the timeout's 503): `middleware::json_errors` turns
    /// such responses under `/api/` into this.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => ApiError::not_found(
                "No such API route. See /api/v1/openapi.json for the routes that exist.",
            ),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                status,
                "method_not_allowed",
                "This route does not accept this HTTP method; the Allow header lists the ones it does.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::new(
                status,
                "timeout",
                "The request took too long and was stopped. Please try again.",
            ),
            s if s.is_server_error() => {
                ApiError::internal(format!("bare {s} response on an API route"))
            }
            s => ApiError::new(
                s,
                "bad_request",
                format!(
                    "The request was refused ({}).",
                    s.canonical_reason().unwrap_or("client error")
                ),
            ),
        }
    }
}

pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "The request body is larger than the limit of {} KiB.",
            crate::middleware::BODY_LIMIT_BYTES / 1024
        ),
    )
}

/// serde's message after the "Failed to deserialize…" prefix axum adds.
trait BodyDetail {
    fn body_detail(&self) -> String;
}

impl<T: std::fmt::Display> BodyDetail for T {
    fn body_detail(&self) -> String {
        let text = self.to_string();
        match text.split_once(": ") {
            Some((_, rest)) => rest.to_owned(),
            None => text,
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError::from_json_rejection(rej)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::from_query_rejection(rej)),
        }
    }
}
