//! `GET /api/v1/audit`: the account's own events, newest first (read tier).

use crate::auth::{Authed, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::state::AppState;
use axum::extract::State;
use clawy_proto::api::{AuditPage, ErrorBody};
use serde::Deserialize;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many events (1–500, default 50).
    pub limit: Option<u32>,
    /// Only events older than this event id (the `next_before` of the previous page).
    pub before: Option<i64>,
}

/// The account's audit log.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "account",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "Bad query string", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Read>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit",
            format!("`limit` must be between 1 and {MAX_LIMIT}."),
        ));
    }
    let events = state
        .core
        .audit()
        .list_for_user(&caller.user.id, limit, q.before)
        .await?;
    // A full page may have more behind it; the client passes the last id as `before`.
    let next_before = if events.len() == limit as usize {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(ApiJson(AuditPage {
        events: events
            .into_iter()
            .map(crate::ops::instances::event_to_wire)
            .collect(),
        next_before,
    }))
}
