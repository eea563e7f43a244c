//! `/api/v1/instances`: the caller's VMs (read to look, manage to change), and
//! `/api/v1/admin/instances` for operators.
//!
//! Lookups are scoped to the caller's account in core: another user's instance is 404,
//! never 403. Lifecycle calls only insert a job and set the desired power; the job
//! runner alone changes `state` (so these answer 202). Every call that changes
//! something writes an instance event with the caller as actor (ACCESS-3).

use crate::auth::{Authed, Manage, Operator, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::ops::instances::{
    event_to_wire, many_to_wire, one_to_wire, parse_range, request, series_to_wire,
};
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use clawy_core::audit::Scope;
use clawy_core::instances::{self as core_instances, ListFilter};
use clawy_core::lifecycle::LifecycleAction;
use clawy_core::page::PageRequest;
use clawy_proto::api::{
    self as wire, AdminInstance, AdminInstancePage, AuditPage, CreateInstance, ErrorBody,
    InstanceList, InstanceMetrics,
};
use serde::Deserialize;
use utoipa::IntoParams;

/// The caller's instances (not deleted), oldest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/instances", tag = "instances",
    params(PageQuery),
    responses((status = 200, body = InstanceList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Read>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<InstanceList>, ApiError> {
    let page = state
        .core
        .instances()
        .page_for_owner(&caller.user.id, &q.request()?)
        .await?;
    Ok(ApiJson(InstanceList {
        instances: many_to_wire(&state.core, &page.items).await?,
        next_after: page.next_after,
    }))
}

/// Creates an instance: placement, IP/port allocation and the provision job in one
/// transaction (ISO-2, DATA-2). The VM is then built in the background.
#[utoipa::path(
    post, path = "/api/v1/instances", tag = "instances",
    request_body = CreateInstance,
    responses(
        (status = 201, body = wire::Instance),
        (status = 401, body = ErrorBody), (status = 403, description = "Tier below manage, or instance quota reached (`quota_exceeded`)", body = ErrorBody),
        (status = 404, description = "Unknown plan or SSH key", body = ErrorBody),
        (status = 409, description = "Name taken (`name_taken`) or no capacity (`no_capacity`: \"no capacity in region DE for plan small\")", body = ErrorBody),
        (status = 422, description = "Invalid name, region not allowed, or a secret in the wrong format (`invalid_secret`); `field` names it, the message never holds the value", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    ApiJson(req): ApiJson<CreateInstance>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    let secrets = owner_secrets(req.telegram_bot_token, req.model_provider, req.model_key)?;
    let (inst, gateway_token) = state
        .core
        .instances()
        .create_with_token(
            &caller.actor(),
            &caller.user.id,
            core_instances::CreateInstance {
                name: req.name,
                plan: req.plan,
                region: req.region,
                ssh_key_ids: req.ssh_key_ids,
                secrets,
            },
        )
        .await?;
    let mut out = one_to_wire(&state.core, &inst).await;
    // DATA-5: the one time the gateway token is shown.
    out.gateway_token = Some(gateway_token.into_inner());
    Ok((StatusCode::CREATED, ApiJson(out)))
}

/// DATA-5: the optional secrets of a create request; a provider without a key (or
/// the reverse) is a 422 naming the missing field. Formats are checked by core.
pub(crate) fn owner_secrets(
    telegram_bot_token: Option<String>,
    model_provider: Option<String>,
    model_key: Option<String>,
) -> Result<clawy_core::guest_secrets::OwnerSecrets, core_instances::InstanceError> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let model_key = match (nonempty(model_provider), nonempty(model_key)) {
        (Some(p), Some(k)) => Some((p, clawy_core::SecretString::from(k))),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(core_instances::InstanceError::InvalidSecret {
                field: "model_provider",
                message: "is needed with model_key (anthropic, openai or openrouter)",
            });
        }
        (Some(_), None) => {
            return Err(core_instances::InstanceError::InvalidSecret {
                field: "model_key",
                message: "is needed with model_provider",
            });
        }
    };
    Ok(clawy_core::guest_secrets::OwnerSecrets {
        telegram_bot_token: nonempty(telegram_bot_token).map(clawy_core::SecretString::from),
        model_key,
    })
}

/// One of the caller's instances.
#[utoipa::path(
    get, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, body = wire::Instance), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Authed<Read>,
    Path(id): Path<String>,
) -> Result<ApiJson<wire::Instance>, ApiError> {
    let inst = state.core.instances().get(&caller.user.id, &id).await?;
    Ok(ApiJson(one_to_wire(&state.core, &inst).await))
}

async fn lifecycle(
    state: AppState,
    caller: Authed<Manage>,
    id: String,
    action: LifecycleAction,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    let inst = request(&state.core, &caller.actor(), &caller.user.id, &id, action).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(inst)))
}

/// Deletes the instance: the VM and its disk are destroyed, then its IP and port are
/// released. Repeating the request is harmless.
#[utoipa::path(
    delete, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, body = wire::Instance), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    lifecycle(state, caller, id, LifecycleAction::Delete).await
}

/// Starts a stopped instance.
#[utoipa::path(
    post, path = "/api/v1/instances/{id}/start", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, body = wire::Instance), (status = 404, body = ErrorBody), (status = 409, description = "Not possible in the current state", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    lifecycle(state, caller, id, LifecycleAction::Start).await
}

/// Stops a running instance (its IP, port and disk are kept).
#[utoipa::path(
    post, path = "/api/v1/instances/{id}/stop", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, body = wire::Instance), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn stop(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    lifecycle(state, caller, id, LifecycleAction::Stop).await
}

/// Reboots a running instance.
#[utoipa::path(
    post, path = "/api/v1/instances/{id}/reboot", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, body = wire::Instance), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn reboot(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    lifecycle(state, caller, id, LifecycleAction::Reboot).await
}

/// Re-queues the step that failed (instance in `error`).
#[utoipa::path(
    post, path = "/api/v1/instances/{id}/retry", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, body = wire::Instance), (status = 404, body = ErrorBody), (status = 409, description = "Not in error", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    lifecycle(state, caller, id, LifecycleAction::Retry).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// `1h` (default), `24h` or `30d`.
    pub range: Option<String>,
}

/// CPU, memory, disk, network and uptime: raw samples for `1h`/`24h`, hourly averages
/// for `30d` (ACCESS-1: what the host sees, nothing from inside the guest).
#[utoipa::path(
    get, path = "/api/v1/instances/{id}/metrics", tag = "instances",
    params(("id" = String, Path, description = "Instance id"), MetricsQuery),
    responses((status = 200, body = InstanceMetrics), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Authed<Read>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> Result<ApiJson<InstanceMetrics>, ApiError> {
    let (range, span) = parse_range(q.range.as_deref())?;
    let inst = state.core.instances().get(&caller.user.id, &id).await?;
    let now: DateTime<Utc> = state.core.now();
    let series = state
        .core
        .metrics()
        .series(&inst.id, now - span, now)
        .await?;
    Ok(ApiJson(series_to_wire(series, range)))
}

/// Everything that happened to the instance, newest first (ACCESS-3): the owner's,
/// API keys', operators' and the reconciler's actions, and state changes.
#[utoipa::path(
    get, path = "/api/v1/instances/{id}/events", tag = "instances",
    params(("id" = String, Path, description = "Instance id"), PageQuery),
    responses((status = 200, body = AuditPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Authed<Read>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    let req = q.request()?;
    // Scope first: another user's instance is 404 before any event is read.
    let inst = state.core.instances().get(&caller.user.id, &id).await?;
    let page = state
        .core
        .audit()
        .page(Scope::Instance(&inst.id), &req)
        .await?;
    Ok(ApiJson(AuditPage {
        events: page.items.into_iter().map(event_to_wire).collect(),
        next_after: page.next_after,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminListQuery {
    /// Page size (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
    pub host_id: Option<String>,
    pub owner_id: Option<String>,
}

/// Every user's instances, oldest first, a page at a time (operators only).
#[utoipa::path(
    get, path = "/api/v1/admin/instances", tag = "operator",
    params(AdminListQuery),
    responses((status = 200, body = AdminInstancePage), (status = 404, description = "Not an operator", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn admin_list(
    State(state): State<AppState>,
    _op: Operator,
    ApiQuery(q): ApiQuery<AdminListQuery>,
) -> Result<ApiJson<AdminInstancePage>, ApiError> {
    let filter = ListFilter {
        host_id: q.host_id,
        owner_id: q.owner_id,
        ..ListFilter::default()
    };
    let req = PageRequest::new(q.limit, q.after)?;
    let page = state.core.instances().page_all(&filter, &req).await?;
    let wired = many_to_wire(&state.core, &page.items).await?;
    let owners: Vec<&str> = page.items.iter().map(|i| i.owner_id.as_str()).collect();
    let emails = state.core.accounts().emails_by_ids(&owners).await?;
    let mut out = Vec::with_capacity(page.items.len());
    for (i, instance) in page.items.iter().zip(wired) {
        out.push(AdminInstance {
            instance,
            owner_id: i.owner_id.clone(),
            owner_email: emails.get(&i.owner_id).cloned().unwrap_or_default(),
            host_id: Some(i.host_id.clone()),
            dns_error: i.dns.error.clone(),
        });
    }
    Ok(ApiJson(AdminInstancePage {
        instances: out,
        next_after: page.next_after,
    }))
}
