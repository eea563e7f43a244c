//! The reconciler: every `reconcile_interval_secs`, compares what the database wants
//! with what every agent reports (one `list_vms` per host, hosts in parallel with
//! bounded concurrency) and repairs or flags the difference.
//!
//! Repairs (through jobs, so only the runner changes lifecycle state):
//! - desired `running`, VM stopped/crashed/defined → a `start` job by `reconciler`
//!   (event `instance_repaired`);
//! - desired `stopped`, VM running → a `stop` job;
//! - port forwards differ from the allocation → `ensure_vm` with the stored spec
//!   (forwards change live on the agent; no state change), event `instance_repaired`;
//! - the VM vanished from its host (instance `running`/`stopped`, no VM) → event
//!   `instance_drift_detected`, then, when the owner wants it running, a `provision`
//!   job that defines it again from the base image with the same id and allocation
//!   (the disk's contents are lost — the event says so). Decision: re-provision
//!   rather than leave an instance that claims to run without a VM.
//!
//! Flags only (never deleted automatically): a VM on a host that the database does
//! not know (or only as deleted) → an operator-visible audit event
//! `instance_drift_detected` (no owner), once per VM per process.
//!
//! Host unreachable → `hosts().mark_contact(Err)`: its instances are reported
//! `unknown` with the last contact time; the next answer marks it reachable again.
//!
//! Instances with an unfinished job are skipped (the job owns them). The database is
//! read BEFORE the agent is asked, and every repair re-checks the instance right
//! before acting, so a job that finishes meanwhile is not mistaken for drift.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clawy_core::Actor;
use clawy_core::Core;
use clawy_core::audit::AuditAction;
use clawy_core::hosts::AgentTarget;
use clawy_core::instances::{DesiredPower, Instance, InstanceState};
use clawy_core::jobs::JobKind;
use clawy_proto::agent::{ErrorCode, VmState, VmStatus};
use futures::StreamExt;

use crate::clients::AgentClients;
use crate::error::OrchestratorError;
use crate::leases::HostLeases;

/// What one pass saw and did (tests and the benchmark read it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub hosts: usize,
    pub hosts_unreachable: usize,
    pub vms_seen: usize,
    pub instances_checked: usize,
    pub starts_enqueued: usize,
    pub stops_enqueued: usize,
    pub forwards_reapplied: usize,
    pub vanished: usize,
    pub unknown_vms: Vec<(String, String)>,
    pub skipped_busy: usize,
}

impl ReconcileReport {
    fn merge(&mut self, o: ReconcileReport) {
        self.hosts += o.hosts;
        self.hosts_unreachable += o.hosts_unreachable;
        self.vms_seen += o.vms_seen;
        self.instances_checked += o.instances_checked;
        self.starts_enqueued += o.starts_enqueued;
        self.stops_enqueued += o.stops_enqueued;
        self.forwards_reapplied += o.forwards_reapplied;
        self.vanished += o.vanished;
        self.unknown_vms.extend(o.unknown_vms);
        self.skipped_busy += o.skipped_busy;
    }
}

pub struct Reconciler {
    core: Arc<Core>,
    clients: Arc<AgentClients>,
    /// Hosts asked at once.
    concurrency: usize,
    /// (host id, vm id) already flagged by this process: flag once, not every pass.
    flagged: Mutex<HashSet<(String, String)>>,
    /// With replicas: only the hosts this replica leases (`crate::leases`).
    leases: Option<Arc<HostLeases>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    pub fn new(core: Arc<Core>, clients: Arc<AgentClients>, concurrency: usize) -> Self {
        Reconciler {
            core,
            clients,
            concurrency: concurrency.max(1),
            flagged: Mutex::new(HashSet::new()),
            leases: None,
        }
    }

    /// Reconciles only the hosts leased by this replica.
    pub fn with_leases(mut self, leases: Arc<HostLeases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// One pass over every host.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, OrchestratorError> {
        let started = Instant::now();
        let mut targets = self.core.hosts().agent_targets().await?;
        if let Some(leases) = &self.leases {
            let mine = leases.owned().await?;
            targets.retain(|t| mine.contains(&t.host_id));
        }
        // DB snapshot first (see the module docs): busy instances for the whole
        // fleet in one query; each host's instances right before its agent is asked
        // (one indexed query per host: the statements of a pass grow with hosts,
        // never with instances per host, and a replica reads only its own hosts).
        let busy = self.busy_instances().await?;
        let snapshot_ms = started.elapsed().as_millis() as u64;
        let busy = &busy;
        let mut report = ReconcileReport::default();
        let results: Vec<Result<(String, ReconcileReport), OrchestratorError>> =
            futures::stream::iter(targets)
                .map(|t| async move {
                    let host = t.host_id.clone();
                    self.reconcile_host(t, busy).await.map(|r| (host, r))
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        let mut answered = Vec::new();
        for r in results {
            match r {
                Ok((host, r)) => {
                    if r.hosts_unreachable == 0 {
                        answered.push(host);
                    }
                    report.merge(r);
                }
                Err(e) => tracing::warn!(error = %e, "reconciling a host failed"),
            }
        }
        // Every host that answered, marked reachable in one statement (not one write
        // per host per pass).
        self.core.hosts().mark_reachable_many(&answered).await?;
        tracing::debug!(
            snapshot_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "reconcile timing"
        );
        Ok(report)
    }

    /// Instance ids with a queued or running job (one query for all hosts).
    async fn busy_instances(&self) -> Result<HashSet<String>, OrchestratorError> {
        Ok(self.core.jobs().instances_with_unfinished_jobs().await?)
    }

    async fn reconcile_host(
        &self,
        target: AgentTarget,
        busy: &HashSet<String>,
    ) -> Result<ReconcileReport, OrchestratorError> {
        let client = self.clients.for_target(&target)?;
        let instances: Vec<Instance> = self
            .core
            .instances()
            .list_by_host(&target.host_id)
            .await?
            .into_iter()
            .filter(|i| i.state != InstanceState::Deleted)
            .collect();
        let Some(list) = crate::ask_host(&self.core, &target.host_id, client.list_vms()).await?
        else {
            return Ok(ReconcileReport {
                hosts: 1,
                hosts_unreachable: 1,
                ..Default::default()
            });
        };
        let vms = list.vms;
        let mut report = ReconcileReport {
            hosts: 1,
            ..Default::default()
        };
        report.vms_seen = vms.len();
        let vms: HashMap<String, VmStatus> = vms.into_iter().map(|v| (v.id.clone(), v)).collect();
        let known: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();

        for inst in &instances {
            report.instances_checked += 1;
            if busy.contains(&inst.id) {
                report.skipped_busy += 1;
                continue;
            }
            if !matches!(inst.state, InstanceState::Running | InstanceState::Stopped) {
                continue;
            }
            match vms.get(&inst.id) {
                None => {
                    if self.handle_vanished(&client, inst).await? {
                        report.vanished += 1;
                    }
                }
                Some(vm) => self.check_vm(&client, inst, vm, &mut report).await?,
            }
        }

        for id in vms.keys().filter(|id| !known.contains(id.as_str())) {
            if self.flag_unknown(&target.host_id, id).await? {
                report
                    .unknown_vms
                    .push((target.host_id.clone(), id.clone()));
            }
        }
        Ok(report)
    }

    async fn check_vm(
        &self,
        client: &clawy_agent_client::AgentClient,
        inst: &Instance,
        vm: &VmStatus,
        report: &mut ReconcileReport,
    ) -> Result<(), OrchestratorError> {
        let vm_up = matches!(vm.state, VmState::Running | VmState::Paused);
        let power_repair = match inst.desired_power {
            DesiredPower::Running if !vm_up => Some((
                JobKind::Start,
                format!(
                    "the VM was {:?} on its host but should run; restarting it",
                    vm.state
                )
                .to_lowercase(),
            )),
            DesiredPower::Stopped if vm_up => Some((
                JobKind::Stop,
                "the VM was running on its host but should be stopped; stopping it".to_owned(),
            )),
            _ => None,
        };
        if let Some((kind, reason)) = power_repair {
            if self.still_idle(inst).await? {
                self.core
                    .jobs()
                    .enqueue(&Actor::reconciler(), &inst.id, kind, &reason)
                    .await?;
                match kind {
                    JobKind::Start => report.starts_enqueued += 1,
                    _ => report.stops_enqueued += 1,
                }
            }
            return Ok(());
        }
        // NET-5: the forwards on the host must be exactly the allocation's.
        let mut want: Vec<_> = inst.ssh_port_forward().into_iter().collect();
        let mut have = vm.spec.port_forwards.clone();
        want.sort();
        have.sort();
        if want != have && self.still_idle(inst).await? {
            let spec = self.core.instances().vm_spec(&inst.id).await?;
            client.ensure_vm(&inst.id, &spec).await?;
            self.core
                .audit()
                .record_instance(
                    &inst.owner_id,
                    &inst.id,
                    &Actor::reconciler(),
                    AuditAction::InstanceRepaired,
                    &format!("port forwards on the host were {have:?}; re-applied {want:?}"),
                )
                .await
                .map_err(|e| OrchestratorError::Step(e.to_string()))?;
            report.forwards_reapplied += 1;
        }
        Ok(())
    }

    /// The instance's VM is missing from its host. Returns true when it acted.
    async fn handle_vanished(
        &self,
        client: &clawy_agent_client::AgentClient,
        inst: &Instance,
    ) -> Result<bool, OrchestratorError> {
        if !self.still_idle(inst).await? {
            return Ok(false);
        }
        // Ask once more for this VM alone: a list is not proof of absence if a job
        // created it a moment later.
        match client.get_vm(&inst.id).await {
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let caller = Actor::reconciler();
        self.core
            .audit()
            .record_instance(
                &inst.owner_id,
                &inst.id,
                &caller,
                AuditAction::InstanceDriftDetected,
                &format!(
                    "the VM vanished from host {} while the instance was {}",
                    inst.host_name, inst.state
                ),
            )
            .await
            .map_err(|e| OrchestratorError::Step(e.to_string()))?;
        if inst.desired_power == DesiredPower::Running {
            self.core
                .jobs()
                .enqueue(
                    &caller,
                    &inst.id,
                    JobKind::Provision,
                    "defining the VM again from the base image with the same address and port (its disk contents were lost with it)",
                )
                .await?;
        }
        Ok(true)
    }

    /// Re-reads the instance: true when it is unchanged and has no unfinished job.
    async fn still_idle(&self, inst: &Instance) -> Result<bool, OrchestratorError> {
        if !self
            .core
            .jobs()
            .unfinished_for_instance(&inst.id)
            .await?
            .is_empty()
        {
            return Ok(false);
        }
        let now = self.core.instances().get_any(&inst.id).await?;
        Ok(now.state == inst.state && now.desired_power == inst.desired_power)
    }

    /// A VM the database does not know on this host: flag it once (operators read
    /// it in the audit log); never delete it. Returns true when newly flagged.
    async fn flag_unknown(&self, host_id: &str, vm_id: &str) -> Result<bool, OrchestratorError> {
        let key = (host_id.to_string(), vm_id.to_string());
        if self
            .flagged
            .lock()
            .map(|f| f.contains(&key))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        // An instance created after our snapshot is not drift.
        if let Ok(inst) = self.core.instances().get_any(vm_id).await {
            if inst.state != InstanceState::Deleted && inst.host_id == host_id {
                return Ok(false);
            }
        }
        let host = self.core.hosts().get(host_id).await?;
        self.core
            .audit()
            .record(
                None,
                &Actor::reconciler(),
                AuditAction::InstanceDriftDetected,
                &format!(
                    "host {} runs VM {vm_id}, which the database does not know as a live instance; left untouched for an operator",
                    host.name
                ),
            )
            .await
            .map_err(|e| OrchestratorError::Step(e.to_string()))?;
        tracing::warn!(host = %host.name, vm = %vm_id, "unknown VM on host (flagged, not deleted)");
        if let Ok(mut f) = self.flagged.lock() {
            f.insert(key);
        }
        Ok(true)
    }
}
