//! Registering a host agent (DATA-3): before a host is saved, the control plane
//! connects to the agent with the pinned certificate fingerprint and the token and
//! reads its host info. An agent that cannot be reached, presents another certificate
//! or refuses the token is never stored. The token is sealed by core (DATA-4) and
//! never returned. Here, with the rest of the code that talks to agents, so the API
//! and the dashboard both call one operation.

use std::time::Duration;

use clawy_agent_client::{AgentClient, ClientError};
use clawy_core::error::{DomainError, ErrorKind};
use clawy_core::hosts::{HostError, HostLoad, RegisterHost};
use clawy_core::{Actor, Core, ExposeSecret, SecretString};

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
/// An empty `name` is made from the agent's hostname.
pub async fn register_host(
    core: &Core,
    actor: &Actor,
    req: RegisterHost,
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
    let name = match req.name.trim() {
        "" => name_from_hostname(&info.hostname),
        given => given.to_string(),
    };
    let hosts = core.hosts();
    let host = hosts
        .register(
            actor,
            RegisterHost {
                name,
                url,
                fingerprint,
                ..req
            },
        )
        .await?;
    hosts.update_info(&host.id, &info).await?;
    Ok(hosts.get_with_load(&host.id).await?)
}

/// DATA-3: rotates the credentials the control plane holds for a host — a new agent
/// token (created on the agent beforehand with `clawy agent token create`) and/or the
/// certificate fingerprint after the agent's certificate changed. Nothing is stored
/// until the agent answered over a connection pinned to the new fingerprint with the
/// new token, so a typo cannot cut the host off. The host's instances are not touched.
/// Afterwards the operator revokes the old token on the agent.
pub async fn rotate_host_credentials(
    core: &Core,
    actor: &Actor,
    host_id: &str,
    token: Option<&SecretString>,
    fingerprint: Option<&str>,
) -> Result<HostLoad, RegisterHostError> {
    let hosts = core.hosts();
    let current = hosts.agent_target(host_id).await?;
    let fingerprint = match fingerprint {
        Some(f) => clawy_core::hosts::normalize_fingerprint(f)
            .map_err(|_| RegisterHostError::BadFingerprint)?,
        None => current.fingerprint.clone(),
    };
    if token.is_some_and(|t| t.expose_secret().trim().is_empty()) {
        return Err(HostError::InvalidToken.into());
    }
    let probe_token = token.unwrap_or(&current.token);
    let client = AgentClient::with_timeout(
        &current.url,
        &fingerprint,
        probe_token.expose_secret(),
        AGENT_TIMEOUT,
    )
    .map_err(|e| match e {
        ClientError::BadFingerprint(_) => RegisterHostError::BadFingerprint,
        _ => RegisterHostError::BadUrl,
    })?;
    let info = client.host().await.map_err(|e| match e {
        ClientError::PinMismatch => RegisterHostError::PinMismatch(current.url.clone()),
        ClientError::Transport(_) => RegisterHostError::Unreachable(current.url.clone()),
        ClientError::Api { status: 401, .. } | ClientError::Api { status: 403, .. } => {
            RegisterHostError::TokenRefused
        }
        ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
            RegisterHostError::AgentError(format!("HTTP {status}"))
        }
        other => RegisterHostError::AgentError(other.to_string()),
    })?;
    hosts
        .rotate_credentials(actor, host_id, Some(&fingerprint), token)
        .await?;
    hosts.update_info(host_id, &info).await?;
    Ok(hosts.get_with_load(host_id).await?)
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
