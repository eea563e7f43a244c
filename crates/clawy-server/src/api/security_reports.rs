//! `POST /api/v1/security-reports` (REPORT-1): anyone may report, no account needed;
//! rate-limited per client address in core (429 + Retry-After).

use crate::auth::ClientAddr;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use clawy_core::{Actor, ClientInfo};
use clawy_proto::api::{CreateSecurityReport, ErrorBody, SecurityReportReceipt};

/// Submits a vulnerability report; the answer carries the tracking id.
#[utoipa::path(
    post, path = "/api/v1/security-reports", tag = "security",
    request_body = CreateSecurityReport,
    responses(
        (status = 201, body = SecurityReportReceipt),
        (status = 422, description = "Missing title or details, or a bad contact address", body = ErrorBody),
        (status = 429, description = "Too many reports from this address", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateSecurityReport>,
) -> Result<(StatusCode, ApiJson<SecurityReportReceipt>), ApiError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let caller = Actor::anonymous(ClientInfo::new(addr, user_agent));
    let report = state
        .core
        .reports()
        .create(req.contact.as_deref(), &req.title, &req.details, &caller)
        .await
        .map_err(|e| {
            let e = ApiError::from(e);
            if e.status() == StatusCode::TOO_MANY_REQUESTS {
                state.metrics.throttled();
            }
            e
        })?;
    state.metrics.security_report_received();
    Ok((
        StatusCode::CREATED,
        ApiJson(SecurityReportReceipt {
            message: format!(
                "Thank you. Your report was received; quote {} in any follow-up.",
                report.tracking_id
            ),
            tracking_id: report.tracking_id,
        }),
    ))
}
