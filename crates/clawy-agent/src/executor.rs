//! The only place that acts on the machine. API handlers parse requests into a
//! [`VmAction`] and hand it here; the executor validates, checks capacity (ISO-2),
//! renders the cloud-init seed, owns the host network (bridge, taps, nftables),
//! drives the driver (polling its tasks), tells the host's HTTPS edge about its
//! VMs (when the agent runs one) and adds the health probe to status answers.
//!
//! Concurrency: one lock per VM, never a host-wide lock while a hypervisor task
//! runs. Capacity and address checks take the short `placement` lock only to
//! compare the spec with what the driver holds plus what concurrent ensures have
//! reserved, and to reserve; the driver then runs without it, so two creates (or a
//! create and a delete of different VMs) proceed in parallel while ISO-2 stays
//! exact.
//!
//! Timeouts: every request finishes within its budget, derived from
//! `clawy_proto::agent::OPERATION_TIMEOUT_SECS`. A hypervisor task still running
//! when the budget ends answers `busy`: the task goes on, and the same idempotent
//! call repeated later finds it (the driver resumes, never re-dispatches).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use clawy_proto::agent::{HealthProbe, HostInfo, Resources, VmList, VmSpec, VmState, VmStatus};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cloudinit::{self, SeedContext, SeedFiles};
use crate::config::AgentConfig;
use crate::drivers::{Driver, Op, TapOwner, TaskId, TaskState};
use crate::edge::Edge;
use crate::error::AgentError;
use crate::network::{MacAddr, Network};
use crate::probe;
use crate::spec::{VmId, validate_spec};

/// Everything the API can ask for. There is deliberately no variant that reads
/// guest files, runs commands or opens a console (ACCESS-2).
#[derive(Debug, Clone)]
pub enum VmAction {
    HostInfo,
    List,
    Get {
        id: VmId,
    },
    /// `secrets` (DATA-5) go into the seed only; `Debug` shows no value.
    Ensure {
        id: VmId,
        spec: Box<VmSpec>,
        secrets: Option<Box<clawy_proto::agent::GuestSecrets>>,
    },
    Start {
        id: VmId,
    },
    Stop {
        id: VmId,
    },
    Reboot {
        id: VmId,
    },
    Delete {
        id: VmId,
    },
    Probe {
        id: VmId,
    },
}

#[derive(Debug)]
pub enum Outcome {
    Host(Box<HostInfo>),
    Vms(VmList),
    Vm(Box<VmStatus>),
    /// `ensure` created the VM (HTTP 201).
    Created(Box<VmStatus>),
    Probe(HealthProbe),
    Deleted,
}

/// The part of the operation budget the executor may spend; the rest is for the
/// answer to reach the caller before the HTTP layer's own limit.
pub const EXECUTOR_BUDGET: Duration =
    Duration::from_secs(clawy_proto::agent::OPERATION_TIMEOUT_SECS - 10);

pub struct Executor {
    config: Arc<AgentConfig>,
    driver: Arc<dyn Driver>,
    network: Option<Arc<Network>>,
    /// The host's HTTPS edge (DATA-1, NET-4): told under the VM's lock when a VM
    /// is defined, started, stopped or deleted, so an answer about a deleted VM
    /// can never put its hostname back.
    edge: Option<Arc<Edge>>,
    /// Held only while comparing a spec with the host and reserving it (never
    /// across a hypervisor task).
    placement: Mutex<()>,
    /// Specs of ensures in flight, counted by capacity and address checks until
    /// the driver reports them (ISO-2 exact under concurrency).
    reserved: std::sync::Mutex<HashMap<VmId, VmSpec>>,
    /// One lock per VM so operations on a VM never interleave.
    vm_locks: std::sync::Mutex<HashMap<VmId, Arc<Mutex<()>>>>,
    probe_timeout: Duration,
    budget: Duration,
    /// The heartbeat receiver's state (tokens, latest heartbeats); `None` without a
    /// VM network (nothing for guests to send to).
    heartbeats: Option<Arc<crate::heartbeat_server::Hub>>,
}

/// Removes a reservation when the ensure that made it ends, however it ends.
struct Reservation<'a> {
    map: &'a std::sync::Mutex<HashMap<VmId, VmSpec>>,
    id: VmId,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.id);
        }
    }
}

impl Executor {
    pub fn new(config: Arc<AgentConfig>, driver: Arc<dyn Driver>) -> Self {
        Self::with_network(config, driver, None)
    }

    /// `network` is the host network the executor owns (None: VMs get no NIC).
    pub fn with_network(
        config: Arc<AgentConfig>,
        driver: Arc<dyn Driver>,
        network: Option<Arc<Network>>,
    ) -> Self {
        Executor {
            config,
            driver,
            network,
            edge: None,
            placement: Mutex::new(()),
            reserved: std::sync::Mutex::new(HashMap::new()),
            vm_locks: std::sync::Mutex::new(HashMap::new()),
            probe_timeout: Duration::from_secs(2),
            budget: EXECUTOR_BUDGET,
            heartbeats: None,
        }
    }

    /// Serve heartbeats with `hub`: seeds then carry a per-VM token (ACCESS-2).
    pub fn with_heartbeats(mut self, hub: Arc<crate::heartbeat_server::Hub>) -> Self {
        self.heartbeats = Some(hub);
        self
    }

    /// Shorter budget (tests of the `busy` answer).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The host's HTTPS edge the executor keeps informed.
    pub fn with_edge(mut self, edge: Arc<Edge>) -> Self {
        self.edge = Some(edge);
        self
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    pub fn edge(&self) -> Option<&Arc<Edge>> {
        self.edge.as_ref()
    }

    /// After an agent start: the edge's index from the VMs the hypervisor holds
    /// (running ones routed, the others get the "stopped" page).
    pub async fn rebuild_edge_index(&self) -> Result<usize, AgentError> {
        let Some(edge) = &self.edge else {
            return Ok(0);
        };
        let vms = self.driver.list_vms().await?;
        edge.rebuild(&vms).map_err(AgentError::internal)
    }

    /// A VM was defined, started or stopped (caller holds its lock).
    fn edge_update(&self, vm: &VmStatus) {
        let Some(edge) = &self.edge else {
            return;
        };
        if let Some((host, state)) = crate::edge::vm_edge_state(&vm.spec, vm.state) {
            // Checked at ensure (`check_edge_hostname`): only a hostname under
            // another apex recorded before the edge was configured lands here.
            if let Err(e) = edge.set_instance(&host, state) {
                tracing::warn!(vm = %vm.id, error = %e, "edge: not serving the VM's hostname");
            }
        }
    }

    /// With an edge, a VM's public hostname must be one it can serve: refused
    /// before anything is created, so the operator sees the mismatch of the
    /// control plane's `instances_domain` and the agent's `edge.instances_apex`.
    fn check_edge_hostname(&self, spec: &VmSpec) -> Result<(), AgentError> {
        let (Some(edge), Some(h)) = (&self.edge, &spec.public_hostname) else {
            return Ok(());
        };
        let host = clawy_proto::names::DnsName::parse(h, "public_hostname", 2).map_err(|e| {
            AgentError::InvalidSpec(crate::spec::SpecError {
                field: "public_hostname".into(),
                message: e.to_string(),
            })
        })?;
        if !edge.serves(&host) {
            return Err(AgentError::InvalidSpec(crate::spec::SpecError {
                field: "public_hostname".into(),
                message: format!(
                    "must be one label under this host's edge apex `{}`",
                    edge.settings().instances_apex
                ),
            }));
        }
        Ok(())
    }

    /// After an agent restart: registers the hypervisor taps of VMs that are
    /// running (they may have been restarted by the hypervisor meanwhile, e.g.
    /// `onboot` after a node reboot), so they can talk again.
    pub async fn reconcile_ports(&self) -> Result<(), AgentError> {
        if self.driver.tap_owner() != TapOwner::Hypervisor || self.network.is_none() {
            return Ok(());
        }
        for vm in self.driver.list_vms().await? {
            if vm.state == VmState::Running {
                let Ok(id) = VmId::parse(&vm.id) else {
                    continue;
                };
                if let Err(e) = self.register_port(&id, &vm.spec).await {
                    tracing::warn!(vm = %id, error = %e, "registering the VM's tap failed");
                }
            }
        }
        Ok(())
    }

    fn vm_lock(&self, id: &VmId) -> Arc<Mutex<()>> {
        match self.vm_locks.lock() {
            Ok(mut m) => m.entry(id.clone()).or_default().clone(),
            // A poisoned map only means a panic elsewhere; a fresh lock still keeps
            // capacity exact (reservations are checked under `placement`).
            Err(_) => Arc::new(Mutex::new(())),
        }
    }

    /// The VM's lock, waited for at most until `deadline` (then `busy`: another
    /// operation on this VM is still running).
    async fn lock_vm(
        &self,
        id: &VmId,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, AgentError> {
        let lock = self.vm_lock(id);
        tokio::time::timeout_at(deadline, lock.lock_owned())
            .await
            .map_err(|_| {
                AgentError::Busy(format!(
                    "another operation on VM `{id}` is still running; repeat the call"
                ))
            })
    }

    pub async fn execute(&self, action: VmAction) -> Result<Outcome, AgentError> {
        let deadline = Instant::now() + self.budget;
        match action {
            VmAction::HostInfo => Ok(Outcome::Host(Box::new(self.host_info().await?))),
            VmAction::List => {
                let mut vms = self.driver.list_vms().await?;
                // Probes run concurrently: one slow guest must not add its timeout
                // to every other VM's line.
                futures::future::join_all(vms.iter_mut().map(|vm| self.add_probe(vm))).await;
                Ok(Outcome::Vms(VmList { vms }))
            }
            VmAction::Get { id } => {
                let mut vm = self.driver.vm_status(&id).await?;
                self.add_probe(&mut vm).await;
                Ok(Outcome::Vm(Box::new(vm)))
            }
            VmAction::Probe { id } => {
                let vm = self.driver.vm_status(&id).await?;
                Ok(Outcome::Probe(self.probe(&vm.spec).await))
            }
            VmAction::Ensure { id, spec, secrets } => {
                self.ensure(&id, &spec, secrets.map(|s| *s), deadline).await
            }
            VmAction::Start { id } => self.power(&id, PowerOp::Start, deadline).await,
            VmAction::Stop { id } => self.power(&id, PowerOp::Stop, deadline).await,
            VmAction::Reboot { id } => self.power(&id, PowerOp::Reboot, deadline).await,
            VmAction::Delete { id } => self.delete(&id, deadline).await,
        }
    }

    async fn host_info(&self) -> Result<HostInfo, AgentError> {
        let machine = self.driver.machine().await?;
        let specs = self.driver.specs().await?;
        Ok(HostInfo {
            hostname: crate::tls::hostname(),
            location: self.config.location.clone(),
            driver: self.driver.name().to_string(),
            accelerator: self.driver.accelerator().to_string(),
            cpu_cores: machine.cpu_cores,
            memory_mib: machine.memory_mib,
            disk_gib: machine.disk_gib,
            capacity: self.capacity(),
            allocated: allocated(specs.iter().map(|(_, s)| s)),
            vm_count: specs.len() as u64,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            heartbeat_refusals: self
                .heartbeats
                .as_ref()
                .map(|h| h.refusals())
                .unwrap_or_default(),
            // The control plane allocates IPs and SSH ports from this (IPAM).
            network: self
                .config
                .network
                .as_ref()
                .map(|n| clawy_proto::agent::HostNetwork {
                    subnet: n.subnet.to_string(),
                    gateway: n.subnet.gateway().to_string(),
                    ssh_port_range: [n.ssh_port_range.start, n.ssh_port_range.end],
                }),
            edge: self.edge.as_ref().map(|e| e.report()),
        })
    }

    fn capacity(&self) -> Resources {
        Resources {
            vcpus: self.config.max_vcpus,
            memory_mib: self.config.max_memory_mib,
            disk_gib: self.config.max_disk_gib,
        }
    }

    /// Host-side facts for the seed.
    fn seed_context(&self, spec: &VmSpec) -> Result<SeedContext, AgentError> {
        let gateway = match &self.config.network {
            Some(n) => n.subnet.gateway(),
            None => cloudinit::default_gateway(spec).map_err(AgentError::internal)?,
        };
        Ok(SeedContext {
            gateway,
            prefix_len: 24,
            nameservers: self.config.nameservers.clone(),
            heartbeat: None,
            secrets: None,
        })
    }

    /// The VM's seed; with the owner's secrets (DATA-5) only while they are being
    /// delivered: they reach the rendered files and nothing else of the agent.
    fn seed(
        &self,
        id: &VmId,
        spec: &VmSpec,
        secrets: Option<clawy_proto::agent::GuestSecrets>,
        new_vm: bool,
    ) -> Result<SeedFiles, AgentError> {
        let mut ctx = self.seed_context(spec)?;
        ctx.heartbeat = self.heartbeat_target(id, spec, new_vm, secrets.is_some())?;
        ctx.secrets = secrets;
        cloudinit::render(id, spec, &ctx).map_err(AgentError::internal)
    }

    /// ACCESS-2: the VM's heartbeat token for its seed. A fresh one for a new VM
    /// (or one without a token); otherwise none: the guest keeps the configuration
    /// it applied at first boot (cloud-init writes files once per instance id) and
    /// the agent keeps only the token's hash, so a later seed (a spec change, the
    /// secret-free seed after delivery) cannot carry it. A later seed that carries
    /// secrets again restarts the delivery (DATA-5).
    fn heartbeat_target(
        &self,
        id: &VmId,
        spec: &VmSpec,
        new_vm: bool,
        with_secrets: bool,
    ) -> Result<Option<cloudinit::HeartbeatTarget>, AgentError> {
        let (Some(hub), Some(net)) = (&self.heartbeats, &self.config.network) else {
            return Ok(None);
        };
        let ip: Ipv4Addr = spec.private_ip.parse().map_err(AgentError::internal)?;
        if with_secrets {
            hub.reset_delivery(id.as_str())
                .map_err(AgentError::internal)?;
        }
        if new_vm || !hub.has(id.as_str()) {
            let token = hub.issue(id.as_str(), ip).map_err(AgentError::internal)?;
            return Ok(Some(cloudinit::HeartbeatTarget {
                port: net.heartbeat_port,
                token,
            }));
        }
        hub.rebind(id.as_str(), ip).map_err(AgentError::internal)?;
        Ok(None)
    }

    /// DATA-5: the guest reported its configuration applied. Every copy of the seed
    /// that held the owner's secrets is destroyed (qemu: overwritten, replaced by a
    /// secret-free seed with the same instance id for later boots; proxmox: its
    /// snippets and cloud-init drive removed), then the delivery is recorded and
    /// `VmStatus.secrets_delivered` says so. Idempotent; a failure is retried at
    /// the guest's next heartbeat.
    pub async fn deliver_secrets(&self, id: &str) {
        let Some(hub) = &self.heartbeats else {
            return;
        };
        let Ok(id) = VmId::parse(id) else {
            return;
        };
        let deadline = Instant::now() + self.budget;
        let result: Result<(), AgentError> = async {
            let _vm = self.lock_vm(&id, deadline).await?;
            if hub.delivered(id.as_str()) {
                return Ok(());
            }
            let spec = self.driver.vm_status(&id).await?.spec;
            let mut ctx = self.seed_context(&spec)?;
            ctx.heartbeat = None;
            ctx.secrets = None;
            let clean = cloudinit::render(&id, &spec, &ctx).map_err(AgentError::internal)?;
            self.driver.scrub_seed(&id, &clean).await?;
            hub.mark_delivered(id.as_str())
                .map_err(AgentError::internal)?;
            tracing::info!(vm = %id, "guest applied its configuration; seed with secrets destroyed");
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(vm = %id, error = %e, "destroying the delivered seed failed; retried at the next heartbeat");
        }
    }

    async fn ensure(
        &self,
        id: &VmId,
        spec: &VmSpec,
        secrets: Option<clawy_proto::agent::GuestSecrets>,
        deadline: Instant,
    ) -> Result<Outcome, AgentError> {
        validate_spec(spec, self.config.network.as_ref())?;
        self.check_edge_hostname(spec)?;
        if let Some(s) = &secrets {
            // DATA-5: formats checked again here; the error names the field only.
            s.validate().map_err(|e| {
                AgentError::InvalidSpec(crate::spec::SpecError {
                    field: format!("secrets.{}", e.field),
                    message: e.message.to_string(),
                })
            })?;
        }
        let _vm = self.lock_vm(id, deadline).await?;
        // Same spec and the VM is there: nothing to do. (A driver may record a
        // spec before its VM is complete, e.g. PVE during a clone: then the
        // driver's ensure finishes it.) Checked before the placement lock: it
        // may ask the hypervisor, and the placement lock is for quick checks only.
        let recorded = self.driver.specs().await?;
        if recorded.iter().any(|(i, s)| i == id && s == spec) {
            match self.driver.vm_status(id).await {
                Ok(_) => {
                    // Idempotent: nothing changes on the hypervisor; the network
                    // is made to match (an agent restart or an interrupted earlier
                    // call may have left it behind).
                    self.ensure_network(id, spec).await?;
                    let mut vm = self.driver.vm_status(id).await?;
                    self.edge_update(&vm);
                    self.add_probe(&mut vm).await;
                    return Ok(Outcome::Vm(Box::new(vm)));
                }
                Err(AgentError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let (existing, _reservation) = {
            let _placement = tokio::time::timeout_at(deadline, self.placement.lock())
                .await
                .map_err(|_| AgentError::Busy("the host is busy; repeat the call".into()))?;
            let specs = self.driver.specs().await?;
            let existing = specs.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone());
            // What the host holds plus what concurrent ensures reserved; a
            // reservation wins over the driver's view of the same VM.
            let mut all: HashMap<VmId, VmSpec> = specs.into_iter().collect();
            if let Ok(r) = self.reserved.lock() {
                all.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            all.remove(id);
            let others: Vec<(&VmId, &VmSpec)> = all.iter().collect();
            self.check_capacity(others.iter().map(|(_, s)| *s), spec)?;
            check_addresses(&others, spec)?;
            let mut r = self
                .reserved
                .lock()
                .map_err(|_| AgentError::internal("reservation map poisoned"))?;
            r.insert(id.clone(), spec.clone());
            (
                existing,
                Reservation {
                    map: &self.reserved,
                    id: id.clone(),
                },
            )
        };
        let seed = self.seed(id, spec, secrets, existing.is_none())?;
        loop {
            match self.driver.ensure_vm(id, spec, &seed).await? {
                Op::Done => break,
                Op::Task(t) => self.wait_task(&t, deadline).await?,
            }
        }
        self.ensure_network(id, spec).await?;
        let vm = self.driver.vm_status(id).await?;
        self.edge_update(&vm);
        Ok(if existing.is_none() {
            Outcome::Created(Box::new(vm))
        } else {
            Outcome::Vm(Box::new(vm))
        })
    }

    /// The VM's port forwards (NET-5), and its port on the bridge: the agent's
    /// own tap is created and registered here; a hypervisor's tap only exists
    /// while the VM runs and is registered after start.
    async fn ensure_network(&self, id: &VmId, spec: &VmSpec) -> Result<(), AgentError> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let (mac, ip) = addresses(spec)?;
        match self.driver.tap_owner() {
            TapOwner::Agent => {
                net.ensure_tap(id.as_str(), mac, ip).await?;
            }
            TapOwner::Hypervisor => {
                if self.driver.vm_status(id).await?.state == VmState::Running {
                    self.register_port(id, spec).await?;
                }
            }
        }
        net.set_port_forwards(id.as_str(), ip, &spec.port_forwards)
            .await?;
        Ok(())
    }

    /// Registers the hypervisor's tap of a running VM (ISO-3: until then the port
    /// can send nothing).
    async fn register_port(&self, id: &VmId, spec: &VmSpec) -> Result<(), AgentError> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let (mac, ip) = addresses(spec)?;
        let Some(tap) = self.driver.hypervisor_tap(id).await? else {
            return Err(AgentError::NotFound(id.to_string()));
        };
        net.register_hypervisor_tap(&tap, mac, ip).await?;
        Ok(())
    }

    /// ISO-2: the sum over all defined and reserved VMs (this one with its new
    /// spec) must fit the configured capacity; the error names the resource.
    fn check_capacity<'a>(
        &self,
        others: impl Iterator<Item = &'a VmSpec>,
        spec: &VmSpec,
    ) -> Result<(), AgentError> {
        let used = allocated(others);
        let cap = self.capacity();
        let checks = [
            ("vcpus", used.vcpus, u64::from(spec.vcpus), cap.vcpus),
            (
                "memory_mib",
                used.memory_mib,
                spec.memory_mib,
                cap.memory_mib,
            ),
            ("disk_gib", used.disk_gib, spec.disk_gib, cap.disk_gib),
        ];
        for (resource, used, wanted, cap) in checks {
            if used.saturating_add(wanted) > cap {
                return Err(AgentError::CapacityExceeded {
                    resource,
                    message: format!("{wanted} requested, {used} of {cap} already allocated"),
                });
            }
        }
        Ok(())
    }

    async fn delete(&self, id: &VmId, deadline: Instant) -> Result<Outcome, AgentError> {
        let _vm = self.lock_vm(id, deadline).await?;
        // The port's name and address, before the VM (and the hypervisor's
        // knowledge of its tap) is gone.
        let spec = self
            .driver
            .specs()
            .await?
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s);
        // DATA-1: the hostname leaves the edge first (ask refuses, the
        // certificate leaves storage and Caddy's memory). Before the VM goes, so
        // a retried delete still knows the hostname; an error fails the delete
        // and the control plane's retry runs it again (idempotent).
        if let (Some(edge), Some(s)) = (&self.edge, &spec) {
            if let Some((host, _)) = crate::edge::vm_edge_state(s, VmState::Stopped) {
                edge.forget_instance(&host)
                    .await
                    .map_err(|e| AgentError::internal(format!("edge: removing {host}: {e}")))?;
            }
        }
        let port = match self.driver.tap_owner() {
            TapOwner::Agent => Some(Network::tap_name(id.as_str())),
            TapOwner::Hypervisor => self.driver.hypervisor_tap(id).await?,
        };
        loop {
            match self.driver.delete_vm(id).await? {
                Op::Done => break,
                Op::Task(t) => self.wait_task(&t, deadline).await?,
            }
        }
        if let Some(net) = &self.network {
            let port = match (port, &spec) {
                (Some(p), _) => Some(p),
                // A retried delete after the VM went: find its port by address.
                (None, Some(s)) => match s.private_ip.parse::<Ipv4Addr>() {
                    Ok(ip) => net.port_of(ip).await?,
                    Err(_) => None,
                },
                (None, None) => None,
            };
            match port {
                Some(p) => net.remove_vm_port(id.as_str(), &p).await?,
                None => net.remove_vm(id.as_str()).await?,
            }
        }
        if let Some(hub) = &self.heartbeats {
            hub.forget(id.as_str());
        }
        Ok(Outcome::Deleted)
    }

    async fn power(
        &self,
        id: &VmId,
        op: PowerOp,
        deadline: Instant,
    ) -> Result<Outcome, AgentError> {
        let _vm = self.lock_vm(id, deadline).await?;
        if op == PowerOp::Start && self.driver.tap_owner() == TapOwner::Agent {
            // The agent's tap exists and is registered before the VM's first frame.
            if let (Some(_), Some((_, spec))) = (
                &self.network,
                self.driver
                    .specs()
                    .await?
                    .into_iter()
                    .find(|(i, _)| i == id),
            ) {
                self.ensure_network(id, &spec).await?;
            }
        }
        loop {
            let r = match op {
                PowerOp::Start => self.driver.start_vm(id).await?,
                PowerOp::Stop => self.driver.stop_vm(id).await?,
                PowerOp::Reboot => self.driver.reboot_vm(id).await?,
            };
            match r {
                Op::Done => break,
                Op::Task(t) => self.wait_task(&t, deadline).await?,
            }
        }
        let vm = self.driver.vm_status(id).await?;
        if matches!(op, PowerOp::Start | PowerOp::Reboot)
            && self.driver.tap_owner() == TapOwner::Hypervisor
            && vm.state == VmState::Running
        {
            // A (re)started PVE VM has a fresh tap: isolate and register it.
            self.register_port(id, &vm.spec).await?;
        }
        self.edge_update(&vm);
        Ok(Outcome::Vm(Box::new(vm)))
    }

    /// Polls a task until it ends or the request's budget does (`busy`: the task
    /// goes on and the repeated call picks it up).
    async fn wait_task(&self, task: &TaskId, deadline: Instant) -> Result<(), AgentError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.driver.poll_task(task).await? {
                TaskState::Succeeded => return Ok(()),
                TaskState::Failed(why) => {
                    return Err(AgentError::Internal(format!(
                        "task {} failed: {why}",
                        task.0
                    )));
                }
                TaskState::Running => {}
            }
            if Instant::now() + delay >= deadline {
                return Err(AgentError::Busy(format!(
                    "hypervisor task {} is still running; repeat the call",
                    task.0
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn add_probe(&self, vm: &mut VmStatus) {
        if vm.state == VmState::Running && self.config.network.is_some() {
            vm.health = Some(self.probe(&vm.spec).await);
        }
        if let Some(hub) = &self.heartbeats {
            vm.heartbeat = hub.latest(&vm.id);
            vm.secrets_delivered = hub.delivered(&vm.id);
        }
    }

    async fn probe(&self, spec: &VmSpec) -> HealthProbe {
        probe::probe_gateway(&spec.private_ip, self.probe_timeout).await
    }
}

#[async_trait::async_trait]
impl crate::heartbeat_server::Deliverer for Executor {
    async fn deliver(&self, id: &str) {
        self.deliver_secrets(id).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerOp {
    Start,
    Stop,
    Reboot,
}

fn addresses(spec: &VmSpec) -> Result<(MacAddr, Ipv4Addr), AgentError> {
    let mac: MacAddr = spec
        .mac
        .parse()
        .map_err(|e: crate::network::MacParseError| AgentError::internal(e))?;
    let ip: Ipv4Addr = spec.private_ip.parse().map_err(AgentError::internal)?;
    Ok((mac, ip))
}

fn allocated<'a>(specs: impl Iterator<Item = &'a VmSpec>) -> Resources {
    let mut r = Resources {
        vcpus: 0,
        memory_mib: 0,
        disk_gib: 0,
    };
    for s in specs {
        r.vcpus += u64::from(s.vcpus);
        r.memory_mib += s.memory_mib;
        r.disk_gib += s.disk_gib;
    }
    r
}

/// Another VM already holding the address, MAC or a host port is a conflict.
fn check_addresses(others: &[(&VmId, &VmSpec)], spec: &VmSpec) -> Result<(), AgentError> {
    for (other_id, other) in others {
        if other.private_ip == spec.private_ip {
            return Err(AgentError::Conflict(format!(
                "private_ip {} is used by VM `{other_id}`",
                spec.private_ip
            )));
        }
        if other.mac.eq_ignore_ascii_case(&spec.mac) {
            return Err(AgentError::Conflict(format!(
                "mac {} is used by VM `{other_id}`",
                spec.mac
            )));
        }
        for pf in &spec.port_forwards {
            if other
                .port_forwards
                .iter()
                .any(|o| o.protocol == pf.protocol && o.host_port == pf.host_port)
            {
                return Err(AgentError::Conflict(format!(
                    "host port {} is forwarded to VM `{other_id}`",
                    pf.host_port
                )));
            }
        }
    }
    Ok(())
}

impl From<crate::network::NetworkError> for AgentError {
    fn from(e: crate::network::NetworkError) -> Self {
        use crate::network::NetworkError as N;
        match e {
            N::AddressConflict { .. } | N::PortConflict { .. } => {
                AgentError::Conflict(e.to_string())
            }
            other => AgentError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::Env;
    use crate::drivers::Machine;
    use async_trait::async_trait;
    use std::sync::Mutex as StdMutex;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// A driver shaped like Proxmox VE: creating a VM is a clone task that must be
    /// polled (for `task_time`), after which `ensure_vm` is called again and
    /// finishes the job. Tasks of different VMs run side by side.
    #[derive(Default)]
    struct TaskDriver {
        vms: StdMutex<HashMap<VmId, VmSpec>>,
        /// VM → (spec, when its clone task ends).
        cloning: StdMutex<HashMap<VmId, (VmSpec, Instant)>>,
        calls: StdMutex<Vec<String>>,
        /// VMs started and not stopped since.
        running: StdMutex<std::collections::HashSet<VmId>>,
        fail_task: bool,
        task_time: Duration,
    }

    fn status(id: &VmId, spec: &VmSpec) -> VmStatus {
        VmStatus {
            id: id.to_string(),
            state: VmState::Defined,
            spec: spec.clone(),
            uptime_secs: None,
            cpu_percent: None,
            memory_used_bytes: None,
            disk_allocated_bytes: spec.disk_gib << 30,
            disk_used_bytes: None,
            net_rx_bytes: None,
            net_tx_bytes: None,
            tap: None,
            health: None,
            heartbeat: None,
            secrets_delivered: false,
        }
    }

    #[async_trait]
    impl Driver for TaskDriver {
        fn name(&self) -> &'static str {
            "proxmox"
        }
        fn accelerator(&self) -> &str {
            "kvm"
        }
        fn tap_owner(&self) -> TapOwner {
            TapOwner::Hypervisor
        }
        async fn machine(&self) -> Result<Machine, AgentError> {
            Ok(Machine {
                cpu_cores: 8,
                memory_mib: 16384,
                disk_gib: 500,
            })
        }
        async fn specs(&self) -> Result<Vec<(VmId, VmSpec)>, AgentError> {
            Ok(self.vms.lock().unwrap().clone().into_iter().collect())
        }
        async fn ensure_vm(
            &self,
            id: &VmId,
            spec: &VmSpec,
            _seed: &SeedFiles,
        ) -> Result<Op, AgentError> {
            self.calls.lock().unwrap().push(format!("ensure {id}"));
            if self.vms.lock().unwrap().contains_key(id) {
                return Ok(Op::Done);
            }
            let mut cloning = self.cloning.lock().unwrap();
            match cloning.get(id) {
                // The clone task finished: the VM exists now.
                Some((s, until)) if Instant::now() >= *until => {
                    let s = s.clone();
                    cloning.remove(id);
                    self.vms.lock().unwrap().insert(id.clone(), s);
                    Ok(Op::Done)
                }
                Some(_) => Ok(Op::Task(TaskId(format!("UPID:node:clone:{id}")))),
                None => {
                    cloning.insert(id.clone(), (spec.clone(), Instant::now() + self.task_time));
                    Ok(Op::Task(TaskId(format!("UPID:node:clone:{id}"))))
                }
            }
        }
        async fn start_vm(&self, id: &VmId) -> Result<Op, AgentError> {
            self.running.lock().unwrap().insert(id.clone());
            Ok(Op::Done)
        }
        async fn stop_vm(&self, id: &VmId) -> Result<Op, AgentError> {
            self.running.lock().unwrap().remove(id);
            Ok(Op::Done)
        }
        async fn reboot_vm(&self, _: &VmId) -> Result<Op, AgentError> {
            Ok(Op::Done)
        }
        async fn delete_vm(&self, id: &VmId) -> Result<Op, AgentError> {
            self.vms.lock().unwrap().remove(id);
            Ok(Op::Done)
        }
        async fn vm_status(&self, id: &VmId) -> Result<VmStatus, AgentError> {
            let vms = self.vms.lock().unwrap();
            let spec = vms
                .get(id)
                .ok_or_else(|| AgentError::NotFound(id.to_string()))?;
            let mut st = status(id, spec);
            if self.running.lock().unwrap().contains(id) {
                st.state = VmState::Running;
            }
            Ok(st)
        }
        async fn list_vms(&self) -> Result<Vec<VmStatus>, AgentError> {
            Ok(self
                .vms
                .lock()
                .unwrap()
                .iter()
                .map(|(i, s)| {
                    let mut st = status(i, s);
                    if self.running.lock().unwrap().contains(i) {
                        st.state = VmState::Running;
                    }
                    st
                })
                .collect())
        }
        async fn poll_task(&self, task: &TaskId) -> Result<TaskState, AgentError> {
            self.calls.lock().unwrap().push(format!("poll {}", task.0));
            if self.fail_task {
                let id = task.0.rsplit(':').next().unwrap();
                self.cloning
                    .lock()
                    .unwrap()
                    .remove(&VmId::parse(id).unwrap());
                return Ok(TaskState::Failed("clone failed: storage full".into()));
            }
            let id = VmId::parse(task.0.rsplit(':').next().unwrap()).unwrap();
            Ok(match self.cloning.lock().unwrap().get(&id) {
                Some((_, until)) if Instant::now() < *until => TaskState::Running,
                _ => TaskState::Succeeded,
            })
        }
        async fn forget_seed(&self, _: &VmId) -> Result<(), AgentError> {
            Ok(())
        }
    }

    fn executor(driver: Arc<TaskDriver>, extra: &str) -> Executor {
        let cfg = AgentConfig::from_toml(&format!("state_dir = \"/nonexistent\"\n{extra}"), &NoEnv)
            .unwrap();
        Executor::new(Arc::new(cfg), driver)
    }

    fn spec(ip: &str, vcpus: u32) -> VmSpec {
        VmSpec {
            vcpus,
            memory_mib: 512,
            disk_gib: 4,
            base_image: "debian-12".into(),
            mac: format!("52:54:00:00:00:{}", &ip[ip.len() - 2..]),
            private_ip: ip.into(),
            hostname: "h".into(),
            ssh_authorized_keys: vec![],
            user_data: None,
            port_forwards: vec![],
            public_hostname: None,
        }
    }

    fn id(s: &str) -> VmId {
        VmId::parse(s).unwrap()
    }

    fn ensure(i: &str, s: VmSpec) -> VmAction {
        VmAction::Ensure {
            id: id(i),
            spec: Box::new(s),
            secrets: None,
        }
    }

    const CAP: &str = "max_vcpus = 8\nmax_memory_mib = 8192\nmax_disk_gib = 100\n";

    #[tokio::test]
    async fn task_based_driver_is_polled_then_called_again() {
        let driver = Arc::new(TaskDriver {
            task_time: Duration::from_millis(120),
            ..TaskDriver::default()
        });
        let ex = executor(driver.clone(), CAP);
        let out = ex
            .execute(ensure("vm-1", spec("10.1.1.10", 2)))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Created(_)));
        let calls = driver.calls.lock().unwrap().clone();
        assert_eq!(calls.first().unwrap(), "ensure vm-1");
        assert_eq!(calls.last().unwrap(), "ensure vm-1");
        assert!(calls.iter().filter(|c| c.starts_with("poll")).count() >= 2);
    }

    #[tokio::test]
    async fn failed_task_is_an_error_and_creates_nothing() {
        let driver = Arc::new(TaskDriver {
            fail_task: true,
            ..TaskDriver::default()
        });
        let ex = executor(driver.clone(), CAP);
        let err = ex
            .execute(ensure("vm-1", spec("10.1.1.10", 2)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Internal(ref m) if m.contains("storage full")),
            "{err}"
        );
        assert!(driver.vms.lock().unwrap().is_empty());
        // The reservation went with the failed attempt.
        assert!(ex.reserved.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_task_outliving_the_budget_answers_busy_and_the_retry_finishes() {
        let driver = Arc::new(TaskDriver {
            task_time: Duration::from_millis(600),
            ..TaskDriver::default()
        });
        let ex = executor(driver.clone(), CAP).with_budget(Duration::from_millis(200));
        let err = ex
            .execute(ensure("vm-1", spec("10.1.1.10", 2)))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Busy(_)), "{err}");
        assert_eq!(err.code(), clawy_proto::agent::ErrorCode::Busy);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = ex
            .execute(ensure("vm-1", spec("10.1.1.10", 2)))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Created(_)), "{out:?}");
        // One clone was dispatched, not two.
        let dispatched = driver
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == "ensure vm-1")
            .count();
        assert!(dispatched >= 2);
        assert_eq!(driver.vms.lock().unwrap().len(), 1);
    }

    /// No host-wide lock while tasks run: 8 creates whose clone takes 300 ms each
    /// finish in far less than 8 × 300 ms.
    #[tokio::test]
    async fn creates_of_different_vms_run_in_parallel() {
        let driver = Arc::new(TaskDriver {
            task_time: Duration::from_millis(300),
            ..TaskDriver::default()
        });
        let ex = Arc::new(executor(
            driver.clone(),
            "max_vcpus = 64\nmax_memory_mib = 65536\nmax_disk_gib = 1000\n",
        ));
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (10..18)
            .map(|n| {
                let ex = ex.clone();
                tokio::spawn(async move {
                    ex.execute(ensure(&format!("vm-{n}"), spec(&format!("10.1.1.{n}"), 1)))
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap().unwrap(), Outcome::Created(_)));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1200), "took {took:?}");
        assert_eq!(driver.vms.lock().unwrap().len(), 8);
    }

    /// ISO-2 exact under concurrency: 12 concurrent creates of 2 vCPUs each on a
    /// host with 8 — exactly 4 succeed, the rest are refused, and nothing beyond
    /// the capacity is ever defined.
    #[tokio::test]
    async fn iso_2_capacity_is_exact_under_concurrent_creates() {
        let driver = Arc::new(TaskDriver {
            task_time: Duration::from_millis(200),
            ..TaskDriver::default()
        });
        let ex = Arc::new(executor(driver.clone(), CAP));
        let tasks: Vec<_> = (10..22)
            .map(|n| {
                let ex = ex.clone();
                tokio::spawn(async move {
                    ex.execute(ensure(&format!("vm-{n}"), spec(&format!("10.1.1.{n}"), 2)))
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(AgentError::CapacityExceeded {
                    resource: "vcpus", ..
                }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 4);
        let vcpus: u32 = driver.vms.lock().unwrap().values().map(|s| s.vcpus).sum();
        assert_eq!(vcpus, 8);
    }

    #[tokio::test]
    async fn iso_2_capacity_counts_every_defined_vm() {
        let driver = Arc::new(TaskDriver::default());
        let ex = executor(
            driver.clone(),
            "max_vcpus = 3\nmax_memory_mib = 8192\nmax_disk_gib = 100\n",
        );
        ex.execute(ensure("vm-1", spec("10.1.1.10", 2)))
            .await
            .unwrap();
        let err = ex
            .execute(ensure("vm-2", spec("10.1.1.11", 2)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                AgentError::CapacityExceeded {
                    resource: "vcpus",
                    ..
                }
            ),
            "{err}"
        );
        ex.execute(ensure("vm-2", spec("10.1.1.11", 1)))
            .await
            .unwrap();
        match ex.execute(VmAction::HostInfo).await.unwrap() {
            Outcome::Host(h) => {
                assert_eq!(h.allocated.vcpus, 3);
                assert_eq!(h.vm_count, 2);
                assert_eq!(h.driver, "proxmox");
            }
            other => panic!("{other:?}"),
        }
        ex.execute(VmAction::Delete { id: id("vm-1") })
            .await
            .unwrap();
        // Same address as another VM: conflict.
        let err = ex
            .execute(ensure("vm-3", spec("10.1.1.11", 2)))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Conflict(_)), "{err}");
        ex.execute(ensure("vm-3", spec("10.1.1.12", 2)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn host_info_reports_the_vm_network_for_control_plane_ipam() {
        let driver = Arc::new(TaskDriver::default());
        let ex = executor(
            driver.clone(),
            "[network]\nsubnet = \"10.77.3.0/24\"\nuplink = \"eth0\"\nssh_port_range = \"22100-22199\"\n",
        );
        match ex.execute(VmAction::HostInfo).await.unwrap() {
            Outcome::Host(h) => {
                let n = h.network.expect("network reported");
                assert_eq!(n.subnet, "10.77.3.0/24");
                assert_eq!(n.gateway, "10.77.3.1");
                assert_eq!(n.ssh_port_range, [22100, 22199]);
            }
            other => panic!("{other:?}"),
        }
        // Without a [network] section there is nothing to allocate from.
        let ex = executor(driver, "");
        match ex.execute(VmAction::HostInfo).await.unwrap() {
            Outcome::Host(h) => assert!(h.network.is_none()),
            other => panic!("{other:?}"),
        }
    }

    /// The edge of an agent whose Caddy is not running (its socket does not
    /// exist): the index, `ask`'s answers and HostInfo are the agent's alone.
    fn edge_without_caddy(dir: &std::path::Path) -> Arc<Edge> {
        let raw: crate::edge::EdgeSettingsRaw = toml::from_str(&format!(
            "instances_apex = \"claws.test\"\nhttps_listen = [\"127.0.0.1:1\"]\n\
             agent_http = \"127.0.0.1:0\"\nagent_dns = \"127.0.0.1:0\"\n\
             admin_socket = \"{}/admin.sock\"\nstorage_root = \"{}/storage\"\n\
             issuer = \"internal\"\n",
            dir.display(),
            dir.display()
        ))
        .unwrap();
        Arc::new(Edge::new(crate::edge::EdgeSettings::validate(raw).unwrap()))
    }

    fn edge_host(label: &str) -> crate::edge::DnsName {
        crate::edge::DnsName::parse(&format!("{label}.claws.test"), "host", 2).unwrap()
    }

    /// DATA-1 / NET-4: the executor keeps the edge's index in step with its VMs
    /// (running → routed to the private IP, stopped → "stopped" page, deleted →
    /// refused), refuses a hostname the edge cannot serve before creating
    /// anything, rebuilds the index from the hypervisor after a restart, and
    /// HostInfo says the edge is not working while Caddy does not run.
    #[tokio::test]
    async fn data_1_net_4_executor_keeps_the_edge_in_step_with_its_vms() {
        use crate::edge::HostStatus;
        let dir = tempfile::tempdir().unwrap();
        let edge = edge_without_caddy(dir.path());
        let driver = Arc::new(TaskDriver::default());
        let ex = executor(driver.clone(), "").with_edge(edge.clone());
        let a = edge_host("a-1");
        let mut s = spec("10.0.0.11", 1);
        s.public_hostname = Some(a.to_string());
        ex.execute(ensure("vm-a", s.clone())).await.unwrap();
        assert_eq!(
            edge.index().host_status(a.as_str()),
            HostStatus::Stopped,
            "defined"
        );
        ex.execute(VmAction::Start { id: id("vm-a") })
            .await
            .unwrap();
        assert_eq!(
            edge.index().host_status(a.as_str()),
            HostStatus::Running("10.0.0.11".parse().unwrap())
        );
        ex.execute(VmAction::Stop { id: id("vm-a") }).await.unwrap();
        assert_eq!(edge.index().host_status(a.as_str()), HostStatus::Stopped);
        ex.execute(VmAction::Start { id: id("vm-a") })
            .await
            .unwrap();

        // Another apex: refused, nothing created.
        let mut other = spec("10.0.0.12", 1);
        other.public_hostname = Some("b-2.elsewhere.test".into());
        let err = ex.execute(ensure("vm-b", other)).await.unwrap_err();
        assert!(
            matches!(&err, AgentError::InvalidSpec(e) if e.field == "public_hostname" && e.message.contains("claws.test")),
            "{err:?}"
        );
        assert!(driver.vms.lock().unwrap().get(&id("vm-b")).is_none());

        // HostInfo: an edge, not working, and why.
        let Outcome::Host(h) = ex.execute(VmAction::HostInfo).await.unwrap() else {
            panic!("host info");
        };
        let e = h.edge.unwrap();
        assert_eq!(e.instances_apex, "claws.test");
        assert!(!e.working);
        assert!(e.error.unwrap().contains("not been checked"));
        assert!(edge.ensure_caddy().await.is_err(), "no Caddy here");
        let Outcome::Host(h) = ex.execute(VmAction::HostInfo).await.unwrap() else {
            panic!("host info");
        };
        let e = h.edge.unwrap();
        assert!(!e.working);
        assert!(e.error.unwrap().contains("admin.sock"), "names the socket");

        // An agent restart: a fresh edge learns the VMs from the hypervisor.
        let fresh = edge_without_caddy(dir.path());
        let ex2 = executor(driver.clone(), "").with_edge(fresh.clone());
        assert_eq!(ex2.rebuild_edge_index().await.unwrap(), 1);
        assert_eq!(
            fresh.index().host_status(a.as_str()),
            HostStatus::Running("10.0.0.11".parse().unwrap())
        );

        // Delete: gone from the index (ask refuses); a retried delete is fine.
        ex.execute(VmAction::Delete { id: id("vm-a") })
            .await
            .unwrap();
        assert_eq!(edge.index().host_status(a.as_str()), HostStatus::Unknown);
        assert!(!edge.index().approves(a.as_str()));
        ex.execute(VmAction::Delete { id: id("vm-a") })
            .await
            .unwrap();

        // Without an edge: no edge in HostInfo, hostnames are not checked.
        let plain = executor(driver, "");
        let Outcome::Host(h) = plain.execute(VmAction::HostInfo).await.unwrap() else {
            panic!("host info");
        };
        assert!(h.edge.is_none());
    }
}
