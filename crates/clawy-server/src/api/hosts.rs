//! `/api/v1/admin/hosts` (operators only; everyone else gets 404): register host agents,
//! list them with their load, enable or disable placement on them.
//!
//! DATA-3: before a host is saved, the server connects to the agent with the pinned
//! certificate fingerprint and the token and reads its host info; an agent that cannot
//! be reached, presents another certificate or refuses the token is never stored. The
//! token is sealed by core (DATA-4) and never returned.

use std::time::Duration;

use crate::auth::Operator;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawy_agent_client::{AgentClient, ClientError};
use clawy_core::Actor;
use clawy_core::error::{DomainError, ErrorKind};
use clawy_core::hosts::{HostError, HostLoad, RegisterHost};
use clawy_core::{ExposeSecret, SecretString};
use clawy_proto::api::{self as wire, CreateHost, ErrorBody, HostList, UpdateHost};

/// How long registration waits for the agent to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a host could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterHostError {
    #[error("The agent URL must be https://host:port.")]
    BadUrl,
    #[error(
        "The fingerprint must be the agent certificate's SHA-256: 32 hex pairs separated by ':' (as `clawy agent fingerprint` prints it)."
    )]
    BadFingerprint,
    #[error(
        "The agent at {0} presented a certificate that does not match this fingerprint. Check the fingerprint with `clawy agent fingerprint` on the host."
    )]
    PinMismatch(String),
    #[error(
        "Cannot reach the agent at {0}: check the URL, that the agent runs and that the port is open."
    )]
    Unreachable(String),
    #[error(
        "The agent refused the token. Use the token printed by `clawy agent init` on the host."
    )]
    TokenRefused,
    #[error("The agent answered unexpectedly ({0}).")]
    AgentError(String),
    #[error(transparent)]
    Host(#[from] HostError),
}

impl DomainError for RegisterHostError {
    fn code(&self) -> &'static str {
        match self {
            RegisterHostError::BadUrl => "invalid_url",
            RegisterHostError::BadFingerprint => "invalid_fingerprint",
            RegisterHostError::PinMismatch(_) => "fingerprint_mismatch",
            RegisterHostError::Unreachable(_) => "agent_unreachable",
            RegisterHostError::TokenRefused => "agent_token_refused",
            RegisterHostError::AgentError(_) => "agent_error",
            RegisterHostError::Host(e) => e.code(),
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            RegisterHostError::BadUrl | RegisterHostError::Unreachable(_) => {
                ErrorKind::Invalid { field: "url" }
            }
            RegisterHostError::BadFingerprint | RegisterHostError::PinMismatch(_) => {
                ErrorKind::Invalid {
                    field: "fingerprint",
                }
            }
            RegisterHostError::TokenRefused => ErrorKind::Invalid { field: "token" },
            RegisterHostError::AgentError(_) => ErrorKind::Invalid { field: "url" },
            RegisterHostError::Host(e) => e.kind(),
        }
    }
}

/// What the registration form and the API both send.
pub struct HostRegistration {
    pub name: Option<String>,
    pub url: String,
    pub fingerprint: String,
    pub token: SecretString,
    pub country: String,
    pub site: String,
    pub enabled: bool,
}

/// A DNS label made from the agent's hostname (`Node-1.example` → `node-1-example`).
fn name_from_hostname(hostname: &str) -> String {
    let mut out = String::new();
    for c in hostname.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_end_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "host".to_string()
    } else {
        out
    }
}

/// DATA-3: talks to the agent with the pinned fingerprint and the token, then stores
/// the host (token sealed by core) with the capacity and network the agent reported.
pub async fn register_host(
    state: &AppState,
    caller: &Actor,
    req: HostRegistration,
) -> Result<HostLoad, RegisterHostError> {
    let url = req.url.trim().to_string();
    if url::Url::parse(&url)
        .map(|u| u.scheme() != "https")
        .unwrap_or(true)
    {
        return Err(RegisterHostError::BadUrl);
    }
    let fingerprint = clawy_core::hosts::normalize_fingerprint(&req.fingerprint)
        .map_err(|_| RegisterHostError::BadFingerprint)?;
    if req.token.expose_secret().trim().is_empty() {
        return Err(HostError::InvalidToken.into());
    }
    let client =
        AgentClient::with_timeout(&url, &fingerprint, req.token.expose_secret(), AGENT_TIMEOUT)
            .map_err(|e| match e {
                ClientError::BadFingerprint(_) => RegisterHostError::BadFingerprint,
                _ => RegisterHostError::BadUrl,
            })?;
    let info = client.host().await.map_err(|e| match e {
        ClientError::PinMismatch => RegisterHostError::PinMismatch(url.clone()),
        ClientError::Transport(_) => RegisterHostError::Unreachable(url.clone()),
        ClientError::Api { status: 401, .. } | ClientError::Api { status: 403, .. } => {
            RegisterHostError::TokenRefused
        }
        ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
            RegisterHostError::AgentError(format!("HTTP {status}"))
        }
        other => RegisterHostError::AgentError(other.to_string()),
    })?;
    let name = match req.name.map(|n| n.trim().to_string()) {
        Some(n) if !n.is_empty() => n,
        _ => name_from_hostname(&info.hostname),
    };
    let hosts = state.core.hosts();
    let host = hosts
        .register(
            caller,
            RegisterHost {
                name,
                url,
                fingerprint,
                token: req.token,
                country: req.country,
                site: req.site,
                enabled: req.enabled,
            },
        )
        .await?;
    hosts.update_info(&host.id, &info).await?;
    Ok(hosts.get_with_load(&host.id).await?)
}

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
        location: host.country,
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
    responses((status = 200, body = HostList), (status = 401, body = ErrorBody), (status = 404, description = "Not an operator", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<ApiJson<HostList>, ApiError> {
    let hosts = state.core.hosts().list_with_load().await?;
    Ok(ApiJson(HostList {
        hosts: hosts.into_iter().map(to_wire).collect(),
    }))
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
        &state,
        &super::operator_audit(&op),
        HostRegistration {
            name: req.name,
            url: req.url,
            fingerprint: req.fingerprint,
            token: SecretString::from(req.token),
            country: req.location,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_agent_hostnames_are_dns_labels() {
        assert_eq!(name_from_hostname("Node-1.Example"), "node-1-example");
        assert_eq!(name_from_hostname("--"), "host");
        assert_eq!(name_from_hostname(&"a".repeat(80)).len(), 63);
    }
}
