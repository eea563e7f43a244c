//! `/api/v1/admin/hosts` (operators only; everyone else gets 404): register host agents,
//! list them with their load, enable or disable placement on them.
//!
//! DATA-3: registration (`clawy_orchestrator::registration`) reads the agent's host
//! info over the pinned connection before anything is stored; the token is sealed by
//! core (DATA-4) and never returned.

use crate::auth::Operator;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawy_core::SecretString;
use clawy_core::hosts::HostLoad;
use clawy_core::hosts::RegisterHost;
use clawy_orchestrator::registration::{register_host, rotate_host_credentials};
use clawy_proto::api::{
    self as wire, CreateHost, ErrorBody, HostList, RotateHostCredentials, UpdateHost,
};

pub(crate) fn to_wire(h: HostLoad) -> wire::Host {
    let res = |r: clawy_proto::agent::Resources| wire::HostResources {
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
    };
    let host = h.host;
    wire::Host {
        id: host.id,
        name: host.name,
        url: host.url,
        fingerprint: host.fingerprint,
        location: host.region,
        site: (!host.site.is_empty()).then_some(host.site),
        enabled: host.enabled,
        reachable: host.reachable,
        last_contact_at: host.last_contact_at,
        last_error: host.last_error,
        hostname: host.hostname,
        accelerator: host.accelerator,
        capacity: res(host.capacity),
        allocated: res(h.allocated),
        instance_count: h.instance_count,
        created_at: host.created_at,
    }
}

/// Every host with its load (capacity vs. the plans of its live instances).
#[utoipa::path(
    get, path = "/api/v1/admin/hosts", tag = "operator",
    params(PageQuery),
    responses((status = 200, body = HostList), (status = 401, body = ErrorBody), (status = 404, description = "Not an operator", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _op: Operator,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<HostList>, ApiError> {
    let hosts = state.core.hosts().list_with_load().await?;
    let (hosts, next_after) = q.page_of(hosts, |h| h.host.id.clone(), to_wire)?;
    Ok(ApiJson(HostList { hosts, next_after }))
}

/// Registers a host agent after reading its host info over the pinned connection.
#[utoipa::path(
    post, path = "/api/v1/admin/hosts", tag = "operator",
    request_body = CreateHost,
    responses(
        (status = 201, body = wire::Host),
        (status = 404, description = "Not an operator", body = ErrorBody),
        (status = 409, description = "A host with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid, unreachable, wrong fingerprint or token refused (the message says which)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(req): ApiJson<CreateHost>,
) -> Result<(StatusCode, ApiJson<wire::Host>), ApiError> {
    let host = register_host(
        &state.core,
        &super::operator_audit(&op),
        RegisterHost {
            name: req.name.unwrap_or_default(),
            url: req.url,
            fingerprint: req.fingerprint,
            token: SecretString::from(req.token),
            region: req.location,
            site: req.site.unwrap_or_default(),
            enabled: req.enabled.unwrap_or(true),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(to_wire(host))))
}

/// Enables or disables placement on a host; its instances keep running.
#[utoipa::path(
    patch, path = "/api/v1/admin/hosts/{id}", tag = "operator",
    params(("id" = String, Path, description = "Host id")),
    request_body = UpdateHost,
    responses((status = 200, body = wire::Host), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateHost>,
) -> Result<ApiJson<wire::Host>, ApiError> {
    let hosts = state.core.hosts();
    if let Some(enabled) = req.enabled {
        hosts
            .set_enabled(&super::operator_audit(&op), &id, enabled)
            .await?;
    }
    Ok(ApiJson(to_wire(hosts.get_with_load(&id).await?)))
}

/// DATA-3: rotates the agent token and/or the pinned certificate fingerprint. The agent
/// must accept the new token over a connection pinned to the new fingerprint before
/// anything is stored; the host's instances are not touched. Revoke the old token on
/// the agent afterwards (`clawy agent token revoke`).
#[utoipa::path(
    post, path = "/api/v1/admin/hosts/{id}/credentials", tag = "operator",
    params(("id" = String, Path, description = "Host id")),
    request_body = RotateHostCredentials,
    responses(
        (status = 200, body = wire::Host),
        (status = 404, description = "No such host, or not an operator", body = ErrorBody),
        (status = 422, description = "Bad fingerprint, wrong certificate, token refused or agent unreachable (the message says which)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_credentials(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RotateHostCredentials>,
) -> Result<ApiJson<wire::Host>, ApiError> {
    let token = req.token.map(SecretString::from);
    let host = rotate_host_credentials(
        &state.core,
        &super::operator_audit(&op),
        &id,
        token.as_ref(),
        req.fingerprint.as_deref(),
    )
    .await?;
    Ok(ApiJson(to_wire(host)))
}
