//! The durable job runner: N workers claim jobs (`core.jobs().claim`, one statement,
//! `SKIP LOCKED` on PostgreSQL), hold a lease they renew while the job runs, execute
//! the job's steps against the host's agent, and complete or fail the job through the
//! jobs API (which alone changes the instance's state and writes the events).
//!
//! Every step is idempotent and safe to re-run after a crash at any point: the agent's
//! VM id IS the instance id, so `ensure_vm` of a retried provision finds the VM it
//! already made instead of creating a second one; deleting an absent VM succeeds; the
//! allocations are released only in the transaction that completes the delete job,
//! after the runner confirmed the VM is gone. Crash-injection points sit before and
//! after each agent call and each completion (see `crash`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clawy_agent_client::{AgentClient, ClientError};
use clawy_core::Core;
use clawy_core::instances::InstanceState;
use clawy_core::jobs::{FailOutcome, Job, JobError, JobKind};
use clawy_core::metrics::HealthUpdate;
use clawy_proto::agent::{ErrorCode, VmState};
use tokio::sync::watch;

use crate::clients::AgentClients;
use crate::crash::crash_point;
use crate::dns_sync::DnsSync;
use crate::error::OrchestratorError;

/// Tuning of the runner; [`RunnerConfig::default`] suits production.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub workers: u32,
    /// Unique per process (`<hostname>-<pid>-<random>`); worker n appends `/n`.
    pub worker_prefix: String,
    pub lease: Duration,
    /// How often an idle worker looks for a job.
    pub idle_poll: Duration,
    /// Longest wait for a started VM to report `running`.
    pub wait_running: Duration,
    /// Interval of the `get_vm` poll while waiting.
    pub state_poll: Duration,
    /// How long after a (re)start the runner keeps probing the gateway so health
    /// shows as soon as the guest answers, not at the next metrics poll.
    pub watch_health: Duration,
    /// Pause before a job whose host answered `busy` runs again.
    pub busy_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            workers: 4,
            worker_prefix: default_worker_prefix(),
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_millis(500),
            wait_running: Duration::from_secs(120),
            state_poll: Duration::from_millis(250),
            watch_health: Duration::from_secs(180),
            busy_backoff: Duration::from_secs(5),
        }
    }
}

/// `<hostname>-<pid>-<8 hex>`: distinct for every process, also across restarts.
pub fn default_worker_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "clawy".into());
    let rnd = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rnd[..8])
}

/// Executes claimed jobs. Cheap to share (`Arc`).
pub struct JobRunner {
    core: Arc<Core>,
    clients: Arc<AgentClients>,
    config: RunnerConfig,
    /// The DNS step: best effort, never fails a job.
    dns: DnsSync,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What happened to one claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    Retrying,
    /// The host answered `busy`: queued again after `busy_backoff`, the attempt
    /// not counted.
    Deferred,
    GaveUp,
    /// Another worker holds the job now (our lease expired): we stopped touching it.
    LeaseLost,
}

impl JobRunner {
    pub fn new(core: Arc<Core>, clients: Arc<AgentClients>, config: RunnerConfig) -> Self {
        JobRunner {
            dns: DnsSync::new(core.clone()),
            core,
            clients,
            config,
        }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Spawns the workers; they stop when `shutdown` turns true (a running job is
    /// finished first, or left to its lease if the process dies).
    pub fn spawn(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|n| {
                let me = self.clone();
                let worker = format!("{}/{n}", self.config.worker_prefix);
                let shutdown = shutdown.clone();
                tokio::spawn(async move { me.worker_loop(worker, shutdown).await })
            })
            .collect()
    }

    async fn worker_loop(&self, worker: String, mut shutdown: watch::Receiver<bool>) {
        tracing::debug!(%worker, "job worker started");
        while !*shutdown.borrow() {
            match self.run_one(&worker).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(%worker, error = %e, "claiming a job failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::debug!(%worker, "job worker stopped");
    }

    /// Claims and runs at most one job as `worker`. `Ok(None)` when none was runnable.
    pub async fn run_one(
        &self,
        worker: &str,
    ) -> Result<Option<(Job, JobOutcome)>, OrchestratorError> {
        let Some(job) = self.core.jobs().claim(worker, self.config.lease).await? else {
            return Ok(None);
        };
        tracing::info!(job = %job.id, instance = %job.instance_id, kind = job.kind.as_str(), attempt = job.attempts, %worker, "running job");
        let outcome = self.run_claimed(&job, worker).await;
        Ok(Some((job, outcome)))
    }

    /// Runs a claimed job with lease renewal, then records the result.
    async fn run_claimed(&self, job: &Job, worker: &str) -> JobOutcome {
        let renew_every = self.config.lease / 3;
        let steps = self.execute(job, worker);
        tokio::pin!(steps);
        let result = loop {
            tokio::select! {
                r = &mut steps => break r,
                _ = tokio::time::sleep(renew_every) => {
                    match self.core.jobs().renew(job, worker, self.config.lease).await {
                        Ok(()) => {}
                        Err(JobError::LeaseLost) => {
                            tracing::warn!(job = %job.id, %worker, "lease lost; abandoning the job");
                            return JobOutcome::LeaseLost;
                        }
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "renewing the lease failed"),
                    }
                }
            }
        };
        match result {
            Ok(()) => JobOutcome::Succeeded,
            Err(OrchestratorError::Job(JobError::LeaseLost)) => JobOutcome::LeaseLost,
            Err(e) if e.is_busy() => {
                // Busy is not failure: the same step runs again after a pause,
                // without using up an attempt, and the instance never goes to
                // `error` for it.
                let msg = e.to_string();
                tracing::info!(job = %job.id, kind = job.kind.as_str(), error = %msg, "host busy; job deferred");
                match self
                    .core
                    .jobs()
                    .defer(job, worker, &msg, self.config.busy_backoff)
                    .await
                {
                    Ok(()) => JobOutcome::Deferred,
                    Err(JobError::LeaseLost) => JobOutcome::LeaseLost,
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "deferring the job failed");
                        JobOutcome::Deferred
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(job = %job.id, kind = job.kind.as_str(), error = %msg, "job attempt failed");
                match self.core.jobs().fail(job, worker, &msg).await {
                    Ok(FailOutcome::Retrying { .. }) => JobOutcome::Retrying,
                    Ok(FailOutcome::GaveUp) => JobOutcome::GaveUp,
                    Err(JobError::LeaseLost) => JobOutcome::LeaseLost,
                    Err(e) => {
                        // The lease expires and the job is claimed again: nothing lost.
                        tracing::error!(job = %job.id, error = %e, "recording the failure failed");
                        JobOutcome::Retrying
                    }
                }
            }
        }
    }

    async fn execute(&self, job: &Job, worker: &str) -> Result<(), OrchestratorError> {
        let instance = self.core.instances().get_any(&job.instance_id).await?;
        let client = self.clients.for_host(&instance.host_id).await?;
        let result = match job.kind {
            JobKind::Provision => self.provision(job, worker, &client).await,
            JobKind::Start => self.power_on(job, worker, &client, false).await,
            JobKind::Reboot => self.power_on(job, worker, &client, true).await,
            JobKind::Stop => self.stop(job, worker, &client).await,
            JobKind::Delete => self.delete(job, worker, &client).await,
        };
        // The runner learns about reachability too (the reconciler confirms later).
        match &result {
            Err(e) if e.is_unreachable() => {
                let _ = self
                    .core
                    .hosts()
                    .mark_contact(&instance.host_id, Err(&e.to_string()))
                    .await;
            }
            _ => {}
        }
        result
    }

    async fn pending_secrets(
        &self,
        id: &str,
    ) -> Result<Option<clawy_proto::agent::GuestSecrets>, OrchestratorError> {
        self.core
            .guest_secrets()
            .pending(id)
            .await
            .map_err(|e| OrchestratorError::Instance(e.into()))
    }

    async fn provision(
        &self,
        job: &Job,
        worker: &str,
        client: &AgentClient,
    ) -> Result<(), OrchestratorError> {
        let id = &job.instance_id;
        self.core
            .jobs()
            .progress(job, worker, InstanceState::Provisioning)
            .await?;
        let spec = self.core.instances().vm_spec(id).await?;
        // DATA-5: the owner's secrets, while undelivered, go to the agent beside the
        // spec (into the seed only); erased once the guest confirms them.
        let secrets = self.pending_secrets(id).await?;
        crash_point("provision:before_ensure");
        // Idempotent: a retry after a crash finds the VM made by the first attempt.
        client
            .ensure_vm_with_secrets(id, &spec, secrets.as_ref())
            .await?;
        crash_point("provision:after_ensure");
        client.start_vm(id).await?;
        crash_point("provision:after_start");
        self.wait_running(client, id).await?;
        crash_point("provision:before_dns");
        // The records go out as soon as the VM runs. Idempotent (an upsert);
        // a failure is left to the DNS pass and never blocks the instance.
        self.dns
            .sync_instance(&self.core.instances().get_any(id).await?)
            .await;
        crash_point("provision:before_complete");
        self.core.jobs().complete(job, worker).await?;
        crash_point("provision:after_complete");
        self.watch_health(client, id);
        Ok(())
    }

    async fn power_on(
        &self,
        job: &Job,
        worker: &str,
        client: &AgentClient,
        reboot: bool,
    ) -> Result<(), OrchestratorError> {
        let id = &job.instance_id;
        let r = if reboot {
            match client.reboot_vm(id).await {
                // A reboot of a stopped VM is a start.
                Err(e) if e.code() == Some(ErrorCode::Conflict) => client.start_vm(id).await,
                r => r,
            }
        } else {
            client.start_vm(id).await
        };
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                // The VM vanished from the host: define it again from the stored spec
                // (same id, same allocation), then start it.
                let spec = self.core.instances().vm_spec(id).await?;
                let secrets = self.pending_secrets(id).await?;
                client
                    .ensure_vm_with_secrets(id, &spec, secrets.as_ref())
                    .await?;
                client.start_vm(id).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.wait_running(client, id).await?;
        self.core.jobs().complete(job, worker).await?;
        self.watch_health(client, id);
        Ok(())
    }

    async fn stop(
        &self,
        job: &Job,
        worker: &str,
        client: &AgentClient,
    ) -> Result<(), OrchestratorError> {
        let id = &job.instance_id;
        let vm = client.stop_vm(id).await?;
        if matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(OrchestratorError::Step(format!(
                "the VM is still {:?} after the stop request",
                vm.state
            )));
        }
        self.core.jobs().complete(job, worker).await?;
        Ok(())
    }

    async fn delete(
        &self,
        job: &Job,
        worker: &str,
        client: &AgentClient,
    ) -> Result<(), OrchestratorError> {
        let id = &job.instance_id;
        self.core
            .jobs()
            .progress(job, worker, InstanceState::Deleting)
            .await?;
        crash_point("delete:before_agent_delete");
        // Deleting an absent VM succeeds (a retry after a crash).
        client.delete_vm(id).await?;
        crash_point("delete:after_agent_delete");
        // Confirm it is gone before the allocations are released (ISO-4: the IP and
        // port are never handed out while a VM may still use them).
        match client.get_vm(id).await {
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {}
            Ok(vm) => {
                return Err(OrchestratorError::Step(format!(
                    "the VM still exists after delete ({:?})",
                    vm.state
                )));
            }
            Err(e) => return Err(e.into()),
        }
        crash_point("delete:before_complete");
        self.core.jobs().complete(job, worker).await?;
        crash_point("delete:after_complete");
        // The VM is gone and the instance deleted: its records go too. A
        // crash before this line leaves `dns_state` unfinished and the DNS pass
        // removes them.
        self.dns
            .sync_instance(&self.core.instances().get_any(id).await?)
            .await;
        Ok(())
    }

    /// After a (re)start, probes the guest's gateway port through the agent until it
    /// answers (bounded), and records that health at once (ACCESS-1: a port probe
    /// from the host, nothing from inside the guest). The metrics poller keeps it
    /// current afterwards; this only removes the wait for its next cycle.
    fn watch_health(&self, client: &AgentClient, id: &str) {
        let (core, client, id) = (self.core.clone(), client.clone(), id.to_string());
        let until = Instant::now() + self.config.watch_health;
        let every = self.config.state_poll.max(Duration::from_millis(250));
        tokio::spawn(async move {
            while Instant::now() < until {
                match client.probe_vm(&id).await {
                    Ok(probe) if probe.tcp_ok => {
                        let checked_at = chrono::DateTime::parse_from_rfc3339(&probe.checked_at)
                            .map(|t| t.with_timezone(&chrono::Utc))
                            .unwrap_or_else(|_| core.now());
                        let health = HealthUpdate {
                            instance_id: id.clone(),
                            checked_at,
                            vm_state: Some("running".to_string()),
                            tcp_ok: Some(true),
                            http_status: probe.http_status,
                            latency_ms: Some(probe.latency_ms),
                            uptime_secs: None,
                            heartbeat: None,
                        };
                        if let Err(e) = core.metrics().record_health(&health).await {
                            tracing::warn!(instance = %id, error = %e, "recording health failed");
                        }
                        return;
                    }
                    // Not answering yet, or the VM was stopped meanwhile.
                    Ok(_) => {}
                    Err(e) if e.code() == Some(ErrorCode::NotFound) => return,
                    Err(_) => {}
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Polls the VM until the agent reports `running` (bounded).
    async fn wait_running(&self, client: &AgentClient, id: &str) -> Result<(), OrchestratorError> {
        let deadline = Instant::now() + self.config.wait_running;
        loop {
            let vm = client.get_vm(id).await?;
            match vm.state {
                VmState::Running => return Ok(()),
                VmState::Crashed => {
                    return Err(OrchestratorError::Step(
                        "the VM crashed while starting".to_string(),
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(OrchestratorError::Step(format!(
                    "the VM did not reach running within {} s (it is {:?})",
                    self.config.wait_running.as_secs(),
                    vm.state
                )));
            }
            tokio::time::sleep(self.config.state_poll).await;
        }
    }
}

/// Whether an agent error means "the agent could not be reached".
pub fn is_transport(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport(_))
}
