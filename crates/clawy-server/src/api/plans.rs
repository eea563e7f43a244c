//! `/api/v1/plans` (read) and `/api/v1/admin/plans` (operators): the VM sizes offered.

use crate::auth::{Authed, Operator, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawy_core::plans::{Plan, PlanSpec};
use clawy_proto::api::{self as wire, CreatePlan, ErrorBody, PlanList, UpdatePlan};

pub(crate) fn to_wire(p: Plan, default_plan: &str) -> wire::Plan {
    wire::Plan {
        is_default: p.name == default_plan,
        name: p.name,
        vcpus: p.vcpus,
        memory_mib: p.memory_mib,
        disk_gib: p.disk_gib,
    }
}

/// The plans instances can be created with, smallest first.
#[utoipa::path(
    get, path = "/api/v1/plans", tag = "instances",
    params(PageQuery),
    responses((status = 200, body = PlanList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Authed<Read>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<PlanList>, ApiError> {
    let default_plan = state.core.config().default_plan.clone();
    let plans = state.core.plans().list().await?;
    let (plans, next_after) =
        q.page_of(plans, |p| p.name.clone(), |p| to_wire(p, &default_plan))?;
    Ok(ApiJson(PlanList { plans, next_after }))
}

/// Adds a plan (operators only; others get 404).
#[utoipa::path(
    post, path = "/api/v1/admin/plans", tag = "operator",
    request_body = CreatePlan,
    responses(
        (status = 201, body = wire::Plan),
        (status = 404, description = "Not an operator", body = ErrorBody),
        (status = 409, description = "A plan with this name exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(req): ApiJson<CreatePlan>,
) -> Result<(StatusCode, ApiJson<wire::Plan>), ApiError> {
    let plan = state
        .core
        .plans()
        .create(
            &super::operator_audit(&op),
            PlanSpec {
                name: req.name,
                vcpus: req.vcpus,
                memory_mib: req.memory_mib,
                disk_gib: req.disk_gib,
            },
        )
        .await?;
    let default_plan = state.core.config().default_plan.clone();
    Ok((StatusCode::CREATED, ApiJson(to_wire(plan, &default_plan))))
}

/// Changes a plan; fields left out keep their value. Existing instances keep the size
/// they were created with.
#[utoipa::path(
    patch, path = "/api/v1/admin/plans/{id}", tag = "operator",
    params(("id" = String, Path, description = "Plan name (or id)")),
    request_body = UpdatePlan,
    responses(
        (status = 200, body = wire::Plan),
        (status = 404, description = "No such plan, or not an operator", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    op: Operator,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdatePlan>,
) -> Result<ApiJson<wire::Plan>, ApiError> {
    let plans = state.core.plans();
    let current = plans.get(&name).await?;
    let spec = PlanSpec {
        name: req.name.unwrap_or(current.name),
        vcpus: req.vcpus.unwrap_or(current.vcpus),
        memory_mib: req.memory_mib.unwrap_or(current.memory_mib),
        disk_gib: req.disk_gib.unwrap_or(current.disk_gib),
    };
    let plan = plans
        .update(&super::operator_audit(&op), &current.id, spec)
        .await?;
    let default_plan = state.core.config().default_plan.clone();
    Ok(ApiJson(to_wire(plan, &default_plan)))
}
