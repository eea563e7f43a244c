//! `/api/v1/instances`: the caller's VMs (read to look, manage to change), and
//! `/api/v1/admin/instances` for operators.
//!
//! Lookups are scoped to the caller's account in core: another user's instance is 404,
//! never 403. Lifecycle calls only insert a job and set the desired power; the job
//! runner alone changes `state` (so these answer 202). Every call that changes
//! something writes an instance event with the caller as actor (ACCESS-3).

use std::collections::HashMap;

use crate::auth::{Authed, Manage, Operator, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use clawy_core::instances::{self as core_instances, Instance, ListFilter};
use clawy_core::metrics::Series;
use clawy_proto::api::{
    self as wire, AdminInstance, AdminInstancePage, AuditPage, CreateInstance, ErrorBody,
    InstanceList, InstanceMetrics, MetricPoint,
};
use serde::Deserialize;
use utoipa::IntoParams;

/// The user the guest's SSH server accepts the instance's keys for.
pub const SSH_USER: &str = "root";
/// An owner's list is one page: quotas are small, and the list must stay one query.
const OWNER_LIST_LIMIT: u32 = 500;

/// Metric ranges the API and the page offer.
pub const RANGES: [&str; 3] = ["1h", "24h", "30d"];

/// `1h` → one hour, …; anything else is refused by name.
pub fn parse_range(range: Option<&str>) -> Result<(&'static str, Duration), ApiError> {
    match range.unwrap_or("1h") {
        "1h" => Ok(("1h", Duration::hours(1))),
        "24h" => Ok(("24h", Duration::hours(24))),
        "30d" => Ok(("30d", Duration::days(30))),
        other => Err(ApiError::invalid(
            "invalid_range",
            "range",
            format!("Unknown range `{other}`: use 1h, 24h or 30d."),
        )),
    }
}

/// Where people SSH to: the control plane's public host name (from `base_url`).
pub fn public_host(state: &AppState) -> String {
    state
        .core
        .config()
        .base_url
        .host_str()
        .unwrap_or("localhost")
        .to_string()
}

/// The health block: `ok`/`down` from the host-side gateway probe, `unknown` before
/// the first probe. ACCESS-1: nothing else is known about the guest.
fn health_to_wire(inst: &Instance) -> wire::InstanceHealth {
    let gateway = match inst.health.as_ref().and_then(|h| h.tcp_ok) {
        _ if inst.reported_state() == "unknown" => "unknown",
        Some(true) => "ok",
        Some(false) => "down",
        None => "unknown",
    };
    wire::InstanceHealth {
        gateway: gateway.to_string(),
        http_status: inst.health.as_ref().and_then(|h| h.http_status),
        checked_at: inst.health.as_ref().map(|h| h.checked_at),
        services: vec![wire::ServiceHealth {
            name: "gateway".to_string(),
            state: gateway.to_string(),
        }],
    }
}

/// The instance as the API shows it; `unknown` when its host is unreachable.
pub fn to_wire(
    inst: &Instance,
    public_host: &str,
    host_location: Option<String>,
) -> wire::Instance {
    let state =
        wire::InstanceState::parse(inst.reported_state()).unwrap_or(wire::InstanceState::Unknown);
    let live = !matches!(
        state,
        wire::InstanceState::Deleted | wire::InstanceState::Deleting
    );
    let ssh_port = inst.ssh_port.filter(|_| live);
    wire::Instance {
        id: inst.id.clone(),
        name: inst.name.clone(),
        state,
        desired_power: inst.desired_power.as_str().to_string(),
        private_ip: inst.private_ip.clone(),
        ssh_port,
        ssh_command: ssh_port.map(|p| format!("ssh -p {p} {SSH_USER}@{public_host}")),
        plan: inst.plan.clone(),
        region: inst.region.clone(),
        host_location,
        health: health_to_wire(inst),
        last_contact_at: inst.host_last_contact_at,
        uptime_secs: inst
            .health
            .as_ref()
            .and_then(|h| h.uptime_secs)
            .filter(|_| state == wire::InstanceState::Running),
        error_reason: inst.error_reason.clone(),
        created_at: inst.created_at,
        updated_at: inst.updated_at,
    }
}

/// Location labels (`DE-fra1`) of every host, for mapping many instances at once.
pub async fn host_locations(state: &AppState) -> Result<HashMap<String, String>, ApiError> {
    Ok(state
        .core
        .hosts()
        .list()
        .await?
        .into_iter()
        .map(|h| (h.id.clone(), h.location_label()))
        .collect())
}

async fn one_to_wire(state: &AppState, inst: &Instance) -> Result<wire::Instance, ApiError> {
    let location = state
        .core
        .hosts()
        .get(&inst.host_id)
        .await
        .ok()
        .map(|h| h.location_label());
    Ok(to_wire(inst, &public_host(state), location))
}

/// The metric series in wire form.
pub fn series_to_wire(series: Series, range: &str) -> InstanceMetrics {
    InstanceMetrics {
        instance_id: series.instance_id,
        range: range.to_string(),
        points: series
            .points
            .into_iter()
            .map(|p| MetricPoint {
                at: p.at,
                cpu_percent: p.cpu_percent,
                memory_used_bytes: p.memory_used_bytes,
                disk_used_bytes: p.disk_used_bytes,
                net_rx_bytes: p.net_rx_bytes,
                net_tx_bytes: p.net_tx_bytes,
                uptime_secs: p.uptime_secs,
            })
            .collect(),
    }
}

/// The caller's instances (not deleted), oldest first.
#[utoipa::path(
    get, path = "/api/v1/instances", tag = "instances",
    responses((status = 200, body = InstanceList), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Read>,
) -> Result<ApiJson<InstanceList>, ApiError> {
    let page = state
        .core
        .instances()
        .list_for_owner(&caller.user.id, OWNER_LIST_LIMIT, None)
        .await?;
    let locations = if page.items.is_empty() {
        HashMap::new()
    } else {
        host_locations(&state).await?
    };
    let host = public_host(&state);
    Ok(ApiJson(InstanceList {
        instances: page
            .items
            .iter()
            .map(|i| to_wire(i, &host, locations.get(&i.host_id).cloned()))
            .collect(),
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
        (status = 422, description = "Invalid name or region not allowed; `field` names it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    ApiJson(req): ApiJson<CreateInstance>,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    let inst = state
        .core
        .instances()
        .create(
            &caller.actor(),
            &caller.user.id,
            core_instances::CreateInstance {
                name: req.name,
                plan: req.plan,
                region: req.region,
                ssh_key_ids: req.ssh_key_ids,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(one_to_wire(&state, &inst).await?),
    ))
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
    Ok(ApiJson(one_to_wire(&state, &inst).await?))
}

/// The lifecycle requests: each inserts a job (or finds one already queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Start,
    Stop,
    Reboot,
    Delete,
    Retry,
}

/// Runs a lifecycle request for the owner; `caller` is who the event names.
pub async fn request_lifecycle(
    state: &AppState,
    caller: &clawy_core::Actor,
    owner_id: &str,
    id: &str,
    action: Lifecycle,
) -> Result<Instance, ApiError> {
    let instances = state.core.instances();
    let accepted = match action {
        Lifecycle::Start => instances.request_start(caller, owner_id, id).await?,
        Lifecycle::Stop => instances.request_stop(caller, owner_id, id).await?,
        Lifecycle::Reboot => instances.request_reboot(caller, owner_id, id).await?,
        Lifecycle::Delete => instances.request_delete(caller, owner_id, id).await?,
        Lifecycle::Retry => instances.request_retry(caller, owner_id, id).await?,
    };
    Ok(accepted.instance)
}

async fn lifecycle(
    state: AppState,
    caller: Authed<Manage>,
    id: String,
    action: Lifecycle,
) -> Result<(StatusCode, ApiJson<wire::Instance>), ApiError> {
    let inst = request_lifecycle(&state, &caller.actor(), &caller.user.id, &id, action).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(one_to_wire(&state, &inst).await?),
    ))
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
    lifecycle(state, caller, id, Lifecycle::Delete).await
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
    lifecycle(state, caller, id, Lifecycle::Start).await
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
    lifecycle(state, caller, id, Lifecycle::Stop).await
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
    lifecycle(state, caller, id, Lifecycle::Reboot).await
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
    lifecycle(state, caller, id, Lifecycle::Retry).await
}

#[derive(Debug, Deserialize, IntoParams)]
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

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Page size (1–500, default 100).
    pub limit: Option<u32>,
    /// An event id: return events older than it (the previous page's `next_before`).
    pub before: Option<i64>,
}

/// Everything that happened to the instance, newest first (ACCESS-3): the owner's,
/// API keys', operators' and the reconciler's actions, and state changes.
#[utoipa::path(
    get, path = "/api/v1/instances/{id}/events", tag = "instances",
    params(("id" = String, Path, description = "Instance id"), EventsQuery),
    responses((status = 200, body = AuditPage), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Authed<Read>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    // Scope first: another user's instance is 404 before any event is read.
    let inst = state.core.instances().get(&caller.user.id, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let events = state
        .core
        .audit()
        .list_for_instance(&inst.id, limit, q.before)
        .await?;
    let next_before = if events.len() == limit as usize {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(ApiJson(AuditPage {
        events: events.into_iter().map(event_to_wire).collect(),
        next_before,
    }))
}

pub(crate) fn event_to_wire(e: clawy_core::audit::AuditEvent) -> wire::AuditEvent {
    wire::AuditEvent {
        id: e.id,
        at: e.at,
        kind: e.action,
        actor: e.actor,
        client_addr: e.client_addr,
        detail: (!e.detail.is_empty()).then_some(e.detail),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AdminListQuery {
    /// Page size (1–500, default 50).
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
    let page = state
        .core
        .instances()
        .list_all(
            &filter,
            q.limit.unwrap_or(50).clamp(1, 500),
            q.after.as_deref(),
        )
        .await?;
    let locations = host_locations(&state).await?;
    let host = public_host(&state);
    let owners: Vec<&str> = page.items.iter().map(|i| i.owner_id.as_str()).collect();
    let emails = state.core.accounts().emails_by_ids(&owners).await?;
    let mut out = Vec::with_capacity(page.items.len());
    for i in &page.items {
        out.push(AdminInstance {
            instance: to_wire(i, &host, locations.get(&i.host_id).cloned()),
            owner_id: i.owner_id.clone(),
            owner_email: emails.get(&i.owner_id).cloned().unwrap_or_default(),
            host_id: Some(i.host_id.clone()),
        });
    }
    Ok(ApiJson(AdminInstancePage {
        instances: out,
        next_after: page.next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_named_or_refused() {
        assert_eq!(parse_range(None).ok().map(|r| r.0), Some("1h"));
        assert_eq!(
            parse_range(Some("30d")).ok().map(|r| r.1),
            Some(Duration::days(30))
        );
        let err = parse_range(Some("7d")).err().map(|e| e.status());
        assert_eq!(err, Some(StatusCode::UNPROCESSABLE_ENTITY));
    }
}
