//! The host's TLS edge: the agent is the controller of the Caddy beside it
//! (docs/EDGE.md). The control plane never talks to Caddy.
//!
//! - [`settings`]: the operator's `[edge]` settings, validated (hostile values refused);
//! - [`caddy_config`]: Caddy's whole, static JSON config (no per-instance route);
//! - [`admin`]: Caddy's admin API over its unix socket, writes serialized;
//! - [`index`]: hostname → instance state, read by the three below;
//! - [`endpoint`]: loopback HTTP: `ask` (DATA-1) and the branded error pages;
//! - [`dns`]: loopback DNS responder: `<label>.<internal zone>` → VM private IP (NET-4);
//! - [`certs`]: a deleted hostname's certificate out of storage and out of memory.
//!
//! [`Edge`] ties them together for the executor, which calls
//! [`Edge::set_instance`] when a VM is defined/started/stopped and
//! [`Edge::forget_instance`] when it is deleted; the agent's start builds the
//! index from its VMs ([`Edge::rebuild`]) and keeps Caddy on the edge config
//! ([`Edge::ensure_caddy`], [`Edge::spawn_drift_check`]). [`Edge::report`] is what
//! HostInfo says about the edge.

pub mod admin;
pub mod caddy_config;
pub mod certs;
pub mod dns;
pub mod endpoint;
pub mod index;
pub mod settings;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

pub use admin::{AdminError, CaddyAdmin, Ensured};
pub use certs::{CertError, CertStorage};
pub use clawy_proto::names::DnsName;
pub use index::{EdgeIndex, EdgeState, HostStatus, IndexError};
pub use settings::{EdgeSettings, EdgeSettingsRaw, Issuer, SettingsError};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("binding the edge's {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What [`Edge::forget_instance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub was_known: bool,
    pub files_removed: usize,
}

/// The running loopback services.
#[derive(Debug)]
pub struct EdgeServices {
    pub http_addr: SocketAddr,
    pub dns_addr: SocketAddr,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
pub struct Edge {
    settings: EdgeSettings,
    index: Arc<EdgeIndex>,
    admin: CaddyAdmin,
    storage: CertStorage,
    config: Value,
    /// The last check of Caddy's config: `None` before the first, then `Ok` or
    /// the error in words. Reported in HostInfo (the control plane's
    /// `edge_configured` fact reads it).
    last_check: std::sync::Mutex<Option<Result<(), String>>>,
}

impl Edge {
    pub fn new(settings: EdgeSettings) -> Self {
        let config = caddy_config::build(&settings);
        Edge {
            index: Arc::new(EdgeIndex::new(settings.instances_apex.clone())),
            admin: CaddyAdmin::new(settings.admin_socket.clone()),
            storage: CertStorage::new(settings.storage_root.clone()),
            config,
            settings,
            last_check: std::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &EdgeSettings {
        &self.settings
    }

    pub fn index(&self) -> &Arc<EdgeIndex> {
        &self.index
    }

    pub fn admin(&self) -> &CaddyAdmin {
        &self.admin
    }

    pub fn storage(&self) -> &CertStorage {
        &self.storage
    }

    /// The config the agent keeps Caddy on.
    pub fn desired_config(&self) -> &Value {
        &self.config
    }

    /// Starts the `ask`/error-page endpoint and the DNS responder on their
    /// loopback addresses. They must run before Caddy gets the config.
    pub async fn start_services(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<EdgeServices, EdgeError> {
        let (http_addr, http_task) = endpoint::serve(
            self.settings.agent_http,
            self.index.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(|source| EdgeError::Bind {
            what: "ask endpoint",
            addr: self.settings.agent_http,
            source,
        })?;
        let responder = dns::DnsResponder::bind(
            self.settings.agent_dns,
            self.settings.internal_zone.clone(),
            self.index.clone(),
        )
        .await
        .map_err(|source| EdgeError::Bind {
            what: "DNS responder",
            addr: self.settings.agent_dns,
            source,
        })?;
        let dns_addr = responder.local_addr().map_err(|source| EdgeError::Bind {
            what: "DNS responder",
            addr: self.settings.agent_dns,
            source,
        })?;
        let dns_task = tokio::spawn(responder.run(shutdown));
        Ok(EdgeServices {
            http_addr,
            dns_addr,
            tasks: vec![http_task, dns_task],
        })
    }

    /// Loads the edge config into Caddy unless it already runs it (agent start,
    /// and after Caddy restarted from its own Caddyfile).
    pub async fn ensure_caddy(&self) -> Result<Ensured, EdgeError> {
        let r = self.admin.ensure_config(&self.config).await;
        if let Ok(mut last) = self.last_check.lock() {
            *last = Some(match &r {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            });
        }
        Ok(r?)
    }

    /// The edge as HostInfo reports it: working only when the last check found
    /// (or put) Caddy on the edge config.
    pub fn report(&self) -> clawy_proto::agent::HostEdge {
        let last = self.last_check.lock().ok().and_then(|l| l.clone());
        let (working, error) = match last {
            Some(Ok(())) => (true, None),
            Some(Err(e)) => (false, Some(e)),
            None => (
                false,
                Some("Caddy's config has not been checked yet".into()),
            ),
        };
        clawy_proto::agent::HostEdge {
            instances_apex: self.settings.instances_apex.to_string(),
            working,
            error,
        }
    }

    /// Whether `host` can be served by this edge (one label under its apex).
    pub fn serves(&self, host: &DnsName) -> bool {
        host.label_under(&self.settings.instances_apex).is_some()
    }

    /// Replaces the index with what the hypervisor holds (agent start). VMs
    /// without a public hostname, or with one under another apex, are skipped.
    pub fn rebuild(&self, vms: &[clawy_proto::agent::VmStatus]) -> Result<usize, EdgeError> {
        let entries: Vec<(DnsName, EdgeState)> = vms
            .iter()
            .filter_map(|vm| {
                let (host, state) = vm_edge_state(&vm.spec, vm.state)?;
                if self.serves(&host) {
                    Some((host, state))
                } else {
                    tracing::warn!(vm = %vm.id, host = %host, "edge: hostname is not under this edge's apex; not served");
                    None
                }
            })
            .collect();
        let n = entries.len();
        self.index.replace_all(entries)?;
        Ok(n)
    }

    /// Re-checks Caddy's running config every `interval` and re-applies it when
    /// it differs (a restarted Caddy, an operator's manual change). An identical
    /// config is never re-posted, so open WebSockets are not touched.
    pub fn spawn_drift_check(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                match self.ensure_caddy().await {
                    Ok(Ensured::Loaded) => {
                        tracing::warn!("edge: Caddy ran another config; re-applied the edge config")
                    }
                    Ok(Ensured::AlreadyRunning) => {}
                    Err(e) => tracing::warn!(error = %e, "edge: cannot check Caddy's config"),
                }
            }
        })
    }

    /// A VM was defined, started or stopped: its hostname is approved by `ask`
    /// and routed (running) or shows the "stopped" page (stopped). No Caddy call.
    pub fn set_instance(&self, host: &DnsName, state: EdgeState) -> Result<(), EdgeError> {
        Ok(self.index.upsert(host, state)?)
    }

    /// A VM is being deleted: `ask` refuses its hostname from now on, requests
    /// for it get the 404 page, its certificate leaves Caddy's storage and
    /// memory, and a fresh TLS handshake for it fails. Idempotent (a retried
    /// delete step runs it again). No Caddy reload.
    pub async fn forget_instance(&self, host: &DnsName) -> Result<Forgotten, EdgeError> {
        let was_known = self.index.remove(host);
        let removed = self.storage.remove_hostname(host)?;
        certs::evict_from_cache(&self.storage, self.local_https_addr(), host).await?;
        Ok(Forgotten {
            was_known,
            files_removed: removed.len(),
        })
    }

    /// Where the agent itself reaches Caddy's HTTPS listener (for the flush).
    pub fn local_https_addr(&self) -> SocketAddr {
        let a = self.settings.https_listen[0];
        let ip = match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, a.port())
    }
}

/// A VM's hostname and what the edge does with it: route to its private IPv4
/// while running, the "stopped" page otherwise. `None` without a (valid) public
/// hostname or private address.
pub fn vm_edge_state(
    spec: &clawy_proto::agent::VmSpec,
    state: clawy_proto::agent::VmState,
) -> Option<(DnsName, EdgeState)> {
    let host = DnsName::parse(spec.public_hostname.as_deref()?, "public_hostname", 2).ok()?;
    let edge_state = if state == clawy_proto::agent::VmState::Running {
        EdgeState::Running(spec.private_ip.parse().ok()?)
    } else {
        EdgeState::Stopped
    };
    Some((host, edge_state))
}
