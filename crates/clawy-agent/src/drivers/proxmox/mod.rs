//! The `proxmox` driver: Proxmox VE's REST API on the node the agent runs on.
//!
//! A VM is a clone of a template (linked by default), then configured, resized and
//! started; each step is a PVE task (UPID) or a synchronous call, and every step
//! is idempotent: `ensure_vm` looks at what PVE holds and does the next missing
//! step, so "call again until Done" converges after a crash at any point.
//!
//! Ownership. The VMIDs in `vmid_range` are the agent's to allocate; a VM is ours
//! when it carries the tags `clawy` and `clawy-id-<id>` on this node, or — between
//! clone and config, before tags exist — when the agent recorded that VMID for the
//! id *before* dispatching the clone and the VM's description names the id. A VM
//! without either is never adopted, changed or deleted.
//!
//! State dir: `<state>/proxmox/<id>/{vmid, upid, spec.json, power}`. `upid` is
//! written before the task is polled, so a restarted agent resumes the wait instead
//! of dispatching the step again.
//!
//! Cloud-init: `cicustom` snippets (`clawy-<id>-{user,network,meta}.yaml` in
//! `snippets_dir`, PVE storage `snippets_storage`); PVE builds the VM's cloud-init
//! drive from them at start. See docs/PROXMOX.md and DECISIONS.

pub mod client;
pub mod config;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use async_trait::async_trait;
use clawy_proto::agent::{VmSpec, VmState, VmStatus};
use reqwest::Method;
use serde_json::Value;

use self::client::{PveClient, PveError};
use self::config::ProxmoxConfig;
use super::{Driver, Machine, Op, TapOwner, TaskId, TaskState};
use crate::cloudinit::SeedFiles;
use crate::error::AgentError;
use crate::spec::{SpecError, VmId};

/// Tag every Clawy VM carries.
pub const TAG: &str = "clawy";

fn id_tag(id: &VmId) -> String {
    format!("clawy-id-{id}")
}

fn description(id: &VmId) -> String {
    format!("Clawy instance {id} (clawy-id-{id}); managed by clawy-agent, do not edit")
}

impl From<PveError> for AgentError {
    fn from(e: PveError) -> Self {
        match e {
            PveError::Invalid { field, message } => AgentError::InvalidSpec(SpecError {
                field: format!("pve.{field}"),
                message,
            }),
            PveError::Locked(m) => AgentError::Busy(m),
            PveError::Missing(m) => AgentError::NotFound(m),
            PveError::Exists(m) => AgentError::Conflict(m),
            PveError::Transient(m) | PveError::Fatal(m) => AgentError::Internal(m),
        }
    }
}

fn io(e: std::io::Error) -> AgentError {
    AgentError::internal(e)
}

/// What PVE says about one of our VMs.
#[derive(Debug, Clone)]
struct PveVm {
    vmid: u32,
    status: String,
    lock: Option<String>,
    tagged: bool,
}

pub struct ProxmoxDriver {
    cfg: ProxmoxConfig,
    state: PathBuf,
    api: PveClient,
    secret: String,
    stop_timeout_secs: u64,
}

impl ProxmoxDriver {
    pub async fn new(
        cfg: ProxmoxConfig,
        state_dir: &std::path::Path,
        stop_timeout_secs: u64,
    ) -> Result<Self, AgentError> {
        let secret = client::read_secret(&cfg.token_secret_file)?;
        let api = PveClient::new(&cfg, &secret)?;
        let state = state_dir.join("proxmox");
        std::fs::create_dir_all(&state).map_err(io)?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let d = ProxmoxDriver {
            cfg,
            state,
            api,
            secret,
            stop_timeout_secs,
        };
        // Fail at start-up, not at the first request, when PVE is unreachable or
        // the token or pin is wrong.
        d.api.get(&["version"], &[]).await?;
        Ok(d)
    }

    fn node(&self) -> &str {
        &self.cfg.node
    }

    fn dir(&self, id: &VmId) -> PathBuf {
        self.state.join(id.as_str())
    }

    fn read(&self, id: &VmId, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(id).join(name))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn write(&self, id: &VmId, name: &str, value: &str) -> Result<(), AgentError> {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        crate::tls::write_private_file(&dir.join(name), value.as_bytes())
            .map_err(AgentError::internal)
    }

    fn remove(&self, id: &VmId, name: &str) -> Result<(), AgentError> {
        match std::fs::remove_file(self.dir(id).join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    fn recorded_vmid(&self, id: &VmId) -> Option<u32> {
        self.read(id, "vmid")?.parse().ok()
    }

    fn spec_of(&self, id: &VmId) -> Option<VmSpec> {
        serde_json::from_str(&self.read(id, "spec.json")?).ok()
    }

    fn in_range(&self, vmid: u32) -> bool {
        (self.cfg.vmid_range.0..=self.cfg.vmid_range.1).contains(&vmid)
    }

    /// Every VM on this node (`GET /nodes/{node}/qemu`).
    async fn node_vms(&self) -> Result<Vec<Value>, AgentError> {
        let v = self.api.get(&["nodes", self.node(), "qemu"], &[]).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn vmid_of(v: &Value) -> Option<u32> {
        match v.get("vmid")? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn tags_of(v: &Value) -> Vec<String> {
        v.get("tags")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    /// Our VM for `id`: tagged with its id (in range), or the VMID we recorded for
    /// it before the clone if that VM's description names the id.
    async fn find(&self, id: &VmId) -> Result<Option<PveVm>, AgentError> {
        let tag = id_tag(id);
        let vms = self.node_vms().await?;
        for v in &vms {
            let Some(vmid) = Self::vmid_of(v) else {
                continue;
            };
            let tags = Self::tags_of(v);
            if self.in_range(vmid) && tags.iter().any(|t| t == TAG) && tags.contains(&tag) {
                return Ok(Some(self.pve_vm(vmid, v, true)));
            }
        }
        let Some(vmid) = self.recorded_vmid(id) else {
            return Ok(None);
        };
        let Some(v) = vms.iter().find(|v| Self::vmid_of(v) == Some(vmid)) else {
            return Ok(None);
        };
        // Untagged: ours only if its config names this id (a half-created clone).
        match self.config(vmid).await {
            Ok(conf) => {
                let desc = conf
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if desc.contains(&tag) {
                    Ok(Some(self.pve_vm(vmid, v, false)))
                } else {
                    Ok(None)
                }
            }
            Err(AgentError::NotFound(_)) => Ok(None),
            // The temporary config of a running clone may be locked: busy.
            Err(e) => Err(e),
        }
    }

    fn pve_vm(&self, vmid: u32, v: &Value, tagged: bool) -> PveVm {
        PveVm {
            vmid,
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            lock: v
                .get("lock")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
            tagged,
        }
    }

    async fn config(&self, vmid: u32) -> Result<Value, AgentError> {
        let vmid = vmid.to_string();
        Ok(self
            .api
            .get(&["nodes", self.node(), "qemu", &vmid, "config"], &[])
            .await?)
    }

    async fn vm_call(
        &self,
        method: Method,
        vmid: u32,
        rest: &[&str],
        params: &[(&str, String)],
    ) -> Result<Value, AgentError> {
        let vmid = vmid.to_string();
        let mut seg = vec!["nodes", self.node(), "qemu", vmid.as_str()];
        seg.extend_from_slice(rest);
        Ok(self.api.call(method, &seg, params).await?)
    }

    /// Records the task for `id` before anyone polls it, and hands it back.
    fn task(&self, id: &VmId, upid: &Value) -> Result<Op, AgentError> {
        match upid.as_str() {
            Some(u) if u.starts_with("UPID:") => {
                self.write(id, "upid", u)?;
                Ok(Op::Task(TaskId(u.to_string())))
            }
            // Synchronous (`null`): done already.
            _ => Ok(Op::Done),
        }
    }

    /// A task recorded for `id` and still running is waited for again (never
    /// dispatched twice); a finished one is forgotten. Its outcome is PVE's state,
    /// which the caller looks at next.
    async fn pending(&self, id: &VmId) -> Result<Option<Op>, AgentError> {
        let Some(upid) = self.read(id, "upid") else {
            return Ok(None);
        };
        match self.task_status(&upid).await? {
            TaskState::Running => Ok(Some(Op::Task(TaskId(upid)))),
            TaskState::Succeeded => {
                self.remove(id, "upid")?;
                Ok(None)
            }
            TaskState::Failed(why) => {
                self.remove(id, "upid")?;
                tracing::warn!(vm = %id, task = %upid, %why, "a recorded PVE task had failed");
                Ok(None)
            }
        }
    }

    async fn task_status(&self, upid: &str) -> Result<TaskState, AgentError> {
        let st = match self
            .api
            .get(&["nodes", self.node(), "tasks", upid, "status"], &[])
            .await
        {
            Ok(st) => st,
            // Lost (e.g. a node restart): PVE's state tells what happened.
            Err(PveError::Missing(_)) => return Ok(TaskState::Succeeded),
            Err(e) => return Err(e.into()),
        };
        if st.get("status").and_then(Value::as_str) == Some("running") {
            return Ok(TaskState::Running);
        }
        let exit = st
            .get("exitstatus")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if exit == "OK" || exit.starts_with("WARNINGS") {
            return Ok(TaskState::Succeeded);
        }
        let tail = self.task_log_tail(upid).await;
        Ok(TaskState::Failed(format!("{exit}{tail}")))
    }

    /// The task log's last lines, secrets redacted (for the failure message).
    async fn task_log_tail(&self, upid: &str) -> String {
        let Ok(log) = self
            .api
            .get(
                &["nodes", self.node(), "tasks", upid, "log"],
                &[("limit", "500".to_string())],
            )
            .await
        else {
            return String::new();
        };
        let lines: Vec<String> = log
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.get("t").and_then(Value::as_str))
                    .map(|t| client::redact(t, &self.secret))
                    .collect()
            })
            .unwrap_or_default();
        let n = lines.len();
        if n == 0 {
            return String::new();
        }
        format!(" (task log: {})", lines[n.saturating_sub(5)..].join(" | "))
    }

    fn snippet_names(id: &VmId) -> [(&'static str, String); 3] {
        [
            ("user", format!("clawy-{id}-user.yaml")),
            ("network", format!("clawy-{id}-network.yaml")),
            ("meta", format!("clawy-{id}-meta.yaml")),
        ]
    }

    /// The seed as snippet files (0600: they hold the user's keys and, later,
    /// secrets; PVE reads them as root).
    fn write_snippets(&self, id: &VmId, seed: &SeedFiles) -> Result<String, AgentError> {
        std::fs::create_dir_all(&self.cfg.snippets_dir).map_err(io)?;
        let mut parts = Vec::new();
        for (kind, name) in Self::snippet_names(id) {
            let content = match kind {
                "user" => &seed.user_data,
                "network" => &seed.network_config,
                _ => &seed.meta_data,
            };
            crate::tls::write_private_file(&self.cfg.snippets_dir.join(&name), content.as_bytes())
                .map_err(AgentError::internal)?;
            parts.push(format!(
                "{kind}={}:snippets/{name}",
                self.cfg.snippets_storage
            ));
        }
        Ok(parts.join(","))
    }

    fn remove_snippets(&self, id: &VmId) -> Result<(), AgentError> {
        for (_, name) in Self::snippet_names(id) {
            match std::fs::remove_file(self.cfg.snippets_dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    /// The lowest VMID in range that no VM in the cluster uses and that no other
    /// instance has recorded. PVE's `nextid` reserves nothing, so a race is
    /// caught at clone time ("already exists") and the next id is tried.
    async fn free_vmid(&self, skip: &[u32]) -> Result<u32, AgentError> {
        let all = self
            .api
            .get(&["cluster", "resources"], &[("type", "vm".to_string())])
            .await?;
        let mut used: std::collections::BTreeSet<u32> = all
            .as_array()
            .map(|a| a.iter().filter_map(Self::vmid_of).collect())
            .unwrap_or_default();
        used.extend(skip);
        if let Ok(entries) = std::fs::read_dir(&self.state) {
            for e in entries.flatten() {
                if let Some(v) = std::fs::read_to_string(e.path().join("vmid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    used.insert(v);
                }
            }
        }
        (self.cfg.vmid_range.0..=self.cfg.vmid_range.1)
            .find(|v| !used.contains(v))
            .ok_or_else(|| AgentError::CapacityExceeded {
                resource: "vmid",
                message: "every VMID of driver.proxmox.vmid_range is in use".into(),
            })
    }

    async fn clone_vm(&self, id: &VmId, spec: &VmSpec) -> Result<Op, AgentError> {
        let template = *self.cfg.templates.get(&spec.base_image).ok_or_else(|| {
            AgentError::InvalidSpec(SpecError {
                field: "base_image".into(),
                message: format!("no template for `{}` on this host", spec.base_image),
            })
        })?;
        let mut tried = Vec::new();
        loop {
            let vmid = self.free_vmid(&tried).await?;
            // Recorded before the clone: a crash after dispatch finds its VM again.
            self.write(id, "vmid", &vmid.to_string())?;
            let mut params = vec![
                ("newid", vmid.to_string()),
                ("name", format!("clawy-{id}")),
                ("description", description(id)),
                (
                    "full",
                    if self.cfg.full_clone { "1" } else { "0" }.to_string(),
                ),
            ];
            if let (true, Some(storage)) = (self.cfg.full_clone, &self.cfg.storage) {
                params.push(("storage", storage.clone()));
            }
            match self
                .vm_call(Method::POST, template, &["clone"], &params)
                .await
            {
                Ok(upid) => {
                    tracing::info!(vm = %id, vmid, template, "clone dispatched");
                    return self.task(id, &upid);
                }
                Err(AgentError::Conflict(m)) if tried.len() < 16 => {
                    tracing::info!(vm = %id, vmid, reason = %m, "VMID taken meanwhile; trying another");
                    tried.push(vmid);
                }
                Err(e) => {
                    self.remove(id, "vmid")?;
                    return Err(e);
                }
            }
        }
    }

    /// Config (sync PUT), then resize: the steps after the clone, each skipped
    /// when PVE already holds it.
    async fn configure(
        &self,
        id: &VmId,
        vm: &PveVm,
        spec: &VmSpec,
        seed: &SeedFiles,
    ) -> Result<Op, AgentError> {
        if let Some(lock) = &vm.lock {
            return Err(AgentError::Busy(format!("VM is locked ({lock})")));
        }
        let cicustom = self.write_snippets(id, seed)?;
        let conf = self.config(vm.vmid).await?;
        let want: Vec<(&str, String)> = vec![
            ("cores", spec.vcpus.to_string()),
            ("sockets", "1".into()),
            ("memory", spec.memory_mib.to_string()),
            // ISO-2: no ballooning.
            ("balloon", "0".into()),
            ("cpu", self.cfg.cpu.clone()),
            (
                "net0",
                format!(
                    "virtio={},bridge={}",
                    spec.mac.to_ascii_uppercase(),
                    self.cfg.bridge
                ),
            ),
            // ACCESS-2: no guest agent channel.
            ("agent", "0".into()),
            ("onboot", if self.cfg.onboot { "1" } else { "0" }.into()),
            ("tags", format!("{TAG};{}", id_tag(id))),
            ("cicustom", cicustom),
        ];
        let differs = want.iter().any(|(k, v)| !same(conf.get(*k), k, v));
        if differs || !vm.tagged {
            let mut params = want;
            if let Some(d) = conf.get("digest").and_then(Value::as_str) {
                params.push(("digest", d.to_string()));
            }
            self.vm_call(Method::PUT, vm.vmid, &["config"], &params)
                .await?;
        }
        // Grow the disk to the spec (never shrink).
        let size = conf
            .get(self.cfg.disk.as_str())
            .and_then(Value::as_str)
            .and_then(disk_size_gib);
        if size.is_some_and(|s| s < spec.disk_gib) {
            let upid = self
                .vm_call(
                    Method::PUT,
                    vm.vmid,
                    &["resize"],
                    &[
                        ("disk", self.cfg.disk.clone()),
                        ("size", format!("{}G", spec.disk_gib)),
                    ],
                )
                .await?;
            if let Op::Task(t) = self.task(id, &upid)? {
                return Ok(Op::Task(t));
            }
        }
        Ok(Op::Done)
    }

    fn power(&self, id: &VmId) -> String {
        self.read(id, "power").unwrap_or_else(|| "defined".into())
    }

    async fn status_of(&self, id: &VmId, spec: VmSpec, vmid: u32) -> Result<VmStatus, AgentError> {
        let st = self
            .vm_call(Method::GET, vmid, &["status", "current"], &[])
            .await?;
        let num = |k: &str| st.get(k).and_then(Value::as_f64);
        let running = st.get("status").and_then(Value::as_str) == Some("running");
        let paused = st.get("qmpstatus").and_then(Value::as_str) == Some("paused");
        let state = match (running, paused, self.power(id).as_str()) {
            (true, true, _) => VmState::Paused,
            (true, false, _) => VmState::Running,
            (false, _, "running") => VmState::Crashed,
            (false, _, "stopped") => VmState::Stopped,
            _ => VmState::Defined,
        };
        let as_u64 = |k: &str| num(k).map(|v| v.max(0.0) as u64);
        Ok(VmStatus {
            id: id.to_string(),
            state,
            uptime_secs: running.then(|| as_u64("uptime")).flatten(),
            cpu_percent: running.then(|| num("cpu").map(|c| c * 100.0)).flatten(),
            memory_used_bytes: running.then(|| as_u64("mem")).flatten(),
            disk_allocated_bytes: as_u64("maxdisk").unwrap_or(spec.disk_gib << 30),
            // PVE reports 0 without a guest agent (ACCESS-2: none): unknown.
            disk_used_bytes: None,
            net_rx_bytes: running.then(|| as_u64("netin")).flatten(),
            net_tx_bytes: running.then(|| as_u64("netout")).flatten(),
            tap: running.then(|| format!("tap{vmid}i0")),
            health: None,
            heartbeat: None,
            secrets_delivered: false,
            spec,
        })
    }

    async fn ours(&self, id: &VmId) -> Result<PveVm, AgentError> {
        if self.spec_of(id).is_none() {
            return Err(AgentError::NotFound(id.to_string()));
        }
        self.find(id)
            .await?
            .ok_or_else(|| AgentError::NotFound(id.to_string()))
    }
}

/// PVE echoes some values in its own spelling (numbers as numbers, MACs upper
/// case, tags sorted): compare loosely.
fn same(have: Option<&Value>, key: &str, want: &str) -> bool {
    let Some(h) = have else { return false };
    let h = match h {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match key {
        "net0" => h.eq_ignore_ascii_case(want),
        "tags" => {
            let mut a: Vec<&str> = h.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect();
            let mut b: Vec<&str> = want.split(';').collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
        _ => h == want,
    }
}

/// `local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2,size=2G` → 2.
fn disk_size_gib(drive: &str) -> Option<u64> {
    let size = drive.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "T" => n * 1024,
        "G" => n,
        "M" => n.div_ceil(1024),
        "K" => n.div_ceil(1024 * 1024),
        _ => return None,
    })
}

#[async_trait]
impl Driver for ProxmoxDriver {
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
        let st = self.api.get(&["nodes", self.node(), "status"], &[]).await?;
        let n = |a: &str, b: &str| st.get(a).and_then(|v| v.get(b)).and_then(Value::as_u64);
        Ok(Machine {
            cpu_cores: n("cpuinfo", "cpus").unwrap_or(1),
            memory_mib: n("memory", "total").unwrap_or(0) >> 20,
            disk_gib: n("rootfs", "total").unwrap_or(0) >> 30,
        })
    }

    /// Specs recorded here, including VMs still being created (they count for
    /// capacity from their first step).
    async fn specs(&self) -> Result<Vec<(VmId, VmSpec)>, AgentError> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.state) {
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(id) = VmId::parse(&name) else { continue };
                if let Some(spec) = self.spec_of(&id) {
                    out.push((id, spec));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn ensure_vm(
        &self,
        id: &VmId,
        spec: &VmSpec,
        seed: &SeedFiles,
    ) -> Result<Op, AgentError> {
        if let Some(op) = self.pending(id).await? {
            return Ok(op);
        }
        let old = self.spec_of(id);
        if let Some(old) = &old {
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
        }
        let vm = match self.find(id).await? {
            Some(vm) => vm,
            None => {
                // The spec is recorded first so capacity counts it while it is
                // being created; the first step is the clone.
                self.write(
                    id,
                    "spec.json",
                    &serde_json::to_string(spec).map_err(AgentError::internal)?,
                )?;
                return self.clone_vm(id, spec).await;
            }
        };
        if let Some(old) = &old {
            let mut a = old.clone();
            a.port_forwards = spec.port_forwards.clone();
            let only_forwards = &a == spec;
            if !only_forwards && vm.tagged && vm.status == "running" {
                return Err(AgentError::Conflict(
                    "stop the VM before changing anything but port_forwards".into(),
                ));
            }
        }
        self.write(
            id,
            "spec.json",
            &serde_json::to_string(spec).map_err(AgentError::internal)?,
        )?;
        self.configure(id, &vm, spec, seed).await
    }

    async fn start_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        if let Some(op) = self.pending(id).await? {
            return Ok(op);
        }
        let vm = self.ours(id).await?;
        if vm.status == "running" {
            self.write(id, "power", "running")?;
            return Ok(Op::Done);
        }
        if let Some(lock) = &vm.lock {
            return Err(AgentError::Busy(format!("VM is locked ({lock})")));
        }
        self.write(id, "power", "running")?;
        let upid = self
            .vm_call(Method::POST, vm.vmid, &["status", "start"], &[])
            .await?;
        self.task(id, &upid)
    }

    async fn stop_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        if let Some(op) = self.pending(id).await? {
            return Ok(op);
        }
        let vm = self.ours(id).await?;
        // Recorded first: the VM going away from here on is not a crash.
        self.write(id, "power", "stopped")?;
        if vm.status != "running" {
            return Ok(Op::Done);
        }
        // ACPI shutdown for stop_timeout_secs, then PVE stops it (forceStop).
        let upid = self
            .vm_call(
                Method::POST,
                vm.vmid,
                &["status", "shutdown"],
                &[
                    ("timeout", self.stop_timeout_secs.to_string()),
                    ("forceStop", "1".into()),
                ],
            )
            .await?;
        self.task(id, &upid)
    }

    async fn reboot_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        // Our reboot task: wait for it, then for the VM to run again (PVE's
        // reboot is a shutdown, then the node starts it with a fresh tap that the
        // executor registers once it runs).
        if let Some(upid) = self.read(id, "upid").filter(|u| u.contains(":qmreboot:")) {
            if self.task_status(&upid).await? == TaskState::Running {
                return Ok(Op::Task(TaskId(upid)));
            }
            if self.ours(id).await?.status == "running" {
                self.remove(id, "upid")?;
                return Ok(Op::Done);
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            return Ok(Op::Task(TaskId(upid)));
        }
        if let Some(op) = self.pending(id).await? {
            return Ok(op);
        }
        let vm = self.ours(id).await?;
        if vm.status != "running" {
            return Err(AgentError::Conflict(format!("VM `{id}` is not running")));
        }
        let upid = self
            .vm_call(
                Method::POST,
                vm.vmid,
                &["status", "reboot"],
                &[("timeout", self.stop_timeout_secs.to_string())],
            )
            .await?;
        self.task(id, &upid)
    }

    /// Stop, then destroy with purge and the unreferenced disks, then the
    /// snippets and the record. Each call does the next step.
    async fn delete_vm(&self, id: &VmId) -> Result<Op, AgentError> {
        if let Some(op) = self.pending(id).await? {
            return Ok(op);
        }
        if let Some(vm) = self.find(id).await? {
            if let Some(lock) = &vm.lock {
                if lock != "destroyed" {
                    return Err(AgentError::Busy(format!("VM is locked ({lock})")));
                }
            }
            self.write(id, "power", "stopped")?;
            let upid = if vm.status == "running" {
                // The disk goes anyway: no graceful shutdown.
                self.vm_call(Method::POST, vm.vmid, &["status", "stop"], &[])
                    .await?
            } else {
                self.vm_call(
                    Method::DELETE,
                    vm.vmid,
                    &[],
                    &[
                        ("purge", "1".into()),
                        ("destroy-unreferenced-disks", "1".into()),
                    ],
                )
                .await?
            };
            return match self.task(id, &upid)? {
                Op::Done => Ok(Op::Task(TaskId("again".into()))),
                t => Ok(t),
            };
        }
        self.remove_snippets(id)?;
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        tracing::info!(vm = %id, "VM deleted");
        Ok(Op::Done)
    }

    async fn vm_status(&self, id: &VmId) -> Result<VmStatus, AgentError> {
        let spec = self
            .spec_of(id)
            .ok_or_else(|| AgentError::NotFound(id.to_string()))?;
        let vm = self.ours(id).await?;
        self.status_of(id, spec, vm.vmid).await
    }

    async fn list_vms(&self) -> Result<Vec<VmStatus>, AgentError> {
        let mut out = Vec::new();
        for (id, spec) in self.specs().await? {
            if let Some(vm) = self.find(&id).await? {
                if vm.tagged {
                    out.push(self.status_of(&id, spec, vm.vmid).await?);
                }
            }
        }
        Ok(out)
    }

    async fn poll_task(&self, task: &TaskId) -> Result<TaskState, AgentError> {
        // A step that needs another call (delete: stop, then destroy).
        if task.0 == "again" {
            return Ok(TaskState::Succeeded);
        }
        match self.task_status(&task.0).await? {
            TaskState::Failed(why) => {
                // Locks that show only in the task (start of a VM still locked by
                // its clone) are busy, not failure.
                match client::classify_message(500, why) {
                    PveError::Locked(m) => Err(AgentError::Busy(m)),
                    other => Ok(TaskState::Failed(other.to_string())),
                }
            }
            s => Ok(s),
        }
    }

    async fn hypervisor_tap(&self, id: &VmId) -> Result<Option<String>, AgentError> {
        Ok(self.find(id).await?.map(|vm| format!("tap{}i0", vm.vmid)))
    }

    /// Removes the snippet files and the VM's cloud-init drive (PVE destroys the
    /// drive's volume with it), so the seed's secrets exist only in the guest.
    async fn forget_seed(&self, id: &VmId) -> Result<(), AgentError> {
        self.remove_snippets(id)?;
        let vm = self.ours(id).await?;
        let conf = self.config(vm.vmid).await?;
        let mut delete = vec!["cicustom".to_string()];
        if let Some(obj) = conf.as_object() {
            for (k, v) in obj {
                if v.as_str().is_some_and(|s| s.contains("cloudinit")) {
                    delete.push(k.clone());
                }
            }
        }
        self.vm_call(
            Method::PUT,
            vm.vmid,
            &["config"],
            &[("delete", delete.join(","))],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn disk_sizes_parse() {
        assert_eq!(
            disk_size_gib("local:101/vm-101-disk-0.qcow2,size=2G"),
            Some(2)
        );
        assert_eq!(disk_size_gib("local:x,iothread=1,size=2048M"), Some(2));
        assert_eq!(disk_size_gib("local:x,size=1T"), Some(1024));
        assert_eq!(disk_size_gib("local:x"), None);
    }

    #[test]
    fn pve_echoes_compare_loosely() {
        assert!(same(Some(&Value::from(2)), "cores", "2"));
        assert!(same(
            Some(&Value::from("virtio=52:54:00:AA:BB:CC,bridge=clawybr0")),
            "net0",
            "virtio=52:54:00:aa:bb:cc,bridge=clawybr0"
        ));
        assert!(same(
            Some(&Value::from("clawy-id-vm-1;clawy")),
            "tags",
            "clawy;clawy-id-vm-1"
        ));
        assert!(!same(None, "cores", "2"));
    }

    #[test]
    fn invalid_parameter_names_pve_field() {
        let e: AgentError = PveError::Invalid {
            field: "net0".into(),
            message: "invalid format".into(),
        }
        .into();
        assert_eq!(e.body().error.field.as_deref(), Some("pve.net0"));
        let e: AgentError = PveError::Locked("VM is locked (clone)".into()).into();
        assert!(matches!(e, AgentError::Busy(_)));
    }
}
