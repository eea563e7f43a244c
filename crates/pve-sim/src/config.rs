//! `pve-sim --config sim.toml`: the simulated node's settings. Unknown keys are
//! refused by name (serde `deny_unknown_fields`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// How QEMU accelerates guests.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when a probe boot works, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// An API token (`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `user@realm!tokenid`
    pub id: String,
    pub secret: String,
    /// Privileges the token holds on every path (`"*"` = all). A token lacking one
    /// gets PVE's 403 `Permission check failed (/vms/100, VM.Allocate)`.
    #[serde(default = "all_privileges")]
    pub privileges: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("privileges", &self.privileges)
            .finish()
    }
}

fn all_privileges() -> Vec<String> {
    vec!["*".into()]
}

/// A template VM created at start-up if its VMID is free (what an operator does
/// with `qm create` + `qm importdisk` + `qm template` on a real node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub vmid: u32,
    /// A qcow2 or raw disk image; copied into the storage as the base disk.
    pub image: PathBuf,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default = "default_memory")]
    pub memory: u64,
    #[serde(default = "default_cores")]
    pub cores: u32,
}

fn default_memory() -> u64 {
    256
}
fn default_cores() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// HTTPS API address (PVE: `:8006`). Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The node name (`/nodes/{node}`, UPIDs).
    #[serde(default = "default_node")]
    pub node: String,
    /// Holds `qemu-server/*.conf`, `images/`, `snippets/`, `tasks/`, `run/` and the
    /// TLS files.
    pub state_dir: PathBuf,
    /// The `local` storage's snippets directory (`local:snippets/x.yaml`); a driver
    /// writes cicustom files here directly, as on a real node.
    #[serde(default)]
    pub snippets_dir: Option<PathBuf>,
    #[serde(default)]
    pub accelerator: AccelChoice,
    #[serde(default = "default_qemu")]
    pub qemu_binary: PathBuf,
    /// Each VM's QEMU runs as uid/gid `qemu_uid_base + vmid` (ISO-4: one VM's
    /// process cannot open another VM's disk).
    #[serde(default = "default_uid_base")]
    pub qemu_uid_base: u32,
    /// Bridges VMs may be plugged into. The simulator never creates or changes a
    /// bridge; a net device naming another bridge fails to start.
    #[serde(default)]
    pub allowed_bridges: Vec<String>,
    /// Starting a VM with network devices is refused in the machine's own (root)
    /// network namespace unless this is set (test-environment rule).
    #[serde(default)]
    pub allow_root_netns: bool,
    /// PVE delays every 401 by ~3 s.
    #[serde(default = "default_auth_delay")]
    pub auth_failure_delay_ms: u64,
    /// `lock_config` waits 10 s for a VM's config lock.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_ms: u64,
    /// A clone waits 1 s for the source's and target's locks.
    #[serde(default = "default_clone_lock_wait")]
    pub clone_lock_wait_ms: u64,
    /// pve-http-server ≥ 5.2.0 also puts `message` into error bodies.
    #[serde(default = "yes")]
    pub error_message_in_body: bool,
    /// datacenter.cfg `mac_prefix` (PVE's default since 8.1).
    #[serde(default = "default_mac_prefix")]
    pub mac_prefix: String,
    /// Reported by `GET /version`.
    #[serde(default = "default_version")]
    pub pve_version: String,
    /// The node's resolv.conf, used by cloud-init when a VM sets no nameserver.
    #[serde(default)]
    pub host_nameservers: Vec<String>,
    #[serde(default)]
    pub host_searchdomain: Option<String>,
    /// Override the CPUs / memory the node reports (capacity tests).
    #[serde(default)]
    pub node_cpus: Option<u64>,
    #[serde(default)]
    pub node_memory_mib: Option<u64>,
    /// Statistics sampling interval for `rrddata` (pvestatd: 10 s).
    #[serde(default = "default_rrd_sample")]
    pub rrd_sample_secs: u64,
    /// Per task type (`qmclone`, `qmstart`, …) extra duration in milliseconds.
    #[serde(default)]
    pub task_durations_ms: BTreeMap<String, u64>,
    /// Plain-HTTP loopback listener for fault knobs (tests only).
    #[serde(default)]
    pub control_listen: Option<SocketAddr>,
    /// Bearer token of the control listener; random when absent.
    #[serde(default)]
    pub control_token: Option<String>,
    /// Extra DNS names / IPs in the node certificate.
    #[serde(default)]
    pub tls_names: Vec<String>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub templates: Vec<TemplateConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8006))
}
fn default_node() -> String {
    "pve".into()
}
fn default_qemu() -> PathBuf {
    "qemu-system-x86_64".into()
}
fn default_uid_base() -> u32 {
    2_000_000_000
}
fn default_auth_delay() -> u64 {
    3000
}
fn default_lock_wait() -> u64 {
    10_000
}
fn default_clone_lock_wait() -> u64 {
    1000
}
fn yes() -> bool {
    true
}
fn default_mac_prefix() -> String {
    "BC:24:11".into()
}
fn default_version() -> String {
    "9.1.4".into()
}
fn default_rrd_sample() -> u64 {
    10
}

/// Privilege names PVE knows (`verify_privname`), for config validation.
pub const KNOWN_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Pool.Allocate",
    "Pool.Audit",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

impl SimConfig {
    /// A config for tests: loopback, port 0, TCG, no auth delay tweaks.
    pub fn for_tests(state_dir: &Path) -> SimConfig {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            node: default_node(),
            state_dir: state_dir.to_path_buf(),
            snippets_dir: None,
            accelerator: AccelChoice::Tcg,
            qemu_binary: default_qemu(),
            qemu_uid_base: default_uid_base(),
            allowed_bridges: Vec::new(),
            allow_root_netns: false,
            auth_failure_delay_ms: default_auth_delay(),
            lock_wait_ms: default_lock_wait(),
            clone_lock_wait_ms: default_clone_lock_wait(),
            error_message_in_body: true,
            mac_prefix: default_mac_prefix(),
            pve_version: default_version(),
            host_nameservers: Vec::new(),
            host_searchdomain: None,
            node_cpus: None,
            node_memory_mib: None,
            rrd_sample_secs: default_rrd_sample(),
            task_durations_ms: BTreeMap::new(),
            control_listen: None,
            control_token: None,
            tls_names: Vec::new(),
            tokens: Vec::new(),
            templates: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<SimConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: SimConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if crate::schema::formats::node_name(&self.node).is_err() {
            return bad(format!("node: {:?} is not a valid node name", self.node));
        }
        for t in &self.tokens {
            if crate::http::auth::split_token_id(&t.id).is_none() {
                return bad(format!("tokens: {:?} is not USER@REALM!TOKENID", t.id));
            }
            if t.secret.is_empty() || t.secret.contains(char::is_whitespace) {
                return bad(format!("tokens: {}: empty or blank secret", t.id));
            }
            for p in &t.privileges {
                if p != "*" && !KNOWN_PRIVILEGES.contains(&p.as_str()) {
                    return bad(format!("tokens: {}: unknown privilege {p:?}", t.id));
                }
            }
        }
        let mp = self.mac_prefix.to_ascii_uppercase();
        let ok_prefix = mp.len() <= 8
            && mp
                .split(':')
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok_prefix {
            return bad(format!(
                "mac_prefix: {:?} is not like BC:24:11",
                self.mac_prefix
            ));
        }
        for b in &self.allowed_bridges {
            if b.is_empty()
                || b.len() > 15
                || !b
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return bad(format!("allowed_bridges: {b:?} is not an interface name"));
            }
        }
        if self.qemu_uid_base < 100_000 || self.qemu_uid_base > 3_000_000_000 {
            return bad("qemu_uid_base: must be between 100000 and 3000000000".into());
        }
        Ok(())
    }

    pub fn snippets_dir(&self) -> PathBuf {
        self.snippets_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("snippets"))
    }
}
