//! `/api/v1/regions`: where instances can be placed (DATA-2: only the operator's
//! allowed countries, and only those with an enabled host).

use crate::auth::{Authed, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::State;
use clawy_proto::api::{self as wire, ErrorBody, RegionList};

pub(crate) fn to_wire(r: clawy_core::placement::Region) -> wire::Region {
    wire::Region {
        code: r.code,
        hosts: r.hosts,
        has_capacity: r.has_capacity,
        is_default: r.is_default,
    }
}

/// The regions instances can be created in, the default first.
#[utoipa::path(
    get, path = "/api/v1/regions", tag = "instances",
    params(PageQuery),
    responses((status = 200, body = RegionList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Authed<Read>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<RegionList>, ApiError> {
    let regions = state.core.regions().list().await?;
    let (regions, next_after) = q.page_of(regions, |r| r.code.clone(), to_wire)?;
    Ok(ApiJson(RegionList {
        regions,
        next_after,
    }))
}
