//! Metrics, health and host refresh (ACCESS-1: what the host sees — VM counters
//! from the hypervisor, the agent's probe of the gateway port — and the guest's
//! allow-listed service-health heartbeat as the agent accepted it; nothing else is
//! read from inside the guest).
//!
//! DATA-5: when the agent reports a VM's secrets delivered (the guest applied its
//! configuration and the agent destroyed the seed), the poll erases the sealed
//! copy (`guest_secrets().erase`, idempotent). The agent's report persists, so a
//! crash between the two is repaired by the next poll.
//!
//! Every `metrics_interval_secs`, per host (in parallel, bounded): `GET /v1/host`
//! refreshes capacity, network and reachability (`hosts().update_info`), and
//! `GET /v1/vms` gives one sample and the latest health per known instance, written
//! in one transaction per host (multi-row statements). No database transaction is
//! open while an agent is asked. Then one `downsample_and_purge` keeps storage
//! bounded (raw 24 h, hourly rollups of completed hours 30 days, purged in batches).

use std::collections::HashSet;
use std::sync::Arc;

use clawy_core::Core;
use clawy_core::hosts::AgentTarget;
use clawy_core::metrics::{HealthUpdate, MetricSample};
use clawy_proto::agent::{VmState, VmStatus};
use futures::StreamExt;

use crate::clients::AgentClients;
use crate::error::OrchestratorError;
use crate::leases::HostLeases;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub hosts: usize,
    pub hosts_unreachable: usize,
    pub samples: usize,
}

pub struct Poller {
    core: Arc<Core>,
    clients: Arc<AgentClients>,
    concurrency: usize,
    /// With replicas: only the hosts this replica leases, each at most once per
    /// `interval` across all replicas (`crate::leases`).
    leases: Option<(Arc<HostLeases>, std::time::Duration)>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The agent's VM status as a stored sample.
pub fn sample_of(vm: &VmStatus, at: chrono::DateTime<chrono::Utc>) -> MetricSample {
    MetricSample {
        instance_id: vm.id.clone(),
        at,
        cpu_percent: vm.cpu_percent,
        memory_used_bytes: vm.memory_used_bytes,
        disk_used_bytes: vm.disk_used_bytes,
        net_rx_bytes: vm.net_rx_bytes,
        net_tx_bytes: vm.net_tx_bytes,
        uptime_secs: vm.uptime_secs,
    }
}

/// The agent's probe as stored health. A VM that is not running has no probe: its
/// health says so through `vm_state` with no TCP result. The heartbeat is dated by
/// `at` minus its age as the agent measured it (the host's clock is not trusted).
pub fn health_of(vm: &VmStatus, at: chrono::DateTime<chrono::Utc>) -> HealthUpdate {
    let state = match vm.state {
        VmState::Defined => "defined",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Stopped => "stopped",
        VmState::Crashed => "crashed",
    };
    HealthUpdate {
        instance_id: vm.id.clone(),
        checked_at: vm
            .health
            .as_ref()
            .and_then(|h| chrono::DateTime::parse_from_rfc3339(&h.checked_at).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(at),
        vm_state: Some(state.to_string()),
        tcp_ok: vm.health.as_ref().map(|h| h.tcp_ok),
        http_status: vm.health.as_ref().and_then(|h| h.http_status),
        latency_ms: vm.health.as_ref().map(|h| h.latency_ms),
        uptime_secs: vm.uptime_secs,
        heartbeat: vm.heartbeat.as_ref().and_then(|hb| {
            let json = serde_json::to_string(&hb.facts).ok()?;
            let age =
                chrono::Duration::seconds(i64::try_from(hb.age_secs).unwrap_or(i64::MAX / 2_000));
            Some((json, at - age))
        }),
    }
}

impl Poller {
    pub fn new(core: Arc<Core>, clients: Arc<AgentClients>, concurrency: usize) -> Self {
        Poller {
            core,
            clients,
            concurrency: concurrency.max(1),
            leases: None,
        }
    }

    /// Polls only the hosts leased by this replica, and each host at most once per
    /// `interval` whichever replica holds it.
    pub fn with_leases(mut self, leases: Arc<HostLeases>, interval: std::time::Duration) -> Self {
        self.leases = Some((leases, interval));
        self
    }

    /// One poll of every host, then downsampling and purge.
    pub async fn poll_once(&self) -> Result<PollReport, OrchestratorError> {
        let mut targets = self.core.hosts().agent_targets().await?;
        if let Some((leases, interval)) = &self.leases {
            leases.owned().await?;
            let slots = leases.claim_polls(*interval).await?;
            targets.retain(|t| slots.contains(&t.host_id));
        }
        let results: Vec<Result<PollReport, OrchestratorError>> = futures::stream::iter(targets)
            .map(|t| async move { self.poll_host(t).await })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut report = PollReport::default();
        for r in results {
            match r {
                Ok(r) => {
                    report.hosts += r.hosts;
                    report.hosts_unreachable += r.hosts_unreachable;
                    report.samples += r.samples;
                }
                Err(e) => tracing::warn!(error = %e, "polling a host failed"),
            }
        }
        self.core
            .metrics()
            .downsample_and_purge(self.core.now())
            .await?;
        Ok(report)
    }

    async fn poll_host(&self, target: AgentTarget) -> Result<PollReport, OrchestratorError> {
        let unreachable = PollReport {
            hosts: 1,
            hosts_unreachable: 1,
            samples: 0,
        };
        let client = self.clients.for_target(&target)?;
        let host = &target.host_id;
        let Some(info) = crate::ask_host(&self.core, host, client.host()).await? else {
            return Ok(unreachable);
        };
        // Capacity, network and reachability (placement reads these).
        self.core
            .hosts()
            .update_info(&target.host_id, &info)
            .await?;
        let Some(list) = crate::ask_host(&self.core, host, client.list_vms()).await? else {
            return Ok(unreachable);
        };
        let vms = list.vms;
        let known: HashSet<String> = self
            .core
            .instances()
            .ids_on_host(&target.host_id)
            .await?
            .into_iter()
            .collect();
        let now = self.core.now();
        let (samples, health): (Vec<MetricSample>, Vec<HealthUpdate>) = vms
            .iter()
            .filter(|v| known.contains(&v.id))
            .map(|v| (sample_of(v, now), health_of(v, now)))
            .unzip();
        // One transaction of multi-row statements per host: the statements of a
        // poll pass grow with hosts, not with VMs (the fleet_scale test counts them).
        self.core.metrics().record_poll(&samples, &health).await?;
        // DATA-5: the one erase path; every poll repeats it while the agent says
        // delivered (a no-op once erased).
        // One look-up per host, and only when the agent reports deliveries: the
        // poll pass stays a few statements per host.
        let delivered: Vec<String> = vms
            .iter()
            .filter(|v| v.secrets_delivered && known.contains(&v.id))
            .map(|v| v.id.clone())
            .collect();
        if !delivered.is_empty() {
            let held = self
                .core
                .guest_secrets()
                .held_among(&delivered)
                .await
                .map_err(|e| OrchestratorError::Instance(e.into()))?;
            for id in held {
                if let Err(e) = self.core.guest_secrets().erase(&id).await {
                    tracing::warn!(instance = %id, error = %e, "erasing delivered secrets failed");
                }
            }
        }
        Ok(PollReport {
            hosts: 1,
            hosts_unreachable: 0,
            samples: samples.len(),
        })
    }
}
