//! clawy-orchestrator: the control plane's background work and the code that talks to
//! host agents.
//!
//! - [`runner`]: the durable job runner (N workers, leases, idempotent steps);
//! - [`reconciler`]: desired vs. actual state on every host, repairs and flags;
//! - [`poller`]: metrics samples, gateway health, host capacity/reachability;
//! - [`leases`]: host leases sharing the reconciler's and poller's hosts among
//!   replicas on one PostgreSQL;
//! - [`registration`]: registering a host agent over the pinned connection;
//! - [`crash`]: crash-injection points for the crash tests;
//! - [`dns`], [`dns_sync`]: RFC 2136 publication of instance records and the pass
//!   that finishes and repairs it;
//!
//! `clawy server` starts all of it with [`Orchestrator::start`] and stops it with
//! [`OrchestratorHandle::shutdown`].

pub mod clients;
pub mod crash;
pub mod dns;
pub mod dns_sync;
pub mod error;
pub mod leases;
pub mod poller;
pub mod reconciler;
pub mod registration;
pub mod runner;

use std::sync::Arc;
use std::time::Duration;

use clawy_core::Core;
use tokio::sync::watch;

pub use error::OrchestratorError;
pub use poller::Poller;
pub use reconciler::Reconciler;
pub use runner::{JobRunner, RunnerConfig};

/// Bound of one reconciler/poller call to an agent: a host that accepts connections
/// but does not answer must not hold up a pass for the client's full timeout.
pub const HOST_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an agent call under [`HOST_CALL_TIMEOUT`]; a timeout is an error like any
/// other failed call (the host is then marked unreachable).
pub(crate) async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, clawy_agent_client::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(HOST_CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the agent did not answer within {} s",
            HOST_CALL_TIMEOUT.as_secs()
        )),
    }
}

/// A bounded call to a host's agent by a pass over the fleet (poller, reconciler).
/// A failure marks the host unreachable, so its instances show `unknown` with the
/// last contact, and is `None`: the pass moves on to the next host (a host that does
/// not answer is not proof of anything else).
pub(crate) async fn ask_host<T>(
    core: &Core,
    host_id: &str,
    call: impl std::future::Future<Output = Result<T, clawy_agent_client::ClientError>>,
) -> Result<Option<T>, OrchestratorError> {
    match bounded(call).await {
        Ok(answer) => Ok(Some(answer)),
        Err(e) => {
            core.hosts().mark_contact(host_id, Err(&e)).await?;
            Ok(None)
        }
    }
}

/// Runs `pass` on `task` every `interval` until `shutdown` turns true: the
/// reconciler's and the poller's loop. A failed pass is logged and the next one
/// comes on time.
fn every<T, R, F, Fut>(
    name: &'static str,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    task: Arc<T>,
    pass: F,
) -> tokio::task::JoinHandle<()>
where
    T: Send + Sync + 'static,
    R: std::fmt::Debug,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, OrchestratorError>> + Send,
{
    tokio::spawn(async move {
        while !*shutdown.borrow() {
            let started = std::time::Instant::now();
            match pass(task.clone()).await {
                Ok(r) => tracing::debug!(
                    ?r,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "{name} pass"
                ),
                Err(e) => tracing::warn!(error = %e, "{name} pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

/// Environment variable overriding the job lease in seconds.
pub const LEASE_ENV: &str = "CLAWY_JOB_LEASE_SECS";

/// Settings of the background tasks. [`OrchestratorConfig::from_core`] takes them
/// from the server config (`job_workers`, `reconcile_interval_secs`,
/// `metrics_interval_secs`).
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub runner: RunnerConfig,
    /// `None` = no reconciler task (tests drive passes by hand).
    pub reconcile_interval: Option<Duration>,
    /// `None` = no poller task.
    pub metrics_interval: Option<Duration>,
    /// Hosts talked to at once by the reconciler and the poller.
    pub host_concurrency: usize,
    /// Bound of every agent request.
    pub agent_timeout: Duration,
    /// Host leases across replicas (PostgreSQL only; `None` = this process polls and
    /// reconciles every host). From `CLAWY_HOST_LEASE_SECS`.
    pub host_lease: Option<Duration>,
}

impl OrchestratorConfig {
    /// `CLAWY_JOB_LEASE_SECS` (default 60) overrides the job lease: how long a job
    /// of a crashed process waits before another worker takes it. The crash tests
    /// shorten it; operators rarely need to.
    pub fn from_core(core: &Core) -> Self {
        let c = core.config();
        let lease = std::env::var(LEASE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s >= 1)
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60));
        OrchestratorConfig {
            runner: RunnerConfig {
                workers: c.job_workers,
                lease,
                ..RunnerConfig::default()
            },
            reconcile_interval: Some(Duration::from_secs(c.reconcile_interval_secs.max(1))),
            metrics_interval: Some(Duration::from_secs(c.metrics_interval_secs.max(1))),
            host_concurrency: 32,
            // Derived from the agent's operation budget, like every agent timeout.
            agent_timeout: Duration::from_secs(clawy_proto::agent::CLIENT_TIMEOUT_SECS),
            host_lease: match core.store().backend() {
                clawy_core::db::Backend::Postgres => leases::lease_from_env(),
                // One SQLite file has one writer: a single replica (DECISIONS).
                clawy_core::db::Backend::Sqlite => None,
            },
        }
    }
}

/// The running tasks.
pub struct OrchestratorHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub leases: Option<Arc<leases::HostLeases>>,
    pub runner: Arc<JobRunner>,
    pub reconciler: Arc<Reconciler>,
    pub poller: Arc<Poller>,
    pub dns: Arc<dns_sync::DnsSync>,
}

impl std::fmt::Debug for OrchestratorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorHandle")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl OrchestratorHandle {
    /// Asks every task to stop and waits for them (a running job step finishes
    /// first; a job cut short is taken up again after its lease expires).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(l) = &self.leases {
            if let Err(e) = l.release_all().await {
                tracing::warn!(error = %e, "releasing host leases failed (they expire)");
            }
        }
    }
}

pub struct Orchestrator;

impl Orchestrator {
    /// Spawns the job workers, the reconciler and the poller on the current tokio
    /// runtime.
    pub fn start(core: Arc<Core>, config: OrchestratorConfig) -> OrchestratorHandle {
        let (tx, rx) = watch::channel(false);
        let clients = Arc::new(clients::AgentClients::new(
            core.clone(),
            config.agent_timeout,
        ));
        let runner = Arc::new(JobRunner::new(
            core.clone(),
            clients.clone(),
            config.runner.clone(),
        ));
        let leases = config.host_lease.map(|lease| {
            Arc::new(leases::HostLeases::new(
                core.clone(),
                config.runner.worker_prefix.clone(),
                lease,
            ))
        });
        let mut reconciler =
            Reconciler::new(core.clone(), clients.clone(), config.host_concurrency);
        let dns = Arc::new(dns_sync::DnsSync::new(core.clone()));
        let mut poller = Poller::new(core, clients, config.host_concurrency);
        let mut tasks = runner.spawn(rx.clone());
        if let Some(l) = &leases {
            reconciler = reconciler.with_leases(l.clone());
            if let Some(i) = config.metrics_interval {
                poller = poller.with_leases(l.clone(), i);
            }
            let pass = |l: Arc<leases::HostLeases>| async move { l.refresh().await };
            tasks.push(every(
                "host leases",
                l.refresh_every(),
                rx.clone(),
                l.clone(),
                pass,
            ));
            tracing::info!(replica = %l.replica(), "host leases on");
        }
        let reconciler = Arc::new(reconciler);
        let poller = Arc::new(poller);
        if let Some(i) = config.reconcile_interval {
            let pass = |r: Arc<Reconciler>| async move { r.reconcile_once().await };
            tasks.push(every("reconcile", i, rx.clone(), reconciler.clone(), pass));
            // The DNS pass runs at the reconciler's pace; every 10th pass reads the
            // published records back from the server (drift repair).
            if dns.enabled() {
                let pass = |d: Arc<dns_sync::DnsSync>| async move { Ok(d.periodic_pass(10).await) };
                tasks.push(every("dns", i, rx.clone(), dns.clone(), pass));
            }
        }
        if let Some(i) = config.metrics_interval {
            let pass = |p: Arc<Poller>| async move { p.poll_once().await };
            tasks.push(every("metrics poll", i, rx, poller.clone(), pass));
        }
        tracing::info!(workers = config.runner.workers, worker_prefix = %config.runner.worker_prefix, "orchestrator started");
        OrchestratorHandle {
            shutdown: tx,
            tasks,
            leases,
            runner,
            reconciler,
            poller,
            dns,
        }
    }
}
