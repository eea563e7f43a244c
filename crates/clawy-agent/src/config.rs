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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
    accelerator: Option<AccelChoice>,
    stop_timeout_secs: Option<u64>,
    qemu_binary: Option<PathBuf>,
    pin_cpus: Option<bool>,
    nameservers: Option<Vec<std::net::Ipv4Addr>>,
    /// Host network (bridge, NAT, forwards); absent = VMs get no NIC and the agent
    /// touches no interface (used by API-only tests).
    network: Option<crate::network::NetworkConfig>,
}

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
    pub accelerator: AccelChoice,
    /// How long a graceful (ACPI) stop may take before QEMU is told to quit.
    pub stop_timeout_secs: u64,
    pub qemu_binary: PathBuf,
    /// ISO-2 (optional): pin each VM's QEMU to host CPUs no other VM uses.
    pub pin_cpus: bool,
    /// DNS servers written into every VM's network-config (none by default).
    pub nameservers: Vec<std::net::Ipv4Addr>,
    pub network: Option<crate::network::NetworkConfig>,
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
        let accelerator = match env.var("CLAWY_AGENT_ACCELERATOR") {
            Some(v) => match v.as_str() {
                "auto" => AccelChoice::Auto,
                "kvm" => AccelChoice::Kvm,
                "tcg" => AccelChoice::Tcg,
                _ => return Err(invalid("accelerator", "must be auto, kvm or tcg")),
            },
            None => file.accelerator.unwrap_or_default(),
        };
        let stop_timeout_secs = num(
            "stop_timeout_secs",
            "CLAWY_AGENT_STOP_TIMEOUT_SECS",
            file.stop_timeout_secs,
        )?
        .unwrap_or(30);
        let pin_cpus = match env.var("CLAWY_AGENT_PIN_CPUS") {
            Some(v) => match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(invalid("pin_cpus", "must be true or false")),
            },
            None => file.pin_cpus.unwrap_or(false),
        };
        let qemu_binary = file
            .qemu_binary
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
        Ok(AgentConfig {
            listen,
            state_dir,
            images_dir,
            location,
            max_vcpus,
            max_memory_mib,
            max_disk_gib,
            accelerator,
            stop_timeout_secs,
            qemu_binary,
            pin_cpus,
            nameservers: file.nameservers.unwrap_or_default(),
            network: file.network,
        })
    }
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
    fn defaults_are_loopback_and_host_derived() {
        let c = AgentConfig::from_toml("state_dir = \"/tmp\"", &MapEnv(HashMap::new())).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.max_vcpus >= 1);
        assert_eq!(c.accelerator, AccelChoice::Auto);
    }
}
