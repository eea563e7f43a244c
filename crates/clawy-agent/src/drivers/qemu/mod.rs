//! The `qemu` driver: one `qemu-system-x86_64` per VM (ISO-1), in its own process
//! group and running as the VM's own unprivileged uid (ISO-4), driven over QMP,
//! with a qcow2 overlay per VM (ISO-4) and a NoCloud seed.
//!
//! State dir layout, the only state the driver keeps:
//! `<state>/vms/<id>/{spec.json, power, overlay.qcow2, seed.iso, qmp.sock, qemu.pid,
//! qemu.log, uid}`. Everything is root's, the directory 0700, the files 0600: a
//! VM's QEMU runs as that VM's own uid (`uid`, from `qemu_uid_range`) once it has
//! opened its disk and seed, so it can open nothing here again (ISO-4).
//! `power` is the last power state *requested* (`defined`, `running`, `stopped`);
//! a dead QEMU while `power` says `running` is a crash. A guest that powers itself
//! off is not: QEMU runs with `-no-shutdown`, so it stays alive in status
//! `shutdown`; the driver records `stopped` and ends it when it sees that (at the
//! next status, start, stop or reboot). `spec.json` is written last when a VM is
//! created, so a directory without it is an unfinished creation that the next
//! ensure starts over.

pub mod accel;
pub mod disk;
pub mod process;
pub mod qmp;
pub mod seed;
pub mod stats;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawy_proto::agent::{VmSpec, VmState, VmStatus};
use rustix::process::Pid;

use self::accel::Accel;
use self::process::LaunchPlan;
use self::qmp::Qmp;
use super::{Driver, Machine, Op, TapOwner, TaskId, TaskState};
use crate::cloudinit::SeedFiles;
use crate::config::{AgentConfig, HostResources, QemuConfig};
use crate::error::AgentError;
use crate::network::Network;
use crate::spec::{SpecError, VmId};

const QMP_TIMEOUT: Duration = Duration::from_secs(3);

impl From<qmp::QmpError> for AgentError {
    fn from(e: qmp::QmpError) -> Self {
        AgentError::internal(e)
    }
}
impl From<process::ProcessError> for AgentError {
    fn from(e: process::ProcessError) -> Self {
        AgentError::internal(e)
    }
}
impl From<disk::DiskError> for AgentError {
    fn from(e: disk::DiskError) -> Self {
        AgentError::internal(e)
    }
}
impl From<seed::SeedError> for AgentError {
    fn from(e: seed::SeedError) -> Self {
        AgentError::internal(e)
    }
}

fn io_internal(what: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Internal(format!("{}: {e}", what.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    Defined,
    Running,
    Stopped,
}

impl Power {
    fn as_str(self) -> &'static str {
        match self {
            Power::Defined => "defined",
            Power::Running => "running",
            Power::Stopped => "stopped",
        }
    }
    fn parse(s: &str) -> Power {
        match s.trim() {
            "running" => Power::Running,
            "stopped" => Power::Stopped,
            _ => Power::Defined,
        }
    }
}

struct VmPaths {
    dir: PathBuf,
    spec: PathBuf,
    power: PathBuf,
    overlay: PathBuf,
    seed: PathBuf,
    seed_work: PathBuf,
    qmp: PathBuf,
    pid: PathBuf,
    cpus: PathBuf,
    uid: PathBuf,
    log: PathBuf,
}

pub struct QemuDriver {
    config: Arc<AgentConfig>,
    qemu: QemuConfig,
    accel: Accel,
    /// VMs get a NIC on the agent's tap only when the host network is configured
    /// (the executor creates and registers that tap).
    with_network: bool,
    /// Previous CPU sample per VM for CPU % (instant, ticks).
    cpu_samples: std::sync::Mutex<HashMap<String, (Instant, u64)>>,
    /// Held from choosing pinned CPUs until QEMU runs, so two VMs started at the
    /// same time never pick the same CPUs.
    start_lock: tokio::sync::Mutex<()>,
}

impl QemuDriver {
    /// Probe the accelerator and prepare the state dir. Running VMs from before an
    /// agent restart are simply found again in the state dir.
    pub async fn new(config: Arc<AgentConfig>, qemu: QemuConfig) -> Result<Self, AgentError> {
        let accel = accel::choose(qemu.accelerator, &qemu.binary)
            .await
            .map_err(AgentError::internal)?;
        if rustix::process::geteuid().is_root() {
            qemu.uid_range
                .check_unused(Path::new("/etc"))
                .map_err(|e| AgentError::Internal(e.to_string()))?;
        }
        let vms = config.state_dir.join("vms");
        std::fs::create_dir_all(&vms).map_err(io_internal(&vms))?;
        std::fs::set_permissions(&vms, std::fs::Permissions::from_mode(0o700))
            .map_err(io_internal(&vms))?;
        let driver = QemuDriver {
            with_network: config.network.is_some(),
            config,
            qemu,
            accel,
            cpu_samples: std::sync::Mutex::new(HashMap::new()),
            start_lock: tokio::sync::Mutex::new(()),
        };
        for (id, _) in driver.read_specs()? {
            let p = driver.paths(id.as_str());
            let alive = driver.live_pid(&p).is_some();
            tracing::info!(vm = %id, alive, power = driver.read_power(&p).as_str(), "re-adopted VM");
        }
        Ok(driver)
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    fn paths(&self, id: &str) -> VmPaths {
        let dir = self.config.state_dir.join("vms").join(id);
        VmPaths {
            spec: dir.join("spec.json"),
            power: dir.join("power"),
            overlay: dir.join("overlay.qcow2"),
            seed: dir.join("seed.iso"),
            seed_work: dir.join("seed"),
            qmp: dir.join("qmp.sock"),
            pid: dir.join("qemu.pid"),
            cpus: dir.join("cpus"),
            uid: dir.join("uid"),
            log: dir.join("qemu.log"),
            dir,
        }
    }

    fn read_spec(&self, p: &VmPaths) -> Result<Option<VmSpec>, AgentError> {
        match std::fs::read(&p.spec) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AgentError::Internal(format!("{}: {e}", p.spec.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_internal(&p.spec)(e)),
        }
    }

    fn load_spec(&self, id: &str) -> Result<(VmPaths, VmSpec), AgentError> {
        let p = self.paths(id);
        match self.read_spec(&p)? {
            Some(s) => Ok((p, s)),
            None => Err(AgentError::NotFound(id.to_string())),
        }
    }

    fn read_specs(&self) -> Result<Vec<(VmId, VmSpec)>, AgentError> {
        let vms = self.config.state_dir.join("vms");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&vms) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_internal(&vms)(e)),
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(id) = VmId::parse(&id) else {
                continue;
            };
            if let Some(spec) = self.read_spec(&self.paths(id.as_str()))? {
                out.push((id, spec));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn read_power(&self, p: &VmPaths) -> Power {
        std::fs::read_to_string(&p.power)
            .map(|s| Power::parse(&s))
            .unwrap_or(Power::Defined)
    }

    fn write_power(&self, p: &VmPaths, power: Power) -> Result<(), AgentError> {
        crate::tls::write_private_file(&p.power, power.as_str().as_bytes())
            .map_err(AgentError::internal)
    }

    fn live_pid(&self, p: &VmPaths) -> Option<Pid> {
        let pid = process::read_pid(&p.pid)?;
        process::is_our_qemu(pid, &p.qmp).then_some(pid)
    }

    fn base_image(&self, spec: &VmSpec) -> Result<PathBuf, AgentError> {
        // The name was validated ([a-z0-9._-], no leading '.'), so this join cannot
        // leave the images dir.
        let path = self.config.images_dir.join(&spec.base_image);
        if path.is_file() {
            Ok(path)
        } else {
            Err(AgentError::InvalidSpec(SpecError {
                field: "base_image".into(),
                message: format!("no base image named `{}` on this host", spec.base_image),
            }))
        }
    }

    /// The agent's tap for this VM (the executor created and registered it).
    fn tap(&self, id: &str) -> Option<String> {
        self.with_network.then(|| Network::tap_name(id))
    }

    async fn create(&self, spec: &VmSpec, seed: &SeedFiles, p: &VmPaths) -> Result<(), AgentError> {
        let base = self.base_image(spec)?;
        // A directory without spec.json is an interrupted creation: start over.
        if p.dir.exists() {
            std::fs::remove_dir_all(&p.dir).map_err(io_internal(&p.dir))?;
        }
        std::fs::create_dir_all(&p.dir).map_err(io_internal(&p.dir))?;
        std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_internal(&p.dir))?;
        disk::create_overlay(&base, &p.overlay, spec.disk_gib).await?;
        seed::build_iso(seed, &p.seed_work, &p.seed).await?;
        private_files(p)?;
        self.write_power(p, Power::Defined)?;
        self.write_spec(p, spec)
    }

    fn write_spec(&self, p: &VmPaths, spec: &VmSpec) -> Result<(), AgentError> {
        let json = serde_json::to_vec_pretty(spec).map_err(AgentError::internal)?;
        crate::tls::write_private_file(&p.spec, &json).map_err(AgentError::internal)
    }

    async fn update(
        &self,
        old: &VmSpec,
        spec: &VmSpec,
        seed: &SeedFiles,
        p: &VmPaths,
    ) -> Result<(), AgentError> {
        if old.base_image != spec.base_image {
            return Err(AgentError::Conflict(
                "base_image cannot change; delete the VM and create it again".into(),
            ));
        }
        if spec.disk_gib < old.disk_gib {
            return Err(AgentError::InvalidSpec(SpecError {
                field: "disk_gib".into(),
                message: format!("cannot shrink the disk from {} GiB", old.disk_gib),
            }));
        }
        let only_forwards = {
            let mut a = old.clone();
            a.port_forwards = spec.port_forwards.clone();
            &a == spec
        };
        if only_forwards {
            // NET-5: forwards change live (the executor applies them), the VM
            // keeps running.
            return self.write_spec(p, spec);
        }
        if self.live_pid(p).is_some() {
            return Err(AgentError::Conflict(
                "stop the VM before changing anything but port_forwards".into(),
            ));
        }
        disk::grow(&p.overlay, spec.disk_gib).await?;
        seed::build_iso(seed, &p.seed_work, &p.seed).await?;
        private_files(p)?;
        self.write_spec(p, spec)
    }

    async fn wait_exit(&self, pid: Pid, p: &VmPaths, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !process::is_our_qemu(pid, &p.qmp) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// QEMU's run status (`running`, `paused`, `shutdown`, …), if it answers QMP.
    /// The connection is closed on return (QMP serves one client at a time).
    async fn qmp_status(&self, p: &VmPaths) -> Option<qmp::StatusInfo> {
        let mut q = Qmp::connect(&p.qmp, QMP_TIMEOUT).await.ok()?;
        q.query_status().await.ok()
    }

    /// After `system_powerdown`: true once the guest powered off (QEMU then sits in
    /// status `shutdown` because of `-no-shutdown`, and is ended here) or QEMU is
    /// gone; false when `within` passes first.
    async fn wait_powered_off(&self, pid: Pid, p: &VmPaths, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !process::is_our_qemu(pid, &p.qmp) {
                return true;
            }
            if self
                .qmp_status(p)
                .await
                .is_some_and(|st| st.status == "shutdown")
            {
                self.force_stop(pid, p).await;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The guest powered itself off without a stop request: that is a stop, not a
    /// crash. Record it and end the idle QEMU.
    async fn settle_powered_off(&self, id: &str, pid: Pid, p: &VmPaths) {
        if let Err(e) = self.write_power(p, Power::Stopped) {
            tracing::warn!(vm = %id, error = %e, "recording the guest's power-off failed");
        }
        self.force_stop(pid, p).await;
        tracing::info!(vm = %id, "guest powered itself off; VM stopped");
    }

    /// Ask QEMU to quit, then kill it if it does not.
    async fn force_stop(&self, pid: Pid, p: &VmPaths) {
        if let Ok(mut q) = Qmp::connect(&p.qmp, QMP_TIMEOUT).await {
            let _ = q.quit().await;
        }
        if !self.wait_exit(pid, p, Duration::from_secs(5)).await {
            process::kill(pid);
            self.wait_exit(pid, p, Duration::from_secs(5)).await;
        }
    }

    fn status_of(
        &self,
        id: &str,
        spec: VmSpec,
        p: &VmPaths,
        qmp_state: Option<VmState>,
    ) -> VmStatus {
        let pid = self.live_pid(p);
        let state = match (pid, self.read_power(p)) {
            (Some(_), _) => qmp_state.unwrap_or(VmState::Running),
            (None, Power::Running) => VmState::Crashed,
            (None, Power::Stopped) => VmState::Stopped,
            (None, Power::Defined) => VmState::Defined,
        };
        let raw = pid.map(|p| p.as_raw_nonzero().get());
        let cpu_percent = raw.and_then(|raw| {
            let ticks = stats::cpu_ticks(raw)?;
            let now = Instant::now();
            let mut samples = self.cpu_samples.lock().ok()?;
            let prev = samples.insert(id.to_string(), (now, ticks));
            let (then, prev_ticks) = prev?;
            stats::cpu_percent(prev_ticks, ticks, now.duration_since(then).as_secs_f64())
        });
        let tap = self.tap(id);
        let net = tap.as_deref().and_then(stats::tap_bytes);
        VmStatus {
            id: id.to_string(),
            state,
            uptime_secs: raw.and_then(|_| stats::age_secs(&p.pid)),
            cpu_percent,
            memory_used_bytes: raw.and_then(stats::rss_bytes),
            disk_allocated_bytes: spec.disk_gib * 1024 * 1024 * 1024,
            disk_used_bytes: stats::allocated_bytes(&p.overlay),
            net_rx_bytes: net.map(|n| n.0),
            net_tx_bytes: net.map(|n| n.1),
            tap,
            health: None,
            heartbeat: None,
            secrets_delivered: false,
            spec,
        }
    }

    /// ISO-2 pinning: `vcpus` host CPUs that no other running VM is pinned to.
    /// CPU 0 stays for the host when there is more than one.
    fn choose_cpus(&self, id: &str, vcpus: usize, p: &VmPaths) -> Result<Vec<usize>, AgentError> {
        let cores = HostResources::detect(&self.config.state_dir).cpu_cores as usize;
        let pool: Vec<usize> = if cores > 1 {
            (1..cores).collect()
        } else {
            vec![0]
        };
        let mut used = std::collections::BTreeSet::new();
        for (other, _) in self.read_specs()? {
            let op = self.paths(other.as_str());
            if other.as_str() == id || self.live_pid(&op).is_none() {
                continue;
            }
            used.extend(read_cpus(&op.cpus));
        }
        let chosen: Vec<usize> = pool
            .into_iter()
            .filter(|c| !used.contains(c))
            .take(vcpus)
            .collect();
        if chosen.len() < vcpus {
            return Err(AgentError::Conflict(format!(
                "not enough free host CPUs to pin {vcpus} vCPUs"
            )));
        }
        let text: Vec<String> = chosen.iter().map(usize::to_string).collect();
        crate::tls::write_private_file(&p.cpus, text.join(",").as_bytes())
            .map_err(AgentError::internal)?;
        Ok(chosen)
    }

    /// ISO-4: the VM's own uid (= gid) for its QEMU, allocated on first start and
    /// kept in `uid`; the lowest id of `qemu_uid_range` no other VM here holds.
    /// `None` when the agent is not root (it cannot hand out ids then). Called
    /// under `start_lock`, so two starts never pick the same id.
    fn vm_uid(&self, p: &VmPaths) -> Result<Option<u32>, AgentError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let range = self.qemu.uid_range;
        let read = |path: &Path| -> Option<u32> {
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse()
                .ok()
                .filter(|id| range.contains(*id))
        };
        if let Some(id) = read(&p.uid) {
            return Ok(Some(id));
        }
        let mut used = std::collections::BTreeSet::new();
        for (other, _) in self.read_specs()? {
            used.extend(read(&self.paths(other.as_str()).uid));
        }
        let id = (range.start..=range.end)
            .find(|id| !used.contains(id))
            .ok_or_else(|| {
                AgentError::Conflict("every id of qemu_uid_range is taken by a VM".into())
            })?;
        crate::tls::write_private_file(&p.uid, id.to_string().as_bytes())
            .map_err(AgentError::internal)?;
        Ok(Some(id))
    }

    /// After `process::spawn`: waits until QEMU answers QMP (or dies), checks that
    /// it runs as the VM's uid and no longer as root (ISO-4), and only then lets
    /// the guest run. Any failure ends QEMU and says why.
    async fn wait_started(
        &self,
        id: &str,
        mut child: tokio::process::Child,
        p: &VmPaths,
        run_as: Option<u32>,
    ) -> Result<Pid, AgentError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let fail = |why: String| {
            AgentError::Internal(format!(
                "QEMU of VM `{id}` {why}: {}",
                process::log_tail(&p.log)
            ))
        };
        let mut qmp = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!("exited at start ({status})")));
            }
            if p.qmp.exists() {
                if let Ok(q) = Qmp::connect(&p.qmp, QMP_TIMEOUT).await {
                    break q;
                }
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(fail("did not answer QMP within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let pid = match process::read_pid(&p.pid) {
            Some(pid) if process::is_our_qemu(pid, &p.qmp) => pid,
            _ => {
                let _ = child.start_kill();
                return Err(fail(format!(
                    "wrote no usable pid file {}",
                    p.pid.display()
                )));
            }
        };
        if let Some(want) = run_as {
            let uids = process::uids(pid);
            if uids != Some([want; 4]) {
                let _ = child.start_kill();
                return Err(fail(format!(
                    "did not drop to uid {want} (has {uids:?}); not starting the guest"
                )));
            }
        }
        if let Err(e) = qmp.cont().await {
            let _ = child.start_kill();
            return Err(fail(format!("did not resume: {e}")));
        }
        drop(qmp);
        // Reap it when it ends (an agent restart leaves it to init instead).
        let vm = id.to_string();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                tracing::debug!(vm = %vm, %status, "QEMU exited");
            }
        });
        Ok(pid)
    }

    /// Running or paused for a live QEMU that answers QMP. A guest found powered
    /// off is settled as stopped (QEMU ended) and gives `None`.
    async fn qmp_state(&self, id: &str, p: &VmPaths) -> Option<VmState> {
        let pid = self.live_pid(p)?;
        let st = self.qmp_status(p).await?;
        if st.status == "shutdown" {
            self.settle_powered_off(id, pid, p).await;
            return None;
        }
        Some(if st.running {
            VmState::Running
        } else {
            VmState::Paused
        })
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accelerator(&self) -> &str {
        self.accel.as_str()
    }

    fn tap_owner(&self) -> TapOwner {
        TapOwner::Agent
    }

    async fn machine(&self) -> Result<Machine, AgentError> {
        let h = HostResources::detect(&self.config.state_dir);
        Ok(Machine {
            cpu_cores: h.cpu_cores,
            memory_mib: h.memory_mib,
            disk_gib: h.disk_gib,
        })
    }

    async fn specs(&self) -> Result<Vec<(VmId, VmSpec)>, AgentError> {
        self.read_specs()
    }

    async fn ensure_vm(
        &self,
        id: &VmId,
        spec: &VmSpec,
        seed: &SeedFiles,
    ) -> Result<Op, AgentError> {
        let p = self.paths(id.as_str());
        match self.read_spec(&p)? {
            None => self.create(spec, seed, &p).await?,
            Some(old) if &old == spec => {}
            Some(old) => self.update(&old, spec, seed, &p).await?,
        }
        Ok(Op::Done)
    }

    async fn start_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        let id = id.as_str();
        let (p, spec) = self.load_spec(id)?;
        if self.live_pid(&p).is_some() {
            // Already running; a paused VM is resumed.
            if self.qmp_state(id, &p).await == Some(VmState::Paused) {
                let mut q = Qmp::connect(&p.qmp, QMP_TIMEOUT).await?;
                q.cont().await?;
            }
            // Still alive unless the guest had powered itself off (then QEMU was
            // just ended and a fresh one starts below).
            if self.live_pid(&p).is_some() {
                self.write_power(&p, Power::Running)?;
                return Ok(Op::Done);
            }
        }
        let _starting = self.start_lock.lock().await;
        let tap = self.tap(id);
        // ISO-4: root-only disk and seed (VMs made by older agents included).
        private_files(&p)?;
        let run_as = self.vm_uid(&p)?;
        let plan = LaunchPlan {
            vm_id: id.to_string(),
            accel: self.accel,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            overlay: p.overlay.clone(),
            seed: p.seed.exists().then(|| p.seed.clone()),
            qmp_socket: p.qmp.clone(),
            pidfile: p.pid.clone(),
            nic: tap.map(|t| (t, spec.mac.to_ascii_lowercase())),
            cpus: if self.qemu.pin_cpus {
                Some(self.choose_cpus(id, spec.vcpus as usize, &p)?)
            } else {
                None
            },
            run_as,
            log: p.log.clone(),
        };
        let child = process::spawn(&self.qemu.binary, &plan)?;
        let pid = self.wait_started(id, child, &p, run_as).await?;
        self.write_power(&p, Power::Running)?;
        tracing::info!(vm = %id, pid = pid.as_raw_nonzero().get(), accel = self.accel.as_str(), "VM started");
        Ok(Op::Done)
    }

    async fn stop_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        let id = id.as_str();
        let (p, _) = self.load_spec(id)?;
        // Record the request first: QEMU going away from here on is not a crash.
        self.write_power(&p, Power::Stopped)?;
        let Some(pid) = self.live_pid(&p) else {
            return Ok(Op::Done);
        };
        let timeout = Duration::from_secs(self.config.stop_timeout_secs);
        let asked = match Qmp::connect(&p.qmp, QMP_TIMEOUT).await {
            Ok(mut q) => q.system_powerdown().await.is_ok(),
            Err(_) => false,
        };
        if asked && self.wait_powered_off(pid, &p, timeout).await {
            tracing::info!(vm = %id, "VM stopped gracefully: the guest powered off after the ACPI request");
        } else {
            tracing::info!(vm = %id, "VM ignored the ACPI request; forcing it off");
            self.force_stop(pid, &p).await;
        }
        Ok(Op::Done)
    }

    async fn reboot_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        let id = id.as_str();
        let (p, _) = self.load_spec(id)?;
        // A guest that powered itself off is settled as stopped first.
        self.qmp_state(id, &p).await;
        if self.live_pid(&p).is_none() {
            return Err(AgentError::Conflict(format!("VM `{id}` is not running")));
        }
        let mut q = Qmp::connect(&p.qmp, QMP_TIMEOUT).await?;
        q.system_reset().await?;
        Ok(Op::Done)
    }

    async fn delete_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        let id = id.as_str();
        let p = self.paths(id);
        if !p.dir.exists() {
            return Ok(Op::Done);
        }
        // The disk is destroyed anyway: no graceful shutdown, just end QEMU.
        self.write_power(&p, Power::Stopped)?;
        if let Some(pid) = self.live_pid(&p) {
            self.force_stop(pid, &p).await;
        }
        // ISO-4: overlay, seed and everything else of the VM go with the directory.
        std::fs::remove_dir_all(&p.dir).map_err(io_internal(&p.dir))?;
        if let Ok(mut s) = self.cpu_samples.lock() {
            s.remove(id);
        }
        tracing::info!(vm = %id, "VM deleted");
        Ok(Op::Done)
    }

    async fn vm_status(&self, id: &VmId) -> Result<VmStatus, AgentError> {
        let id = id.as_str();
        let (p, spec) = self.load_spec(id)?;
        let qmp_state = self.qmp_state(id, &p).await;
        Ok(self.status_of(id, spec, &p, qmp_state))
    }

    async fn list_vms(&self) -> Result<Vec<VmStatus>, AgentError> {
        let mut out = Vec::new();
        for (id, spec) in self.read_specs()? {
            let p = self.paths(id.as_str());
            let qmp_state = self.qmp_state(id.as_str(), &p).await;
            out.push(self.status_of(id.as_str(), spec, &p, qmp_state));
        }
        Ok(out)
    }

    async fn poll_task(&self, task: &TaskId) -> Result<TaskState, AgentError> {
        // Every qemu operation completes before it returns; no task ids exist.
        Err(AgentError::NotFound(format!("task {}", task.0)))
    }

    async fn forget_seed(&self, id: &VmId) -> Result<(), AgentError> {
        let (p, _) = self.load_spec(id.as_str())?;
        if self.live_pid(&p).is_some() {
            // QEMU holds the ISO open; the guest re-reads it at every boot.
            return Err(AgentError::Conflict(format!(
                "VM `{id}` is running; stop it before its seed is removed"
            )));
        }
        match seed::destroy_file(&p.seed, 0) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_internal(&p.seed)(e)),
        }
    }

    /// DATA-5: works on a running VM: the guest has read its seed; QEMU keeps the
    /// old ISO's inode open, and that inode is zeroed before the clean seed takes
    /// its name (the next start opens the clean one).
    async fn scrub_seed(&self, id: &VmId, clean: &SeedFiles) -> Result<(), AgentError> {
        let (p, _) = self.load_spec(id.as_str())?;
        seed::replace_iso(clean, &p.seed_work, &p.seed).await?;
        Ok(())
    }
}

/// ISO-4: the disk and seed readable by root alone (QEMU opens them before it
/// drops to the VM's uid; nothing else needs them).
fn private_files(p: &VmPaths) -> Result<(), AgentError> {
    for f in [&p.overlay, &p.seed] {
        match std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            // A forgotten seed is simply absent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f == &p.seed => {}
            Err(e) => return Err(io_internal(f)(e)),
        }
    }
    Ok(())
}

fn read_cpus(path: &Path) -> Vec<usize> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().split(',').filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default()
}

/// Pids of live QEMU processes of VMs in `state_dir` (for teardown checks).
pub fn running_vms(state_dir: &Path) -> Vec<(String, i32)> {
    let vms = state_dir.join("vms");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&vms) {
        for e in entries.flatten() {
            let dir = e.path();
            let (Some(id), Some(pid)) = (
                e.file_name().to_str().map(str::to_string),
                process::read_pid(&dir.join("qemu.pid")),
            ) else {
                continue;
            };
            if process::is_our_qemu(pid, &dir.join("qmp.sock")) {
                out.push((id, pid.as_raw_nonzero().get()));
            }
        }
    }
    out
}
