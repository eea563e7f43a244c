//! Agent configuration: a TOML file plus `CLAWY_AGENT_*` environment overrides.
//! Unknown keys are refused with a message naming the key; values are validated at
//! start-up so a bad config fails before anything is touched.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default listen address. Loopback on purpose: an operator who wants the control
/// plane to reach the agent over the network opts in with `listen = "0.0.0.0:8443"`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clawy-agent";
/// Memory kept for the host itself when capacity is derived from the machine.
const MEMORY_RESERVE_MIB: u64 = 1024;
/// Share of the state filesystem kept free when disk capacity is derived.
const DISK_RESERVE_PERCENT: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// Probe KVM and fall back to TCG with a warning.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The file's shape. Every field optional so env overrides and defaults fill it in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    images_dir: Option<PathBuf>,
    location: Option<String>,
    max_vcpus: Option<u64>,
    max_memory_mib: Option<u64>,
    max_disk_gib: Option<u64>,
    stop_timeout_secs: Option<u64>,
    nameservers: Option<Vec<std::net::Ipv4Addr>>,
    max_connections: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    /// Host network (bridge, NAT, forwards); absent = VMs get no NIC and the agent
    /// touches no interface (used by API-only tests).
    network: Option<crate::network::NetworkConfig>,
    /// `[driver]`: which hypervisor, and its own keys in `[driver.qemu]` or
    /// `[driver.proxmox]`.
    driver: Option<DriverFile>,
    /// `[edge]`: the host's HTTPS edge (Caddy beside the agent, docs/EDGE.md);
    /// absent = the agent runs no edge.
    edge: Option<crate::edge::EdgeSettingsRaw>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverFile {
    kind: Option<DriverKind>,
    qemu: Option<QemuFile>,
    proxmox: Option<crate::drivers::proxmox::config::ProxmoxFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    #[default]
    Qemu,
    Proxmox,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QemuFile {
    binary: Option<PathBuf>,
    accelerator: Option<AccelChoice>,
    pin_cpus: Option<bool>,
    uid_range: Option<String>,
}

/// `[driver.qemu]`: one local QEMU process per VM.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub binary: PathBuf,
    pub accelerator: AccelChoice,
    /// ISO-2 (optional): pin each VM's QEMU to host CPUs no other VM uses.
    pub pin_cpus: bool,
    /// ISO-4: ids for the VMs' QEMU processes (one per VM).
    pub uid_range: UidRange,
}

/// The hypervisor the agent drives, with that driver's own settings.
#[derive(Debug, Clone)]
pub enum DriverConfig {
    Qemu(QemuConfig),
    Proxmox(Box<crate::drivers::proxmox::config::ProxmoxConfig>),
}

impl DriverConfig {
    pub fn kind(&self) -> DriverKind {
        match self {
            DriverConfig::Qemu(_) => DriverKind::Qemu,
            DriverConfig::Proxmox(_) => DriverKind::Proxmox,
        }
    }
}

/// ISO-4: the numeric user and group ids the agent hands out, one per VM, to run
/// that VM's QEMU (uid = gid). Nothing else on the host may use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub start: u32,
    pub end: u32,
}

/// systemd's map of uids (UIDS-GIDS.md) leaves 1879048192-2147483647 unused; this
/// is a 65,536-id slice of it, so it collides neither with system or regular
/// users nor with container ranges.
pub const DEFAULT_QEMU_UID_RANGE: UidRange = UidRange {
    start: 1_900_000_000,
    end: 1_900_065_535,
};

impl UidRange {
    pub fn contains(&self, id: u32) -> bool {
        (self.start..=self.end).contains(&id)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}`: expected START-END"))?;
        let start: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not a number"))?;
        let end: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("`{b}` is not a number"))?;
        // Not root's, not the system users', and below 2^31 (some tools read ids as
        // signed numbers).
        if start < 65_536 || end < start || end >= 1 << 31 {
            return Err(format!("`{text}`: need 65536 <= START <= END < 2147483648"));
        }
        Ok(Self { start, end })
    }

    /// Refuses a range that any user or group in `passwd`/`group` (or a subordinate
    /// id range in `subuid`/`subgid`) already uses: a VM's QEMU must share its ids
    /// with nobody (ISO-4).
    pub fn check_unused(&self, etc: &Path) -> Result<(), ConfigError> {
        for file in ["passwd", "group"] {
            let Ok(text) = std::fs::read_to_string(etc.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let mut f = line.split(':');
                let (name, id) = (f.next(), f.nth(1));
                if let (Some(name), Some(Ok(id))) = (name, id.map(str::parse::<u32>)) {
                    if self.contains(id) {
                        return Err(invalid(
                            "driver.qemu.uid_range",
                            format!("id {id} is already used by `{name}` in /etc/{file}"),
                        ));
                    }
                }
            }
        }
        for file in ["subuid", "subgid"] {
            let Ok(text) = std::fs::read_to_string(etc.join(file)) else {
                continue;
            };
            for line in text.lines() {
                let mut f = line.split(':');
                let (name, start, count) = (f.next(), f.next(), f.next());
                let (Some(name), Some(Ok(start)), Some(Ok(count))) = (
                    name,
                    start.map(str::parse::<u64>),
                    count.map(str::parse::<u64>),
                ) else {
                    continue;
                };
                let end = start + count.saturating_sub(1);
                if start <= u64::from(self.end) && end >= u64::from(self.start) {
                    return Err(invalid(
                        "driver.qemu.uid_range",
                        format!("overlaps `{name}`'s subordinate ids {start}-{end} in /etc/{file}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Limits on the HTTPS listener that hold before any authentication (a client
/// that connects and sends nothing, or trickles its headers, must not take the
/// agent down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    pub tls_handshake_timeout: std::time::Duration,
    /// HTTP/1 only: the whole request head must arrive within this time.
    pub header_read_timeout: std::time::Duration,
    /// A connection with no request in flight and no bytes either way for this
    /// long is closed (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: std::time::Duration,
}

pub const DEFAULT_HTTP_LIMITS: HttpLimits = HttpLimits {
    max_connections: 4096,
    tls_handshake_timeout: std::time::Duration::from_secs(10),
    header_read_timeout: std::time::Duration::from_secs(10),
    idle_timeout: std::time::Duration::from_secs(120),
};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Base images live here; a spec names one, never gives a path.
    pub images_dir: PathBuf,
    /// Location label (DATA-2), reported in host info.
    pub location: String,
    pub max_vcpus: u64,
    pub max_memory_mib: u64,
    pub max_disk_gib: u64,
    /// How long a graceful (ACPI) stop may take before the VM is forced off.
    pub stop_timeout_secs: u64,
    /// DNS servers written into every VM's network-config (none by default).
    pub nameservers: Vec<std::net::Ipv4Addr>,
    pub http: HttpLimits,
    pub network: Option<crate::network::NetworkConfig>,
    pub driver: DriverConfig,
    /// The HTTPS edge this agent runs (DATA-1, NET-4), validated.
    pub edge: Option<crate::edge::EdgeSettings>,
}

/// Source of environment variables, injectable for tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl AgentConfig {
    /// Load from an optional file, then apply `CLAWY_AGENT_*` overrides.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse_file(p, &text)?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, env)
    }

    /// Parse a config from TOML text (no file on disk); used by tests.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let file = Self::parse_file(Path::new("<inline>"), text)?;
        Self::from_parts(file, env)
    }

    fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        // toml's message for `deny_unknown_fields` names the unknown key.
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    fn from_parts(file: FileConfig, env: &dyn Env) -> Result<Self, ConfigError> {
        let listen_text = env
            .var("CLAWY_AGENT_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid("listen", format!("`{listen_text}` is not an address:port")))?;
        let state_dir = env
            .var("CLAWY_AGENT_STATE_DIR")
            .map(PathBuf::from)
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        let images_dir = env
            .var("CLAWY_AGENT_IMAGES_DIR")
            .map(PathBuf::from)
            .or(file.images_dir)
            .unwrap_or_else(|| state_dir.join("images"));
        if !images_dir.is_absolute() {
            return Err(invalid("images_dir", "must be an absolute path"));
        }
        let location = env
            .var("CLAWY_AGENT_LOCATION")
            .or(file.location)
            .unwrap_or_else(|| "local".to_string());
        if location.is_empty()
            || location.len() > 64
            || !location
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "location",
                "use 1-64 letters, digits, '-', '_' or '.' (e.g. DE-fra1)",
            ));
        }
        let num =
            |key: &str, env_key: &str, file_v: Option<u64>| -> Result<Option<u64>, ConfigError> {
                match env.var(env_key) {
                    Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                        invalid(key, format!("`{v}` (from {env_key}) is not a number"))
                    }),
                    None => Ok(file_v),
                }
            };
        let host = HostResources::detect(&state_dir);
        let max_vcpus = num("max_vcpus", "CLAWY_AGENT_MAX_VCPUS", file.max_vcpus)?
            .unwrap_or_else(|| host.cpu_cores.saturating_sub(1).max(1));
        let max_memory_mib = num(
            "max_memory_mib",
            "CLAWY_AGENT_MAX_MEMORY_MIB",
            file.max_memory_mib,
        )?
        .unwrap_or_else(|| host.memory_mib.saturating_sub(MEMORY_RESERVE_MIB).max(256));
        let max_disk_gib = num(
            "max_disk_gib",
            "CLAWY_AGENT_MAX_DISK_GIB",
            file.max_disk_gib,
        )?
        .unwrap_or_else(|| host.disk_gib * (100 - DISK_RESERVE_PERCENT) / 100);
        for (key, v) in [("max_vcpus", max_vcpus), ("max_memory_mib", max_memory_mib)] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let stop_timeout_secs = num(
            "stop_timeout_secs",
            "CLAWY_AGENT_STOP_TIMEOUT_SECS",
            file.stop_timeout_secs,
        )?
        .unwrap_or(30);
        // One timeout story: a stop must fit in the operation budget every caller
        // derives its own timeouts from (clawy_proto::agent::OPERATION_TIMEOUT_SECS).
        if stop_timeout_secs == 0 || stop_timeout_secs > MAX_STOP_TIMEOUT_SECS {
            return Err(invalid(
                "stop_timeout_secs",
                format!("must be between 1 and {MAX_STOP_TIMEOUT_SECS}"),
            ));
        }
        let driver_file = file.driver.unwrap_or_default();
        let kind = match env.var("CLAWY_AGENT_DRIVER") {
            Some(v) => match v.as_str() {
                "qemu" => DriverKind::Qemu,
                "proxmox" => DriverKind::Proxmox,
                _ => return Err(invalid("driver.kind", "must be qemu or proxmox")),
            },
            None => driver_file.kind.unwrap_or_default(),
        };
        let driver = match kind {
            DriverKind::Qemu => {
                if driver_file.proxmox.is_some() {
                    return Err(invalid(
                        "driver.proxmox",
                        "given, but driver.kind is qemu; set kind = \"proxmox\" or remove the section",
                    ));
                }
                DriverConfig::Qemu(qemu_config(driver_file.qemu.unwrap_or_default(), env)?)
            }
            DriverKind::Proxmox => {
                if driver_file.qemu.is_some() {
                    return Err(invalid(
                        "driver.qemu",
                        "given, but driver.kind is proxmox; remove the section",
                    ));
                }
                let Some(p) = driver_file.proxmox else {
                    return Err(invalid(
                        "driver.proxmox",
                        "driver.kind is proxmox but the [driver.proxmox] section is missing",
                    ));
                };
                DriverConfig::Proxmox(Box::new(p.validate(file.network.as_ref())?))
            }
        };
        let secs = |key: &str, v: Option<u64>, default: std::time::Duration| match v {
            Some(0) => Err(invalid(key, "must be at least 1 second")),
            Some(n) if n > 3600 => Err(invalid(key, "must be at most 3600 seconds")),
            Some(n) => Ok(std::time::Duration::from_secs(n)),
            None => Ok(default),
        };
        let d = DEFAULT_HTTP_LIMITS;
        let max_connections = match file.max_connections {
            Some(n) if !(16..=1_000_000).contains(&n) => {
                return Err(invalid("max_connections", "must be between 16 and 1000000"));
            }
            Some(n) => n as usize,
            None => d.max_connections,
        };
        let http = HttpLimits {
            max_connections,
            tls_handshake_timeout: secs(
                "tls_handshake_timeout_secs",
                file.tls_handshake_timeout_secs,
                d.tls_handshake_timeout,
            )?,
            header_read_timeout: secs(
                "header_read_timeout_secs",
                file.header_read_timeout_secs,
                d.header_read_timeout,
            )?,
            idle_timeout: secs("idle_timeout_secs", file.idle_timeout_secs, d.idle_timeout)?,
        };
        let edge = match file.edge {
            Some(raw) => Some(crate::edge::EdgeSettings::validate(raw).map_err(|e| {
                // The message already reads `edge.<key>: …`; the key is named once.
                let text = e.to_string();
                let message = text
                    .split_once(": ")
                    .map_or(text.clone(), |(_, m)| m.to_string());
                invalid(&format!("edge.{}", e.key()), message)
            })?),
            None => None,
        };
        Ok(AgentConfig {
            listen,
            state_dir,
            images_dir,
            location,
            max_vcpus,
            max_memory_mib,
            max_disk_gib,
            stop_timeout_secs,
            nameservers: file.nameservers.unwrap_or_default(),
            http,
            network: file.network,
            driver,
            edge,
        })
    }

    /// The `[driver.qemu]` settings when that is the driver in use.
    pub fn qemu(&self) -> Option<&QemuConfig> {
        match &self.driver {
            DriverConfig::Qemu(q) => Some(q),
            DriverConfig::Proxmox(_) => None,
        }
    }
}

/// Longest graceful stop: leaves 30 s of the operation budget for the rest of
/// the request (forcing off, status).
pub const MAX_STOP_TIMEOUT_SECS: u64 = clawy_proto::agent::OPERATION_TIMEOUT_SECS - 30;

fn qemu_config(file: QemuFile, env: &dyn Env) -> Result<QemuConfig, ConfigError> {
    let accelerator = match env.var("CLAWY_AGENT_ACCELERATOR") {
        Some(v) => match v.as_str() {
            "auto" => AccelChoice::Auto,
            "kvm" => AccelChoice::Kvm,
            "tcg" => AccelChoice::Tcg,
            _ => {
                return Err(invalid(
                    "driver.qemu.accelerator",
                    "must be auto, kvm or tcg",
                ));
            }
        },
        None => file.accelerator.unwrap_or_default(),
    };
    let pin_cpus = match env.var("CLAWY_AGENT_PIN_CPUS") {
        Some(v) => match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(invalid("driver.qemu.pin_cpus", "must be true or false")),
        },
        None => file.pin_cpus.unwrap_or(false),
    };
    let uid_range = match file.uid_range {
        Some(text) => UidRange::parse(&text).map_err(|m| invalid("driver.qemu.uid_range", m))?,
        None => DEFAULT_QEMU_UID_RANGE,
    };
    Ok(QemuConfig {
        binary: file
            .binary
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
        accelerator,
        pin_cpus,
        uid_range,
    })
}

/// What the machine has (cores, RAM, the state filesystem's size).
#[derive(Debug, Clone, Copy)]
pub struct HostResources {
    pub cpu_cores: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl HostResources {
    pub fn detect(state_dir: &Path) -> Self {
        let cpu_cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        // The state dir may not exist yet: measure the nearest existing ancestor.
        let mut probe = state_dir.to_path_buf();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        let disk_gib = rustix::fs::statvfs(&probe)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize) / (1024 * 1024 * 1024))
            .unwrap_or(0);
        HostResources {
            cpu_cores,
            memory_mib,
            disk_gib,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|v| v.to_string())
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = AgentConfig::from_toml(
            "listen = \"127.0.0.1:1\"\nbogus_key = 1\n",
            &MapEnv(HashMap::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus_key"), "{err}");
    }

    const EDGE: &str = "[edge]\ninstances_apex = \"claws.example.com\"\nhttps_listen = [\"0.0.0.0:443\"]\nagent_http = \"127.0.0.1:7611\"\nagent_dns = \"127.0.0.1:7653\"\nadmin_socket = \"/run/caddy/admin.sock\"\nstorage_root = \"/var/lib/caddy/.local/share/caddy\"\nissuer = \"internal\"\n";

    #[test]
    fn edge_section_is_validated_and_optional() {
        let env = MapEnv(HashMap::new());
        assert!(AgentConfig::from_toml("", &env).unwrap().edge.is_none());
        let c = AgentConfig::from_toml(EDGE, &env).unwrap();
        let e = c.edge.unwrap();
        assert_eq!(e.instances_apex.as_str(), "claws.example.com");
        assert_eq!(e.issuer, crate::edge::Issuer::Internal);
        assert_eq!(e.check_interval, std::time::Duration::from_secs(30));
    }

    #[test]
    fn edge_unknown_key_is_named() {
        let err = AgentConfig::from_toml(
            &format!("{EDGE}caddy_admin_port = 2019\n"),
            &MapEnv(HashMap::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("caddy_admin_port"), "{err}");
    }

    #[test]
    fn edge_bad_value_names_its_key() {
        let text = EDGE.replace("127.0.0.1:7611", "0.0.0.0:7611");
        let err = AgentConfig::from_toml(&text, &MapEnv(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key `edge.agent_http`: must be a loopback address"
        );
        let text = EDGE.replace("\"internal\"", "\"acme\"");
        let err = AgentConfig::from_toml(&text, &MapEnv(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key `edge.acme_email`:"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let env = MapEnv(HashMap::from([
            ("CLAWY_AGENT_LISTEN", "127.0.0.1:9999"),
            ("CLAWY_AGENT_STATE_DIR", "/tmp/x"),
        ]));
        let c = AgentConfig::from_toml("listen = \"127.0.0.1:1\"\nstate_dir = \"/tmp/y\"\n", &env)
            .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.images_dir, PathBuf::from("/tmp/x/images"));
    }

    #[test]
    fn bad_listen_names_key() {
        let env = MapEnv(HashMap::from([("CLAWY_AGENT_LISTEN", "nope")]));
        let err = AgentConfig::from_toml("", &env).unwrap_err().to_string();
        assert!(err.contains("`listen`"), "{err}");
    }

    #[test]
    fn iso_4_qemu_uid_range_is_validated_and_must_be_unused() {
        let env = MapEnv(HashMap::new());
        let c = AgentConfig::from_toml("state_dir = \"/tmp\"", &env).unwrap();
        assert_eq!(c.qemu().unwrap().uid_range, DEFAULT_QEMU_UID_RANGE);
        for bad in ["0-100", "70000-69999", "x-1", "70000", "70000-2147483648"] {
            let err =
                AgentConfig::from_toml(&format!("[driver.qemu]\nuid_range = \"{bad}\""), &env)
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("`driver.qemu.uid_range`"), "{bad}: {err}");
        }
        let etc = tempfile::tempdir().unwrap();
        let r = UidRange::parse("100000-165535").unwrap();
        std::fs::write(etc.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        r.check_unused(etc.path()).unwrap();
        std::fs::write(etc.path().join("subuid"), "alice:100000:65536\n").unwrap();
        let err = r.check_unused(etc.path()).unwrap_err().to_string();
        assert!(err.contains("uid_range") && err.contains("alice"), "{err}");
        std::fs::remove_file(etc.path().join("subuid")).unwrap();
        std::fs::write(etc.path().join("group"), "vm:x:120000:\n").unwrap();
        let err = r.check_unused(etc.path()).unwrap_err().to_string();
        assert!(err.contains("`vm`"), "{err}");
    }

    #[test]
    fn http_limits_validated() {
        let env = MapEnv(HashMap::new());
        let c =
            AgentConfig::from_toml("idle_timeout_secs = 5\nmax_connections = 100", &env).unwrap();
        assert_eq!(c.http.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.http.max_connections, 100);
        for (text, key) in [
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            (
                "tls_handshake_timeout_secs = 99999",
                "tls_handshake_timeout_secs",
            ),
            ("max_connections = 1", "max_connections"),
        ] {
            let err = AgentConfig::from_toml(text, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn defaults_are_loopback_and_host_derived() {
        let c = AgentConfig::from_toml("state_dir = \"/tmp\"", &MapEnv(HashMap::new())).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.max_vcpus >= 1);
        assert_eq!(c.qemu().unwrap().accelerator, AccelChoice::Auto);
    }

    #[test]
    fn driver_sections() {
        let env = MapEnv(HashMap::new());
        let c = AgentConfig::from_toml(
            "[driver]\nkind = \"qemu\"\n[driver.qemu]\nbinary = \"/usr/bin/q\"\naccelerator = \"tcg\"\npin_cpus = true\n",
            &env,
        )
        .unwrap();
        let q = c.qemu().unwrap();
        assert_eq!(q.binary, PathBuf::from("/usr/bin/q"));
        assert_eq!(q.accelerator, AccelChoice::Tcg);
        assert!(q.pin_cpus);
        // The old top-level keys are refused by name.
        for old in [
            "accelerator = \"tcg\"",
            "qemu_binary = \"/x\"",
            "pin_cpus = true",
        ] {
            let key = old.split(' ').next().unwrap();
            let err = AgentConfig::from_toml(old, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{old}: {err}");
        }
        let err = AgentConfig::from_toml("[driver.qemu]\nbogus = 1\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = AgentConfig::from_toml("[driver]\nkind = \"proxmox\"\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("driver.proxmox"), "{err}");
        let err = AgentConfig::from_toml("[driver]\nkind = \"xen\"\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("xen") || err.contains("kind"), "{err}");
        let err = AgentConfig::from_toml("stop_timeout_secs = 100000\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stop_timeout_secs"), "{err}");
    }
}
