//! The simulated node: VM configs on disk, locks, tasks, storage and the QEMU
//! processes of running VMs. The API layer (`crate::api`) calls into it the way
//! PVE's API handlers call qemu-server.

pub mod cloudinit;
pub mod conf;
pub mod locks;
pub mod net;
pub mod qemu;
pub mod storage;
pub mod tasks;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use serde_json::{Map, Value, json};

use crate::clock::Clock;
use crate::config::SimConfig;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::schema::{Schema, formats};
use conf::VmConf;
use locks::LockTable;
use qemu::{QemuCaps, RunPaths};
use storage::Storage;
use tasks::{TaskCtx, TaskRegistry};

/// `strerror`-like text of an io error (PVE prints `$!`).
pub fn errno_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".into(),
        _ => e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    at: f64,
    used: u64,
    cpu: f64,
}

/// One statistics sample of a VM (pvestatd every 10 s).
#[derive(Debug, Clone, Copy, Default)]
pub struct RrdSample {
    pub time: u64,
    pub cpu: f64,
    pub maxcpu: f64,
    pub mem: f64,
    pub maxmem: f64,
    pub disk: f64,
    pub maxdisk: f64,
    pub netin: f64,
    pub netout: f64,
    pub diskread: f64,
    pub diskwrite: f64,
    raw_net: (u64, u64),
    raw_disk: (u64, u64),
}

/// One API request as the node saw it: parameter names, not values (they may be
/// secrets); PVE's own error texts in `errors` may quote a refused value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub params: Vec<String>,
    pub status: u16,
    /// PVE's 400 `errors` map, when parameter verification failed.
    pub errors: Option<crate::schema::Errors>,
}

pub struct Node {
    pub cfg: SimConfig,
    pub schema: &'static Schema,
    pub clock: Arc<dyn Clock>,
    pub locks: LockTable,
    pub tasks: TaskRegistry,
    pub storage: Storage,
    pub caps: QemuCaps,
    pub faults: Faults,
    conf_dir: PathBuf,
    pub run_dir: PathBuf,
    cpu_samples: Mutex<HashMap<i32, CpuSample>>,
    rrd: Mutex<HashMap<u32, VecDeque<RrdSample>>>,
    holds: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    requests: Mutex<VecDeque<RequestRecord>>,
    pub host_cpus: u64,
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    std::fs::rename(&tmp, path)
}

impl Node {
    pub async fn new(cfg: SimConfig, clock: Arc<dyn Clock>) -> Result<Arc<Node>, String> {
        let schema = crate::schema::schema().map_err(|e| e.to_string())?;
        let state = cfg.state_dir.clone();
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("{}: {e}", state.display()))?;
        let conf_dir = state.join("qemu-server");
        let run_dir = state.join("run");
        for d in [&conf_dir, &run_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let storage = Storage::new(&state, cfg.snippets_dir());
        storage
            .ensure_dirs()
            .map_err(|e| format!("creating storage dirs: {e}"))?;
        let tasks = TaskRegistry::new(state.join("tasks"), cfg.node.clone(), clock.clone())
            .map_err(|e| format!("tasks dir: {e}"))?;
        let caps = qemu::probe_caps(&cfg.qemu_binary, cfg.accelerator).await?;
        let host_cpus = cfg.node_cpus.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1)
        });
        let faults = Faults::new(&cfg.task_durations_ms);
        Ok(Arc::new(Node {
            schema,
            clock,
            locks: LockTable::default(),
            tasks,
            storage,
            caps,
            faults,
            conf_dir,
            run_dir,
            cpu_samples: Mutex::new(HashMap::new()),
            rrd: Mutex::new(HashMap::new()),
            holds: Mutex::new(Vec::new()),
            requests: Mutex::new(VecDeque::new()),
            host_cpus,
            cfg,
        }))
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// ISO-4: each VM's QEMU runs as its own uid/gid.
    pub fn uid_for(&self, vmid: u32) -> u32 {
        self.cfg.qemu_uid_base.saturating_add(vmid)
    }

    pub fn cfs_path(&self, vmid: u32) -> String {
        format!("nodes/{}/qemu-server/{vmid}.conf", self.cfg.node)
    }

    pub fn conf_path(&self, vmid: u32) -> PathBuf {
        self.conf_dir.join(format!("{vmid}.conf"))
    }

    pub fn config_exists(&self, vmid: u32) -> bool {
        self.conf_path(vmid).is_file()
    }

    /// `load_config`.
    pub fn load_config(&self, vmid: u32) -> Result<VmConf, ApiError> {
        match std::fs::read(self.conf_path(vmid)) {
            Ok(raw) => Ok(VmConf::parse(&raw)),
            Err(_) => Err(ApiError::Fail(format!(
                "Configuration file '{}' does not exist\n",
                self.cfs_path(vmid)
            ))),
        }
    }

    /// `write_config`.
    pub fn write_config(&self, vmid: u32, conf: &VmConf) -> Result<(), ApiError> {
        let raw = conf.render().map_err(ApiError::Fail)?;
        self.write_raw_config(vmid, &raw)
    }

    pub fn write_raw_config(&self, vmid: u32, raw: &str) -> Result<(), ApiError> {
        write_private(&self.conf_path(vmid), raw.as_bytes())
            .map_err(|e| ApiError::Fail(format!("writing {}: {e}\n", self.cfs_path(vmid))))
    }

    pub fn remove_config(&self, vmid: u32) {
        let _ = std::fs::remove_file(self.conf_path(vmid));
    }

    /// All VMIDs with a config on this node.
    pub fn vmids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = std::fs::read_dir(&self.conf_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(".conf").and_then(|s| s.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    pub fn run_paths(&self, vmid: u32) -> RunPaths {
        RunPaths::new(&self.run_dir, vmid)
    }

    pub fn running_pid(&self, vmid: u32) -> Option<i32> {
        qemu::running_pid(&self.run_paths(vmid))
    }

    /// `check_running`: also asserts the config exists on this node.
    pub fn check_running(&self, vmid: u32) -> Result<Option<i32>, ApiError> {
        if !self.config_exists(vmid) {
            return Err(ApiError::Fail(format!(
                "unable to find configuration file for VM {vmid} on node '{}'\n",
                self.cfg.node
            )));
        }
        Ok(self.running_pid(vmid))
    }

    pub fn lock_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.lock_wait_ms)
    }

    pub fn clone_lock_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.clone_lock_wait_ms)
    }

    /// `random_ether_addr($dc->{mac_prefix})`: unicast, locally administered,
    /// then the prefix.
    pub fn random_mac(&self) -> String {
        let mut b = [0u8; 6];
        rand::thread_rng().fill_bytes(&mut b);
        b[0] = (b[0] & 0xfe) | 2;
        let full = b
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let prefix = self.cfg.mac_prefix.to_ascii_uppercase();
        format!("{prefix}{}", &full[prefix.len().min(full.len())..])
    }

    /// `parse_net` + `print_net`: adds a MAC when missing (or always, `new_mac`).
    pub fn normalize_net(&self, value: &str, new_mac: bool) -> Result<String, String> {
        let fmt = self
            .schema
            .config_key_format("net0")
            .ok_or("no net format")?;
        let mut n = self.schema.parse_property_string(fmt, value, "", None)?;
        if new_mac || !n.contains_key("macaddr") {
            n.insert("macaddr".into(), self.random_mac());
        }
        self.schema.print_property_string(fmt, &n, &[])
    }

    pub fn parse_drive(&self, key: &str, value: &str) -> Option<BTreeMap<String, String>> {
        let fmt = self.schema.config_key_format(key)?;
        self.schema
            .parse_property_string(fmt, value, key, None)
            .ok()
    }

    pub fn print_drive(&self, key: &str, d: &BTreeMap<String, String>) -> Result<String, String> {
        let fmt = self
            .schema
            .config_key_format(key)
            .ok_or("no drive format")?;
        self.schema.print_property_string(fmt, d, &[])
    }

    /// `drive_is_cloudinit`.
    pub fn is_cloudinit_volume(file: &str) -> bool {
        let name = file.rsplit(['/', ':']).next().unwrap_or("");
        let stem = name
            .strip_suffix(".qcow2")
            .or_else(|| name.strip_suffix(".raw"))
            .or_else(|| name.strip_suffix(".vmdk"))
            .unwrap_or(name);
        stem == "cloudinit"
            || stem
                .strip_prefix("vm-")
                .and_then(|s| s.strip_suffix("-cloudinit"))
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    }

    /// Size in bytes of the boot disk as recorded in the config (`bootdisk_size`).
    pub fn bootdisk_size(&self, conf: &BTreeMap<String, String>) -> Option<u64> {
        let order: Vec<String> = conf
            .get("boot")
            .and_then(|b| {
                let fmt = self.schema.hash_format("pve-qm-boot")?;
                self.schema.parse_property_string(fmt, b, "", None).ok()
            })
            .and_then(|b| b.get("order").cloned())
            .map(|o| formats::split_list(&o))
            .unwrap_or_default();
        let candidates: Vec<String> = if order.is_empty() {
            conf.get("bootdisk")
                .cloned()
                .into_iter()
                .chain(
                    ["scsi0", "virtio0", "sata0", "ide0"]
                        .iter()
                        .map(|s| s.to_string()),
                )
                .collect()
        } else {
            order
        };
        for key in candidates {
            if !formats::is_valid_drivename(&key) {
                continue;
            }
            let Some(v) = conf.get(&key) else { continue };
            let d = self.parse_drive(&key, v)?;
            if d.get("media").map(String::as_str) == Some("cdrom") {
                continue;
            }
            return d.get("size").and_then(|s| formats::parse_size(s));
        }
        None
    }

    // ---------------------------------------------------------------------
    // Start, stop, reboot.

    /// `vm_start` (inside a task).
    pub async fn vm_start(
        self: &Arc<Self>,
        vmid: u32,
        ctx: &TaskCtx,
        skiplock: bool,
    ) -> Result<(), String> {
        let _g = self
            .locks
            .lock(vmid, self.lock_wait(), false, Some(ctx))
            .await?;
        let mut conf = self.load_config(vmid).map_err(|e| e.message())?;
        if conf.is_template() {
            return Err("you can't start a vm if it's a template\n".into());
        }
        if !skiplock {
            conf.check_lock()?;
        }
        if self.running_pid(vmid).is_some() {
            return Err(format!("VM {vmid} already running\n"));
        }
        ctx.simulated_work().await;
        if !conf.pending.is_empty() {
            conf.apply_pending();
            self.write_config(vmid, &conf).map_err(|e| e.message())?;
        }
        self.start_nolock(vmid, &conf.main, ctx).await
    }

    async fn start_nolock(
        self: &Arc<Self>,
        vmid: u32,
        conf: &BTreeMap<String, String>,
        ctx: &TaskCtx,
    ) -> Result<(), String> {
        let uid = self.uid_for(vmid);
        // Ids from 2^31 on are read as negative by some tools.
        if uid >= 1 << 31 {
            return Err(format!(
                "pve-sim: VMID {vmid} is too large for qemu_uid_base {}\n",
                self.cfg.qemu_uid_base
            ));
        }
        // Cloud-init drive, regenerated at every start from the current config.
        for (key, value) in conf.iter().filter(|(k, _)| formats::is_valid_drivename(k)) {
            let Some(d) = self.parse_drive(key, value) else {
                continue;
            };
            let file = d.get("file").cloned().unwrap_or_default();
            if !Node::is_cloudinit_volume(&file) {
                continue;
            }
            let vol = self.storage.parse(&file)?;
            if vol.owner != vmid {
                continue;
            }
            let dns = cloudinit::DnsDefaults {
                nameservers: &self.cfg.host_nameservers,
                searchdomain: self.cfg.host_searchdomain.as_deref(),
            };
            let files = cloudinit::generate(self.schema, &self.storage, conf, vmid, &dns)?;
            ctx.log("generating cloud-init ISO");
            if let Some(parent) = vol.path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let work = self.run_dir.join("cloudinit").join(vmid.to_string());
            cloudinit::commit(&files, &work, &vol.path, &vol.format, uid).await?;
        }
        let paths = self.run_paths(vmid);
        let plan = qemu::build_argv(&qemu::ArgvInput {
            vmid,
            conf,
            paths: &paths,
            caps: &self.caps,
            uid,
            storage: &self.storage,
            schema: self.schema,
            host_cpus: self.host_cpus,
        })?;
        let tapped: Vec<&qemu::NicPlan> = plan.nics.iter().filter(|n| n.bridge.is_some()).collect();
        if !tapped.is_empty() && !self.cfg.allow_root_netns && net::in_root_netns() {
            return Err("pve-sim: refusing to create tap devices in the machine's own network namespace; run pve-sim inside a network namespace (or set allow_root_netns)\n".into());
        }
        for nic in &tapped {
            let bridge = nic.bridge.as_deref().unwrap_or("");
            let allowed = self.cfg.allowed_bridges.iter().any(|b| b == bridge);
            if !net::is_bridge(bridge) || !allowed {
                if !allowed && net::is_bridge(bridge) {
                    ctx.log(&format!(
                        "pve-sim: bridge '{bridge}' is not in allowed_bridges"
                    ));
                } else {
                    ctx.log(&format!("bridge '{bridge}' does not exist"));
                }
                ctx.log(&format!(
                    "kvm: -netdev type=tap,id=net{i},ifname={tap},script=/var/lib/qemu-server/pve-bridge,downscript=/var/lib/qemu-server/pve-bridgedown: network script /var/lib/qemu-server/pve-bridge failed with status 512",
                    i = nic.idx,
                    tap = net::tap_name(vmid, nic.idx)
                ));
                return Err("start failed: QEMU exited with code 1\n".into());
            }
        }
        let pid = match qemu::spawn(&self.cfg.qemu_binary, &plan.argv, &paths).await {
            Ok(pid) => pid,
            Err((lines, err)) => {
                for l in lines {
                    ctx.log(&l);
                }
                self.stop_cleanup(vmid).await;
                return Err(err);
            }
        };
        for nic in &tapped {
            let bridge = nic.bridge.as_deref().unwrap_or("");
            if let Err(e) = net::plug(vmid, nic.idx, bridge, nic.firewall).await {
                ctx.log(&e);
                qemu::kill(pid, rustix::process::Signal::KILL);
                self.wait_exit(vmid, Duration::from_secs(5)).await;
                self.stop_cleanup(vmid).await;
                return Err("start failed: QEMU exited with code 1\n".into());
            }
        }
        // Only now may the guest run: its taps are bridge ports and QEMU has
        // dropped to the VM's uid (no guest instruction ever runs as root).
        if !qemu::runs_as(pid, uid) {
            qemu::kill(pid, rustix::process::Signal::KILL);
            self.wait_exit(vmid, Duration::from_secs(5)).await;
            self.stop_cleanup(vmid).await;
            return Err(format!("start failed: QEMU did not drop to uid {uid}\n"));
        }
        qemu::qmp(&paths.qmp, "cont", None)
            .await
            .map_err(|e| format!("start failed: {e}\n"))?;
        Ok(())
    }

    async fn wait_exit(&self, vmid: u32, timeout: Duration) -> bool {
        // A client may ask for any timeout: never overflow the deadline.
        let timeout = timeout.min(Duration::from_secs(366 * 86400));
        let deadline = tokio::time::Instant::now() + timeout;
        while self.running_pid(vmid).is_some() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// `vm_stop` (inside a task): lock, then `_do_vm_stop`.
    #[allow(clippy::too_many_arguments)]
    pub async fn vm_stop(
        self: &Arc<Self>,
        vmid: u32,
        ctx: &TaskCtx,
        skiplock: bool,
        timeout: Option<u64>,
        shutdown: bool,
        force: Option<bool>,
    ) -> Result<(), String> {
        let force = force.unwrap_or(!shutdown);
        let _g = self
            .locks
            .lock(vmid, self.lock_wait(), false, Some(ctx))
            .await?;
        ctx.simulated_work().await;
        self.do_vm_stop(vmid, ctx, skiplock, timeout, shutdown, force)
            .await
    }

    async fn do_vm_stop(
        self: &Arc<Self>,
        vmid: u32,
        ctx: &TaskCtx,
        skiplock: bool,
        timeout: Option<u64>,
        shutdown: bool,
        force: bool,
    ) -> Result<(), String> {
        let Some(pid) = self.check_running(vmid).map_err(|e| e.message())? else {
            return Ok(());
        };
        let conf = self.load_config(vmid).map_err(|e| e.message())?;
        if !skiplock {
            conf.check_lock()?;
        }
        let mut timeout = timeout;
        if timeout.is_none() && shutdown {
            if let Some(down) = conf.get("startup").and_then(|s| {
                s.split(',')
                    .find_map(|p| p.strip_prefix("down=").and_then(|d| d.parse::<u64>().ok()))
            }) {
                timeout = Some(down);
            }
        }
        let paths = self.run_paths(vmid);
        let cmd = if shutdown { "system_powerdown" } else { "quit" };
        let sent = qemu::qmp(&paths.qmp, cmd, None).await;
        match sent {
            Ok(_) => {
                let t = Duration::from_secs(timeout.unwrap_or(60));
                if self.wait_exit(vmid, t).await {
                    self.stop_cleanup(vmid).await;
                    return Ok(());
                }
                if force {
                    ctx.log("VM still running - terminating now with SIGTERM");
                    qemu::kill(pid, rustix::process::Signal::TERM);
                } else {
                    return Err("VM quit/powerdown failed - got timeout\n".into());
                }
            }
            Err(_) => {
                if self.running_pid(vmid).is_none() {
                    ctx.log("Unexpected: VM shutdown command failed, but VM not running anymore..");
                    return Ok(());
                }
                if force {
                    ctx.log("VM quit/powerdown failed - terminating now with SIGTERM");
                    qemu::kill(pid, rustix::process::Signal::TERM);
                } else {
                    return Err("VM quit/powerdown failed\n".into());
                }
            }
        }
        if !self.wait_exit(vmid, Duration::from_secs(10)).await {
            ctx.log("VM still running - terminating now with SIGKILL");
            qemu::kill(pid, rustix::process::Signal::KILL);
            self.wait_exit(vmid, Duration::from_secs(2)).await;
        }
        self.stop_cleanup(vmid).await;
        Ok(())
    }

    /// `vm_reboot`: a shutdown with a reboot request; the node starts the VM again
    /// once it is down (qmeventd).
    pub async fn vm_reboot(
        self: &Arc<Self>,
        vmid: u32,
        ctx: &TaskCtx,
        timeout: Option<u64>,
    ) -> Result<(), String> {
        let _g = self
            .locks
            .lock(vmid, self.lock_wait(), false, Some(ctx))
            .await?;
        ctx.simulated_work().await;
        if self.running_pid(vmid).is_none() {
            return Ok(());
        }
        let req = self.run_paths(vmid).reboot_request();
        let _ = std::fs::write(&req, b"");
        let r = self
            .do_vm_stop(vmid, ctx, false, timeout, true, false)
            .await;
        if r.is_err() {
            let _ = std::fs::remove_file(&req);
        }
        r
    }

    /// `vm_stop_cleanup` after QEMU is gone: firewall bridges, runtime files.
    pub async fn stop_cleanup(&self, vmid: u32) {
        let paths = self.run_paths(vmid);
        if qemu::running_pid(&paths).is_some() {
            return;
        }
        for idx in 0..32 {
            let (fwbr, _, fwpr) = net::fw_names(vmid, idx);
            if net::iface_exists(&fwbr) || net::iface_exists(&fwpr) {
                net::cleanup_fw(vmid, idx).await;
            }
        }
        let _ = std::fs::remove_file(&paths.pid);
        let _ = std::fs::remove_file(&paths.qmp);
        let _ = std::fs::remove_file(paths.qga());
        for n in 0..4 {
            let _ = std::fs::remove_file(paths.serial(n));
        }
        let mut s = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    /// qmeventd's job: clean up after VMs whose QEMU ended on its own (guest
    /// poweroff, crash) and start again those with a reboot request.
    async fn monitor_tick(self: &Arc<Self>) {
        let Ok(rd) = std::fs::read_dir(&self.run_dir) else {
            return;
        };
        let mut pids = Vec::new();
        let mut reboots = Vec::new();
        for e in rd.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_suffix(".pid").and_then(|s| s.parse::<u32>().ok()) {
                pids.push(id);
            }
            if let Some(id) = n
                .strip_suffix(".reboot")
                .and_then(|s| s.parse::<u32>().ok())
            {
                reboots.push(id);
            }
        }
        for vmid in pids {
            if self.running_pid(vmid).is_none() {
                // A start in progress holds the lock; leave its files alone.
                if let Ok(g) = self.locks.lock(vmid, Duration::ZERO, false, None).await {
                    self.stop_cleanup(vmid).await;
                    drop(g);
                }
            }
        }
        for vmid in reboots {
            if self.running_pid(vmid).is_some() {
                continue;
            }
            let req = self.run_paths(vmid).reboot_request();
            if std::fs::remove_file(&req).is_err() || !self.config_exists(vmid) {
                continue;
            }
            let node = self.clone();
            let delay = self.faults.task_duration("qmstart");
            let _ = self.tasks.fork_worker(
                "qmstart",
                &vmid.to_string(),
                "root@pam",
                delay,
                move |ctx| async move { node.vm_start(vmid, &ctx, false).await },
            );
        }
    }

    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mon = {
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    node.monitor_tick().await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let rrd = {
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    node.rrd_tick().await;
                    tokio::time::sleep(Duration::from_secs(node.cfg.rrd_sample_secs.max(1))).await;
                }
            })
        };
        vec![mon, rrd]
    }

    // ---------------------------------------------------------------------
    // Status.

    /// `vmstatus` for one VM (`full` adds QMP data: qmpstatus, disk I/O).
    pub async fn vm_status(&self, vmid: u32, full: bool) -> Result<Map<String, Value>, ApiError> {
        let conf = self.load_config(vmid)?;
        let c = &conf.main;
        let pid = self.running_pid(vmid);
        let mut d = Map::new();
        d.insert("vmid".into(), json!(vmid));
        if let Some(p) = pid {
            d.insert("pid".into(), json!(p));
        }
        d.insert(
            "status".into(),
            json!(if pid.is_some() { "running" } else { "stopped" }),
        );
        let maxdisk = self.bootdisk_size(c).unwrap_or(0);
        d.insert("disk".into(), json!(0));
        d.insert("maxdisk".into(), json!(maxdisk));
        let num = |k: &str, dflt: u64| c.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(dflt);
        let mut cpus = num("sockets", 1).saturating_mul(num("cores", 1));
        if cpus > self.host_cpus {
            cpus = self.host_cpus;
        }
        if let Some(v) = c.get("vcpus").and_then(|v| v.parse::<u64>().ok()) {
            cpus = v;
        }
        d.insert("cpus".into(), json!(cpus));
        d.insert(
            "name".into(),
            json!(
                c.get("name")
                    .cloned()
                    .unwrap_or_else(|| format!("VM {vmid}"))
            ),
        );
        let memory = c
            .get("memory")
            .and_then(|m| {
                let fmt = self.schema.config_key_format("memory")?;
                self.schema.parse_property_string(fmt, m, "", None).ok()
            })
            .and_then(|m| m.get("current").and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(512);
        d.insert("maxmem".into(), json!(memory.saturating_mul(1024 * 1024)));
        if let Some(b) = c
            .get("balloon")
            .and_then(|b| b.parse::<u64>().ok())
            .filter(|b| *b > 0)
        {
            d.insert("balloon_min".into(), json!(b.saturating_mul(1024 * 1024)));
            d.insert("shares".into(), json!(num("shares", 1000)));
        }
        let (mut uptime, mut cpu, mut mem) = (0u64, 0.0f64, 0u64);
        let (mut netin, mut netout) = (0u64, 0u64);
        if let Some(p) = pid {
            if let Some((used, start)) = qemu::proc_times(p) {
                let up = qemu::host_uptime_secs();
                uptime = (up - start as f64 / 100.0).max(0.0) as u64;
                cpu = self.cpu_fraction(p, used, cpus);
            }
            mem = qemu::proc_rss(p);
            (netin, netout) = net::tap_counters(vmid);
        }
        d.insert("uptime".into(), json!(uptime));
        d.insert("cpu".into(), json!(cpu));
        d.insert("mem".into(), json!(mem));
        d.insert("memhost".into(), json!(mem));
        d.insert("netin".into(), json!(netin));
        d.insert("netout".into(), json!(netout));
        if conf.is_template() {
            d.insert("template".into(), json!(1));
        }
        if (0..4).any(|n| c.contains_key(&format!("serial{n}"))) {
            d.insert("serial".into(), json!(1));
        }
        if let Some(l) = conf.lock() {
            d.insert("lock".into(), json!(l));
        }
        if let Some(t) = c.get("tags") {
            d.insert("tags".into(), json!(t));
        }
        if full {
            let (mut rd, mut wr) = (0u64, 0u64);
            let mut qmpstatus = None;
            if pid.is_some() {
                let paths = self.run_paths(vmid);
                if let Ok(v) = qemu::qmp(&paths.qmp, "query-blockstats", None).await {
                    for s in v.as_array().into_iter().flatten() {
                        rd += s
                            .pointer("/stats/rd_bytes")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        wr += s
                            .pointer("/stats/wr_bytes")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                    }
                }
                if let Ok(v) = qemu::qmp(&paths.qmp, "query-status", None).await {
                    qmpstatus = v.get("status").and_then(Value::as_str).map(String::from);
                }
                d.insert("running-machine".into(), json!("pc-i440fx-7.2"));
                d.insert("running-qemu".into(), json!("7.2.0"));
            }
            d.insert("diskread".into(), json!(rd));
            d.insert("diskwrite".into(), json!(wr));
            let status = d.get("status").cloned().unwrap_or(Value::Null);
            d.insert(
                "qmpstatus".into(),
                qmpstatus.map(Value::String).unwrap_or(status),
            );
        }
        Ok(d)
    }

    /// CPU use as a fraction of the VM's CPUs, from utime+stime deltas (PVE only
    /// refreshes it after ≥ 1000 ticks of wall time across all host CPUs).
    fn cpu_fraction(&self, pid: i32, used: u64, cpus: u64) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut s = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = s.get(&pid).copied() else {
            s.insert(
                pid,
                CpuSample {
                    at: now,
                    used,
                    cpu: 0.0,
                },
            );
            return 0.0;
        };
        let dtime = (now - old.at) * self.host_cpus as f64 * 100.0;
        if dtime > 1000.0 {
            let du = used.saturating_sub(old.used) as f64;
            let cpu = (du / dtime) * self.host_cpus as f64 / cpus.max(1) as f64;
            s.insert(pid, CpuSample { at: now, used, cpu });
            cpu
        } else {
            old.cpu
        }
    }

    async fn rrd_tick(&self) {
        let now = self.clock.now_unix();
        for vmid in self.vmids() {
            let Ok(st) = self.vm_status(vmid, true).await else {
                continue;
            };
            let g = |k: &str| st.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let raw_net = (g("netin") as u64, g("netout") as u64);
            let raw_disk = (g("diskread") as u64, g("diskwrite") as u64);
            let mut rrd = self.rrd.lock().unwrap_or_else(|p| p.into_inner());
            let series = rrd.entry(vmid).or_default();
            let rate = |prev: Option<&RrdSample>, f: &dyn Fn(&RrdSample) -> u64, cur: u64| -> f64 {
                match prev {
                    Some(p) if now > p.time && cur >= f(p) => {
                        (cur - f(p)) as f64 / (now - p.time) as f64
                    }
                    _ => 0.0,
                }
            };
            let prev = series.back();
            let sample = RrdSample {
                time: now,
                cpu: g("cpu"),
                maxcpu: g("cpus"),
                mem: g("mem"),
                maxmem: g("maxmem"),
                disk: 0.0,
                maxdisk: g("maxdisk"),
                netin: rate(prev, &|p| p.raw_net.0, raw_net.0),
                netout: rate(prev, &|p| p.raw_net.1, raw_net.1),
                diskread: rate(prev, &|p| p.raw_disk.0, raw_disk.0),
                diskwrite: rate(prev, &|p| p.raw_disk.1, raw_disk.1),
                raw_net,
                raw_disk,
            };
            series.push_back(sample);
            while series.len() > 20_000 {
                series.pop_front();
            }
        }
    }

    /// `rrddata`: 70 rows of the timeframe's step ending at the last full step,
    /// each the average (or max) of the samples in it; rows without samples
    /// carry only `time`.
    pub fn rrddata(&self, vmid: u32, timeframe: &str, cf_max: bool) -> Vec<Value> {
        let step: u64 = match timeframe {
            "hour" => 60,
            "day" => 1800,
            "week" => 10800,
            "month" => 43200,
            _ => 604800,
        };
        let now = self.clock.now_unix();
        let end = now - now % step;
        let start = end.saturating_sub(step * 70);
        let rrd = self.rrd.lock().unwrap_or_else(|p| p.into_inner());
        let series = rrd.get(&vmid);
        let mut rows = Vec::new();
        let mut t = start + step;
        while t <= end {
            let bucket: Vec<&RrdSample> = series
                .into_iter()
                .flatten()
                .filter(|s| s.time > t - step && s.time <= t)
                .collect();
            let mut row = Map::new();
            row.insert("time".into(), json!(t));
            if !bucket.is_empty() {
                let agg = |f: &dyn Fn(&RrdSample) -> f64| -> f64 {
                    if cf_max {
                        bucket.iter().map(|s| f(s)).fold(f64::MIN, f64::max)
                    } else {
                        bucket.iter().map(|s| f(s)).sum::<f64>() / bucket.len() as f64
                    }
                };
                row.insert("cpu".into(), json!(agg(&|s| s.cpu)));
                row.insert("maxcpu".into(), json!(agg(&|s| s.maxcpu)));
                row.insert("mem".into(), json!(agg(&|s| s.mem)));
                row.insert("memhost".into(), json!(agg(&|s| s.mem)));
                row.insert("maxmem".into(), json!(agg(&|s| s.maxmem)));
                row.insert("disk".into(), json!(agg(&|s| s.disk)));
                row.insert("maxdisk".into(), json!(agg(&|s| s.maxdisk)));
                row.insert("netin".into(), json!(agg(&|s| s.netin)));
                row.insert("netout".into(), json!(agg(&|s| s.netout)));
                row.insert("diskread".into(), json!(agg(&|s| s.diskread)));
                row.insert("diskwrite".into(), json!(agg(&|s| s.diskwrite)));
            }
            rows.push(Value::Object(row));
            t += step;
        }
        rows
    }

    pub fn has_rrd(&self, vmid: u32) -> bool {
        self.config_exists(vmid)
            || self
                .rrd
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&vmid)
    }

    /// Remember a request (the last 10,000), for client conformance tests.
    pub fn record_request(&self, r: RequestRecord) {
        let mut q = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(r);
        while q.len() > 10_000 {
            q.pop_front();
        }
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    // ---------------------------------------------------------------------
    // Fault knobs and operator actions.

    /// `qm set --lock <lock>` / `qm unlock`: write the config's `lock` key.
    pub fn set_config_lock(&self, vmid: u32, lock: Option<&str>) -> Result<(), ApiError> {
        let mut conf = self.load_config(vmid)?;
        match lock {
            Some(l) => conf.main.insert("lock".into(), l.to_string()),
            None => conf.main.remove("lock"),
        };
        self.write_config(vmid, &conf)
    }

    /// Hold a VM's config lock (`flock`) for `d`, as a stuck worker would.
    pub async fn hold_config_lock(self: &Arc<Self>, vmid: u32, d: Duration) -> Result<(), String> {
        let g = self.locks.lock(vmid, self.lock_wait(), false, None).await?;
        let h = tokio::spawn(async move {
            tokio::time::sleep(d).await;
            drop(g);
        });
        self.holds.lock().unwrap_or_else(|p| p.into_inner()).push(h);
        Ok(())
    }

    /// Node restart: workers die mid-way (their tasks read `unexpected status`),
    /// held locks go with them; VMs keep running.
    pub fn restart(&self) -> Vec<String> {
        for h in self
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
        self.tasks.kill_all()
    }

    /// Create a template VM from an image file (what an operator does with
    /// `qm create`, `qm importdisk`, `qm set --ide2 local:cloudinit`, `qm template`).
    pub async fn create_template(&self, t: &crate::config::TemplateConfig) -> Result<(), String> {
        if self.config_exists(t.vmid) {
            return Err(format!(
                "unable to create VM {}: config file already exists\n",
                t.vmid
            ));
        }
        if t.vmid < 100 {
            return Err("VMID must be at least 100\n".into());
        }
        let volid = self.storage.import_base(t.vmid, &t.image).await?;
        let vol = self.storage.parse(&volid)?;
        let size = self.storage.size(&vol.path).await?;
        let ci = self
            .storage
            .alloc(
                t.vmid,
                "qcow2",
                Some(&format!("vm-{}-cloudinit.qcow2", t.vmid)),
                4 * 1024 * 1024,
                self.uid_for(t.vmid),
            )
            .await?;
        let mut c = VmConf::default();
        let m = &mut c.main;
        m.insert(
            "name".into(),
            t.name
                .clone()
                .unwrap_or_else(|| format!("template-{}", t.vmid)),
        );
        m.insert("memory".into(), t.memory.to_string());
        m.insert("cores".into(), t.cores.to_string());
        m.insert("sockets".into(), "1".into());
        m.insert("scsihw".into(), "virtio-scsi-pci".into());
        m.insert(
            "scsi0".into(),
            format!("{volid},size={}", formats::format_size(size)),
        );
        m.insert("ide2".into(), format!("{ci},media=cdrom"));
        m.insert("boot".into(), "order=scsi0".into());
        m.insert("serial0".into(), "socket".into());
        m.insert("vga".into(), "serial0".into());
        m.insert("ostype".into(), "l26".into());
        m.insert("template".into(), "1".into());
        m.insert(
            "meta".into(),
            format!("creation-qemu=7.2.0,ctime={}", self.clock.now_unix()),
        );
        m.insert("smbios1".into(), format!("uuid={}", uuid_v4()));
        m.insert("vmgenid".into(), uuid_v4());
        if let Some(b) = &t.bridge {
            m.insert(
                "net0".into(),
                self.normalize_net(&format!("virtio,bridge={b}"), true)?,
            );
        }
        self.write_config(t.vmid, &c).map_err(|e| e.message())?;
        Ok(())
    }
}

pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
