//! Agent clients per host (DATA-3): built from `hosts().agent_target()`, which opens
//! the sealed token only in memory; the certificate fingerprint is pinned by
//! `AgentClient`. Clients are cached per host and rebuilt when the URL, fingerprint
//! or token changed (the cache key holds a SHA-256 of the token, never the token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawy_agent_client::AgentClient;
use clawy_core::hosts::AgentTarget;
use clawy_core::{Core, ExposeSecret};

use crate::error::OrchestratorError;

#[derive(Clone)]
struct Cached {
    url: String,
    fingerprint: String,
    token_hash: [u8; 32],
    client: AgentClient,
}

/// Cache of pinned agent clients, keyed by host id.
pub struct AgentClients {
    core: Arc<Core>,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for AgentClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClients")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClients {
    /// `timeout` bounds every request (the agent's own stop timeout included).
    pub fn new(core: Arc<Core>, timeout: Duration) -> Self {
        AgentClients {
            core,
            timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a host, reading its target from the database.
    pub async fn for_host(&self, host_id: &str) -> Result<AgentClient, OrchestratorError> {
        let target = self.core.hosts().agent_target(host_id).await?;
        self.for_target(&target)
    }

    /// The client for a target already read (the reconciler reads all at once).
    pub fn for_target(&self, target: &AgentTarget) -> Result<AgentClient, OrchestratorError> {
        let token_hash = clawy_core::crypto::sha256(target.token.expose_secret());
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.get(&target.host_id) {
                if c.url == target.url
                    && c.fingerprint == target.fingerprint
                    && clawy_core::crypto::constant_time_eq(&c.token_hash, &token_hash)
                {
                    return Ok(c.client.clone());
                }
            }
        }
        let client = AgentClient::with_timeout(
            &target.url,
            &target.fingerprint,
            target.token.expose_secret(),
            self.timeout,
        )?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                target.host_id.clone(),
                Cached {
                    url: target.url.clone(),
                    fingerprint: target.fingerprint.clone(),
                    token_hash,
                    client: client.clone(),
                },
            );
        }
        Ok(client)
    }
}
