//! `GET /api/v1/audit`: the account's own events, newest first (read tier).

use crate::auth::{Authed, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::ops::instances::event_to_wire;
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::State;
use clawy_core::audit::Scope;
use clawy_proto::api::{AuditPage, ErrorBody};

/// The account's audit log, a page at a time (`limit`, `after`).
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "account",
    params(PageQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "Bad query string", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`limit` outside 1–500 or a bad `after`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Read>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    let page = state
        .core
        .audit()
        .page(Scope::User(&caller.user.id), &q.request()?)
        .await?;
    Ok(ApiJson(AuditPage {
        events: page.items.into_iter().map(event_to_wire).collect(),
        next_after: page.next_after,
    }))
}
