//! The only place that acts on the machine. API handlers parse requests into a
//! [`VmAction`] and hand it here; the executor validates, checks capacity (ISO-2),
//! serializes changes, drives the driver (polling its tasks) and adds the health
//! probe to status answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clawy_proto::agent::{HealthProbe, HostInfo, Resources, VmList, VmSpec, VmState, VmStatus};
use tokio::sync::Mutex;

use crate::config::AgentConfig;
use crate::drivers::{Driver, Op, TaskState};
use crate::error::AgentError;
use crate::probe;
use crate::spec::{validate_spec, validate_vm_id};

/// Everything the API can ask for. There is deliberately no variant that reads
/// guest files, runs commands or opens a console (ACCESS-2).
#[derive(Debug, Clone)]
pub enum VmAction {
    HostInfo,
    List,
    Get { id: String },
    Ensure { id: String, spec: Box<VmSpec> },
    Start { id: String },
    Stop { id: String },
    Reboot { id: String },
    Delete { id: String },
    Probe { id: String },
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

pub struct Executor {
    config: Arc<AgentConfig>,
    driver: Arc<dyn Driver>,
    /// Serializes ensure/delete so capacity and port checks see a stable host.
    placement: Mutex<()>,
    /// One lock per VM so power operations on a VM never interleave.
    vm_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    probe_timeout: Duration,
    task_timeout: Duration,
}

impl Executor {
    pub fn new(config: Arc<AgentConfig>, driver: Arc<dyn Driver>) -> Self {
        Executor {
            config,
            driver,
            placement: Mutex::new(()),
            vm_locks: std::sync::Mutex::new(HashMap::new()),
            probe_timeout: Duration::from_secs(2),
            task_timeout: Duration::from_secs(600),
        }
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    fn vm_lock(&self, id: &str) -> Arc<Mutex<()>> {
        match self.vm_locks.lock() {
            Ok(mut m) => m.entry(id.to_string()).or_default().clone(),
            // A poisoned map only means a panic elsewhere; a fresh lock is still safe
            // because the placement lock guards ensure/delete.
            Err(_) => Arc::new(Mutex::new(())),
        }
    }

    pub async fn execute(&self, action: VmAction) -> Result<Outcome, AgentError> {
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
                validate_vm_id(&id)?;
                let mut vm = self.driver.vm_status(&id).await?;
                self.add_probe(&mut vm).await;
                Ok(Outcome::Vm(Box::new(vm)))
            }
            VmAction::Probe { id } => {
                validate_vm_id(&id)?;
                let vm = self.driver.vm_status(&id).await?;
                Ok(Outcome::Probe(self.probe(&vm.spec).await))
            }
            VmAction::Ensure { id, spec } => self.ensure(&id, &spec).await,
            VmAction::Start { id } => self.power(&id, PowerOp::Start).await,
            VmAction::Stop { id } => self.power(&id, PowerOp::Stop).await,
            VmAction::Reboot { id } => self.power(&id, PowerOp::Reboot).await,
            VmAction::Delete { id } => {
                validate_vm_id(&id)?;
                let _placement = self.placement.lock().await;
                let lock = self.vm_lock(&id);
                let _vm = lock.lock().await;
                loop {
                    match self.driver.delete_vm(&id).await? {
                        Op::Done => break,
                        Op::Task(t) => self.wait_task(&t).await?,
                    }
                }
                Ok(Outcome::Deleted)
            }
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
        })
    }

    fn capacity(&self) -> Resources {
        Resources {
            vcpus: self.config.max_vcpus,
            memory_mib: self.config.max_memory_mib,
            disk_gib: self.config.max_disk_gib,
        }
    }

    async fn ensure(&self, id: &str, spec: &VmSpec) -> Result<Outcome, AgentError> {
        validate_vm_id(id)?;
        validate_spec(spec, self.config.network.as_ref())?;
        let _placement = self.placement.lock().await;
        let lock = self.vm_lock(id);
        let _vm = lock.lock().await;
        let specs = self.driver.specs().await?;
        let existing = specs.iter().find(|(i, _)| i == id).map(|(_, s)| s);
        if existing == Some(spec) {
            // Idempotent: the same spec again changes nothing.
            let mut vm = self.driver.vm_status(id).await?;
            self.add_probe(&mut vm).await;
            return Ok(Outcome::Vm(Box::new(vm)));
        }
        let others: Vec<&VmSpec> = specs
            .iter()
            .filter(|(i, _)| i != id)
            .map(|(_, s)| s)
            .collect();
        self.check_capacity(&others, spec)?;
        check_addresses(&specs, id, spec)?;
        loop {
            match self.driver.ensure_vm(id, spec).await? {
                Op::Done => break,
                Op::Task(t) => self.wait_task(&t).await?,
            }
        }
        let vm = self.driver.vm_status(id).await?;
        Ok(if existing.is_none() {
            Outcome::Created(Box::new(vm))
        } else {
            Outcome::Vm(Box::new(vm))
        })
    }

    /// ISO-2: the sum over all defined VMs (this one with its new spec) must fit
    /// the configured capacity; the error names the resource.
    fn check_capacity(&self, others: &[&VmSpec], spec: &VmSpec) -> Result<(), AgentError> {
        let used = allocated(others.iter().copied());
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

    async fn power(&self, id: &str, op: PowerOp) -> Result<Outcome, AgentError> {
        validate_vm_id(id)?;
        let lock = self.vm_lock(id);
        let _vm = lock.lock().await;
        loop {
            let r = match op {
                PowerOp::Start => self.driver.start_vm(id).await?,
                PowerOp::Stop => self.driver.stop_vm(id).await?,
                PowerOp::Reboot => self.driver.reboot_vm(id).await?,
            };
            match r {
                Op::Done => break,
                Op::Task(t) => self.wait_task(&t).await?,
            }
        }
        let vm = self.driver.vm_status(id).await?;
        Ok(Outcome::Vm(Box::new(vm)))
    }

    async fn wait_task(&self, task: &crate::drivers::TaskId) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + self.task_timeout;
        let mut delay = Duration::from_millis(100);
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
            if tokio::time::Instant::now() >= deadline {
                return Err(AgentError::Timeout);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn add_probe(&self, vm: &mut VmStatus) {
        if vm.state == VmState::Running && self.config.network.is_some() {
            vm.health = Some(self.probe(&vm.spec).await);
        }
    }

    async fn probe(&self, spec: &VmSpec) -> HealthProbe {
        probe::probe_gateway(&spec.private_ip, self.probe_timeout).await
    }
}

#[derive(Debug, Clone, Copy)]
enum PowerOp {
    Start,
    Stop,
    Reboot,
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
fn check_addresses(specs: &[(String, VmSpec)], id: &str, spec: &VmSpec) -> Result<(), AgentError> {
    for (other_id, other) in specs.iter().filter(|(i, _)| i != id) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::Env;
    use crate::drivers::{Machine, TaskId};
    use async_trait::async_trait;
    use std::sync::Mutex as StdMutex;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// A driver shaped like Proxmox VE: creating a VM is a clone task that must be
    /// polled, after which `ensure_vm` is called again and finishes the job.
    #[derive(Default)]
    struct TaskDriver {
        vms: StdMutex<HashMap<String, VmSpec>>,
        cloning: StdMutex<Option<(String, VmSpec, u32)>>,
        calls: StdMutex<Vec<String>>,
        fail_task: bool,
    }

    fn status(id: &str, spec: &VmSpec) -> VmStatus {
        VmStatus {
            id: id.into(),
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
        async fn machine(&self) -> Result<Machine, AgentError> {
            Ok(Machine {
                cpu_cores: 8,
                memory_mib: 16384,
                disk_gib: 500,
            })
        }
        async fn specs(&self) -> Result<Vec<(String, VmSpec)>, AgentError> {
            Ok(self.vms.lock().unwrap().clone().into_iter().collect())
        }
        async fn ensure_vm(&self, id: &str, spec: &VmSpec) -> Result<Op, AgentError> {
            self.calls.lock().unwrap().push(format!("ensure {id}"));
            if self.vms.lock().unwrap().contains_key(id) {
                return Ok(Op::Done);
            }
            let mut cloning = self.cloning.lock().unwrap();
            match cloning.take() {
                // The clone task finished: the VM exists now.
                Some((cid, s, _)) if cid == id => {
                    self.vms.lock().unwrap().insert(cid, s);
                    Ok(Op::Done)
                }
                _ => {
                    *cloning = Some((id.to_string(), spec.clone(), 0));
                    Ok(Op::Task(TaskId(format!("UPID:node:clone:{id}"))))
                }
            }
        }
        async fn start_vm(&self, _: &str) -> Result<Op, AgentError> {
            Ok(Op::Done)
        }
        async fn stop_vm(&self, _: &str) -> Result<Op, AgentError> {
            Ok(Op::Done)
        }
        async fn reboot_vm(&self, _: &str) -> Result<Op, AgentError> {
            Ok(Op::Done)
        }
        async fn delete_vm(&self, id: &str) -> Result<Op, AgentError> {
            self.vms.lock().unwrap().remove(id);
            Ok(Op::Done)
        }
        async fn vm_status(&self, id: &str) -> Result<VmStatus, AgentError> {
            let vms = self.vms.lock().unwrap();
            let spec = vms.get(id).ok_or_else(|| AgentError::NotFound(id.into()))?;
            Ok(status(id, spec))
        }
        async fn list_vms(&self) -> Result<Vec<VmStatus>, AgentError> {
            Ok(self
                .vms
                .lock()
                .unwrap()
                .iter()
                .map(|(i, s)| status(i, s))
                .collect())
        }
        async fn poll_task(&self, task: &TaskId) -> Result<TaskState, AgentError> {
            self.calls.lock().unwrap().push(format!("poll {}", task.0));
            if self.fail_task {
                return Ok(TaskState::Failed("clone failed: storage full".into()));
            }
            let mut cloning = self.cloning.lock().unwrap();
            let Some((_, _, polls)) = cloning.as_mut() else {
                return Ok(TaskState::Succeeded);
            };
            *polls += 1;
            Ok(if *polls < 2 {
                TaskState::Running
            } else {
                TaskState::Succeeded
            })
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
        }
    }

    #[tokio::test]
    async fn task_based_driver_is_polled_then_called_again() {
        let driver = Arc::new(TaskDriver::default());
        let ex = executor(
            driver.clone(),
            "max_vcpus = 8\nmax_memory_mib = 8192\nmax_disk_gib = 100\n",
        );
        let out = ex
            .execute(VmAction::Ensure {
                id: "vm-1".into(),
                spec: Box::new(spec("10.1.1.10", 2)),
            })
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Created(_)));
        let calls = driver.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "ensure vm-1",
                "poll UPID:node:clone:vm-1",
                "poll UPID:node:clone:vm-1",
                "ensure vm-1"
            ]
        );
    }

    #[tokio::test]
    async fn failed_task_is_an_error_and_creates_nothing() {
        let driver = Arc::new(TaskDriver {
            fail_task: true,
            ..TaskDriver::default()
        });
        let ex = executor(
            driver.clone(),
            "max_vcpus = 8\nmax_memory_mib = 8192\nmax_disk_gib = 100\n",
        );
        let err = ex
            .execute(VmAction::Ensure {
                id: "vm-1".into(),
                spec: Box::new(spec("10.1.1.10", 2)),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Internal(ref m) if m.contains("storage full")),
            "{err}"
        );
        assert!(driver.vms.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn iso2_capacity_counts_every_defined_vm() {
        let driver = Arc::new(TaskDriver::default());
        let ex = executor(
            driver.clone(),
            "max_vcpus = 3\nmax_memory_mib = 8192\nmax_disk_gib = 100\n",
        );
        let ensure = |id: &str, s: VmSpec| VmAction::Ensure {
            id: id.into(),
            spec: Box::new(s),
        };
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
        ex.execute(VmAction::Delete { id: "vm-1".into() })
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
}
