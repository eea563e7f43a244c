//! Control-plane configuration: a TOML file plus `CLAWY_*` environment overrides
//! (the environment wins). Unknown keys in the file are refused with a message naming
//! the key. [`ServerConfig::validate`] explains what is wrong with a value and why.
//!
//! Every file key `foo_bar` has the environment variable `CLAWY_FOO_BAR`. Lists
//! (`trusted_proxies`) are comma-separated in the environment. Other `CLAWY_*`
//! variables (e.g. `CLAWY_TEST_DB`, used by the test suite) are not config keys and are
//! ignored here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use url::Url;

use crate::error::{DomainError, ErrorKind};
pub use clawy_proto::names::DnsName;

/// Lowest bcrypt cost accepted in production (AUTH-1).
pub const MIN_BCRYPT_COST: u32 = 12;
/// Lowest bcrypt cost accepted at all (only with `insecure_test_mode`).
pub const MIN_TEST_BCRYPT_COST: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key; the message names the key.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// An environment override could not be parsed.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value is out of range or inconsistent; `key` names the config key.
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl DomainError for ConfigError {
    fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "config_read",
            ConfigError::Parse { .. } => "config_parse",
            ConfigError::Env { .. } => "config_env",
            ConfigError::Invalid { .. } => "config_invalid",
        }
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid { field: "config" }
    }
}

/// The file format: every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub base_url: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub bcrypt_cost: Option<u32>,
    pub insecure_test_mode: Option<bool>,
    pub session_idle_minutes: Option<u64>,
    pub session_absolute_hours: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub security_contact: Option<String>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub email_verification: Option<bool>,
    pub signup_mode: Option<String>,
    pub login_ip_max_failures: Option<u32>,
    pub login_ip_window_seconds: Option<u64>,
    pub login_account_lock_threshold: Option<u32>,
    pub login_account_lock_base_seconds: Option<u64>,
    pub login_account_lock_max_seconds: Option<u64>,
    pub api_key_ip_max_failures: Option<u32>,
    pub reports_per_hour: Option<u32>,
    pub password_resets_per_hour: Option<u32>,
    pub signups_per_hour: Option<u32>,
    pub ipv6_bucket_prefix: Option<u8>,
    pub allowed_countries: Option<Vec<String>>,
    pub default_plan: Option<String>,
    pub default_region: Option<String>,
    pub instance_quota: Option<u32>,
    pub job_workers: Option<u32>,
    pub reconcile_interval_secs: Option<u64>,
    pub metrics_interval_secs: Option<u64>,
    pub base_image: Option<String>,
    pub instances_domain: Option<String>,
    pub dns_server: Option<String>,
    pub dns_zone: Option<String>,
    pub dns_ttl_secs: Option<u32>,
    pub dns_timeout_secs: Option<u64>,
    pub guest_image_manifest: Option<PathBuf>,
}

#[derive(Clone, Copy)]
enum KeyType {
    Str,
    Int,
    Bool,
    List,
}

/// Every config key, its type (for parsing the environment override) — the single list
/// both the loader and the docs use.
const KEYS: &[(&str, KeyType)] = &[
    ("listen", KeyType::Str),
    ("data_dir", KeyType::Str),
    ("database_url", KeyType::Str),
    ("base_url", KeyType::Str),
    ("secret_key_file", KeyType::Str),
    ("bcrypt_cost", KeyType::Int),
    ("insecure_test_mode", KeyType::Bool),
    ("session_idle_minutes", KeyType::Int),
    ("session_absolute_hours", KeyType::Int),
    ("trusted_proxies", KeyType::List),
    ("security_contact", KeyType::Str),
    ("smtp_url", KeyType::Str),
    ("mail_from", KeyType::Str),
    ("email_verification", KeyType::Bool),
    ("signup_mode", KeyType::Str),
    ("login_ip_max_failures", KeyType::Int),
    ("login_ip_window_seconds", KeyType::Int),
    ("login_account_lock_threshold", KeyType::Int),
    ("login_account_lock_base_seconds", KeyType::Int),
    ("login_account_lock_max_seconds", KeyType::Int),
    ("api_key_ip_max_failures", KeyType::Int),
    ("reports_per_hour", KeyType::Int),
    ("password_resets_per_hour", KeyType::Int),
    ("signups_per_hour", KeyType::Int),
    ("ipv6_bucket_prefix", KeyType::Int),
    ("allowed_countries", KeyType::List),
    ("default_plan", KeyType::Str),
    ("default_region", KeyType::Str),
    ("instance_quota", KeyType::Int),
    ("job_workers", KeyType::Int),
    ("reconcile_interval_secs", KeyType::Int),
    ("metrics_interval_secs", KeyType::Int),
    ("base_image", KeyType::Str),
    ("instances_domain", KeyType::Str),
    ("dns_server", KeyType::Str),
    ("dns_zone", KeyType::Str),
    ("dns_ttl_secs", KeyType::Int),
    ("dns_timeout_secs", KeyType::Int),
    ("guest_image_manifest", KeyType::Str),
];

/// The names of all config keys (file) — `CLAWY_` + uppercase is the environment name.
pub fn config_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _)| *k)
}

/// Who may create an account through the signup page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SignupMode {
    /// Anyone (rate-limited per address).
    Open,
    /// Only with an invitation an operator created (`clawy admin create-invite`).
    Invite,
}

/// Login throttling settings (AUTH-5).
#[derive(Debug, Clone, Serialize)]
pub struct ThrottleConfig {
    /// Failed logins from one client address within the window before answering 429.
    pub ip_max_failures: u32,
    pub ip_window_seconds: u64,
    /// Consecutive failures on one account before the soft lock starts.
    pub account_lock_threshold: u32,
    /// First lock duration; doubles with each further failure, up to the max.
    pub account_lock_base_seconds: u64,
    pub account_lock_max_seconds: u64,
    /// Failed API-key authentications from one address within the window before 429.
    pub api_key_ip_max_failures: u32,
    /// Vulnerability reports accepted per client address per hour (REPORT-1).
    pub reports_per_hour: u32,
    /// Password-reset requests per client address per hour.
    pub password_resets_per_hour: u32,
    /// Accounts created per client address per hour (signup abuse).
    pub signups_per_hour: u32,
    /// Per-address limits count an IPv6 client by this prefix (default /64: one
    /// subscriber's whole allocation is one bucket, so rotating through it buys nothing).
    pub ipv6_bucket_prefix: u8,
}

/// A trusted proxy: an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (canonical_ip(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix.min(32))
                };
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix.min(128))
                };
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The file this was loaded from, if one existed.
    pub config_path: Option<PathBuf>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` (default `<data_dir>/clawy.db`) or `postgres://…` (TLS parameters
    /// such as `sslmode=verify-full&sslrootcert=…` are passed through; DATA-4).
    pub database_url: String,
    /// The public URL (links in mails, cookie `Secure`/HSTS decisions).
    pub base_url: Url,
    pub secret_key_file: PathBuf,
    pub bcrypt_cost: u32,
    /// Only tests set this: allows bcrypt costs below 12.
    pub insecure_test_mode: bool,
    pub session_idle_minutes: u64,
    pub session_absolute_hours: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub security_contact: String,
    /// e.g. `smtp://127.0.0.1:2525`; without it mails are logged as not sent.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// New accounts verify their email address (a mailed link) before their first
    /// instance. Default: on when `smtp_url` is set (it cannot work without mail).
    pub email_verification: bool,
    /// Who may sign up.
    pub signup_mode: SignupMode,
    pub throttle: ThrottleConfig,
    /// DATA-2: countries (ISO 3166-1 alpha-2, upper case) where instances may be
    /// placed. Default `["DE"]`.
    pub allowed_countries: Vec<String>,
    /// Plan used when a create request names none (default `small`).
    pub default_plan: String,
    /// Region (country code) used when a create request names none (default `DE`).
    pub default_region: String,
    /// Instances one user may have (not counting deleted ones). Default 3.
    pub instance_quota: u32,
    /// Concurrent job runners per server process. Default 4.
    pub job_workers: u32,
    /// Seconds between reconcile passes. Default 30.
    pub reconcile_interval_secs: u64,
    /// Seconds between metrics/health polls. Default 30.
    pub metrics_interval_secs: u64,
    /// Base image name (in each agent's images directory) new instances boot from.
    pub base_image: String,
    /// The build manifest of that image (`<image>.manifest.json`): what the security
    /// page reads to know whether the guest has UFW, fail2ban and an SSH server.
    pub guest_image_manifest: Option<PathBuf>,
    /// The apex under which every instance gets its public hostname
    /// `<name>-<short id>.<instances_domain>`. `None`: no hostnames, no edge.
    pub instances_domain: Option<DnsName>,
    /// RFC 2136 publication of the instances' records; `None`: the operator
    /// points a wildcard record at the host instead (docs/EDGE.md).
    pub dns: Option<DnsSettings>,
}

/// Where the control plane publishes instance records. The TSIG secret is not here:
/// it is handed over once with `clawy admin dns-set-key` and stored sealed (DATA-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The operator's authoritative server, `ip:port`.
    pub server: SocketAddr,
    /// The zone updated (its SOA owner); `instances_domain` or a parent of it.
    pub zone: DnsName,
    pub ttl_secs: u32,
    /// Bound of every update or query.
    pub timeout_secs: u64,
}

fn default_data_dir(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(x) = env.get("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(x).join("clawy");
    }
    if let Some(h) = env.get("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(h).join(".local/share/clawy");
    }
    PathBuf::from("/var/lib/clawy")
}

impl ServerConfig {
    /// Loads from `path` (or `<data_dir>/clawy.toml` when `None`; a missing default file
    /// means all defaults) plus the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<ServerConfig, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// Like [`ServerConfig::load`] with an explicit environment (tests).
    /// `CLAWY_CONFIG` in `env` names the file when `path` is `None`.
    pub fn load_with_env(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<ServerConfig, ConfigError> {
        let explicit = path.map(Path::to_path_buf).or_else(|| {
            env.get("CLAWY_CONFIG")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        let (file_path, text) = match explicit {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                (Some(p), Some(text))
            }
            None => {
                // The default path depends on data_dir, which the environment may set.
                let data_dir = env
                    .get("CLAWY_DATA_DIR")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_data_dir(env));
                let p = data_dir.join("clawy.toml");
                match std::fs::read_to_string(&p) {
                    Ok(t) => (Some(p), Some(t)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
                    Err(source) => return Err(ConfigError::Read { path: p, source }),
                }
            }
        };
        Self::from_toml_and_env(text.as_deref().unwrap_or(""), file_path, env)
    }

    /// Parses TOML text, applies environment overrides, resolves defaults and validates.
    pub fn from_toml_and_env(
        text: &str,
        file_path: Option<PathBuf>,
        env: &BTreeMap<String, String>,
    ) -> Result<ServerConfig, ConfigError> {
        let shown = file_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<config>"));
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.message().to_string(),
        })?;
        // Reject unknown keys by name before serde, for a message that leads with the key.
        for key in table.keys() {
            if !KEYS.iter().any(|(k, _)| k == key) {
                return Err(ConfigError::Parse {
                    path: shown.clone(),
                    message: format!(
                        "unknown key `{key}` (known keys: {})",
                        config_keys().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        for (key, ty) in KEYS {
            let var = format!("CLAWY_{}", key.to_ascii_uppercase());
            let Some(raw) = env.get(&var) else { continue };
            let value = match ty {
                KeyType::Str => toml::Value::String(raw.clone()),
                KeyType::Int => toml::Value::Integer(raw.trim().parse::<i64>().map_err(|_| {
                    ConfigError::Env {
                        var: var.clone(),
                        message: format!("`{raw}` is not a whole number"),
                    }
                })?),
                KeyType::Bool => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" | "" => false,
                    _ => {
                        return Err(ConfigError::Env {
                            var,
                            message: format!("`{raw}` is not true or false"),
                        });
                    }
                }),
                KeyType::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
            };
            table.insert((*key).to_string(), value);
        }
        let file: ConfigFile =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: shown.clone(),
                    message: e.message().to_string(),
                })?;
        let mut cfg = Self::resolve(file, env)?;
        cfg.config_path = file_path;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve(f: ConfigFile, env: &BTreeMap<String, String>) -> Result<ServerConfig, ConfigError> {
        let listen_s = f.listen.unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen: SocketAddr = listen_s.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            message: format!("`{listen_s}` is not an address:port such as 127.0.0.1:8080"),
        })?;
        let data_dir = f.data_dir.unwrap_or_else(|| default_data_dir(env));
        let database_url = f
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("clawy.db").display()));
        let base_s = f.base_url.unwrap_or_else(|| format!("http://{listen}"));
        let base_url = Url::parse(&base_s).map_err(|e| ConfigError::Invalid {
            key: "base_url",
            message: format!("`{base_s}` is not a URL: {e}"),
        })?;
        let host = base_url.host_str().unwrap_or("localhost").to_string();
        let smtp_configured = f.smtp_url.as_deref().is_some_and(|s| !s.trim().is_empty());
        let trusted_proxies = f
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|s| IpNet::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                key: "trusted_proxies",
                message,
            })?;
        let instances_domain = match f.instances_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(
                DnsName::parse(&d.to_ascii_lowercase(), "instances_domain", 2).map_err(|e| {
                    ConfigError::Invalid {
                        key: "instances_domain",
                        message: e.to_string(),
                    }
                })?,
            ),
        };
        if let Some(d) = &instances_domain {
            // An instance label (up to 63 characters and a dot) must still fit the
            // 253-character name.
            if d.as_str().len() > 253 - 64 {
                return Err(ConfigError::Invalid {
                    key: "instances_domain",
                    message: "is longer than 189 characters (an instance label must fit before it)"
                        .to_string(),
                });
            }
        }
        let dns =
            match f.dns_server.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(server_s) => {
                    let server: SocketAddr = server_s.parse().map_err(|_| ConfigError::Invalid {
                    key: "dns_server",
                    message: format!(
                        "`{server_s}` is not ip:port such as 192.0.2.53:53 (no host names: the \
                         publisher must not depend on DNS to find DNS)"
                    ),
                })?;
                    let Some(apex) = instances_domain.clone() else {
                        return Err(ConfigError::Invalid {
                            key: "dns_server",
                            message: "needs instances_domain (the names it publishes)".to_string(),
                        });
                    };
                    let zone =
                        match f.dns_zone.as_deref().map(str::trim) {
                            None | Some("") => apex.clone(),
                            Some(z) => DnsName::parse(&z.to_ascii_lowercase(), "dns_zone", 1)
                                .map_err(|e| ConfigError::Invalid {
                                    key: "dns_zone",
                                    message: e.to_string(),
                                })?,
                        };
                    let inside =
                        apex == zone || apex.as_str().ends_with(&format!(".{}", zone.as_str()));
                    if !inside {
                        return Err(ConfigError::Invalid {
                            key: "dns_zone",
                            message: format!("`{zone}` does not contain instances_domain `{apex}`"),
                        });
                    }
                    Some(DnsSettings {
                        server,
                        zone,
                        ttl_secs: f.dns_ttl_secs.unwrap_or(60),
                        timeout_secs: f.dns_timeout_secs.unwrap_or(5),
                    })
                }
            };
        Ok(ServerConfig {
            config_path: None,
            instances_domain,
            dns,
            listen,
            secret_key_file: f
                .secret_key_file
                .unwrap_or_else(|| data_dir.join("secret.key")),
            data_dir,
            database_url,
            bcrypt_cost: f.bcrypt_cost.unwrap_or(MIN_BCRYPT_COST),
            insecure_test_mode: f.insecure_test_mode.unwrap_or(false),
            session_idle_minutes: f.session_idle_minutes.unwrap_or(30),
            session_absolute_hours: f.session_absolute_hours.unwrap_or(12),
            trusted_proxies,
            security_contact: f
                .security_contact
                .unwrap_or_else(|| format!("security@{host}")),
            smtp_url: f.smtp_url.filter(|s| !s.trim().is_empty()),
            mail_from: f
                .mail_from
                .unwrap_or_else(|| format!("Clawy <noreply@{host}>")),
            email_verification: f.email_verification.unwrap_or(smtp_configured),
            signup_mode: match f.signup_mode.as_deref().map(str::trim) {
                None | Some("") | Some("open") => SignupMode::Open,
                Some("invite") => SignupMode::Invite,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "signup_mode",
                        message: format!("`{other}` is neither `open` nor `invite`"),
                    });
                }
            },
            throttle: ThrottleConfig {
                ip_max_failures: f.login_ip_max_failures.unwrap_or(20),
                ip_window_seconds: f.login_ip_window_seconds.unwrap_or(15 * 60),
                account_lock_threshold: f.login_account_lock_threshold.unwrap_or(5),
                account_lock_base_seconds: f.login_account_lock_base_seconds.unwrap_or(60),
                account_lock_max_seconds: f.login_account_lock_max_seconds.unwrap_or(15 * 60),
                api_key_ip_max_failures: f.api_key_ip_max_failures.unwrap_or(50),
                reports_per_hour: f.reports_per_hour.unwrap_or(5),
                password_resets_per_hour: f.password_resets_per_hour.unwrap_or(5),
                signups_per_hour: f.signups_per_hour.unwrap_or(10),
                ipv6_bucket_prefix: f.ipv6_bucket_prefix.unwrap_or(64),
            },
            allowed_countries: f
                .allowed_countries
                .unwrap_or_else(|| vec!["DE".to_string()])
                .iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .collect(),
            default_plan: f.default_plan.unwrap_or_else(|| "small".to_string()),
            default_region: f
                .default_region
                .map(|r| r.trim().to_ascii_uppercase())
                .unwrap_or_else(|| "DE".to_string()),
            instance_quota: f.instance_quota.unwrap_or(3),
            job_workers: f.job_workers.unwrap_or(4),
            reconcile_interval_secs: f.reconcile_interval_secs.unwrap_or(30),
            metrics_interval_secs: f.metrics_interval_secs.unwrap_or(30),
            base_image: f
                .base_image
                .unwrap_or_else(|| "clawy-test-guest.qcow2".to_string()),
            guest_image_manifest: f.guest_image_manifest,
            base_url,
        })
    }

    /// Defaults for everything, rooted at `data_dir` (tests and embedded use).
    #[allow(clippy::expect_used)]
    pub fn defaults_in(data_dir: &Path) -> ServerConfig {
        let mut env = BTreeMap::new();
        env.insert("CLAWY_DATA_DIR".to_string(), data_dir.display().to_string());
        let file = ConfigFile {
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        };
        // resolve only fails on bad explicit values; none are given here.
        Self::resolve(file, &env).expect("built-in defaults are valid")
    }

    /// Checks values; errors name the key and say why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        if self.data_dir.as_os_str().is_empty() {
            return bad(
                "data_dir",
                "is empty; give a directory path, or unset CLAWY_DATA_DIR for the default".into(),
            );
        }
        if self.bcrypt_cost > 31 {
            return bad(
                "bcrypt_cost",
                format!("{} is above bcrypt's maximum of 31", self.bcrypt_cost),
            );
        }
        if self.bcrypt_cost < MIN_BCRYPT_COST {
            if !self.insecure_test_mode {
                return bad(
                    "bcrypt_cost",
                    format!(
                        "{} is below {MIN_BCRYPT_COST}; production refuses weaker password hashing (AUTH-1)",
                        self.bcrypt_cost
                    ),
                );
            }
            if self.bcrypt_cost < MIN_TEST_BCRYPT_COST {
                return bad(
                    "bcrypt_cost",
                    format!("{} is below bcrypt's minimum of 4", self.bcrypt_cost),
                );
            }
        }
        match self.base_url.scheme() {
            "http" | "https" => {}
            s => return bad("base_url", format!("scheme `{s}` is not http or https")),
        }
        if self.base_url.host_str().is_none() {
            return bad("base_url", "has no host".to_string());
        }
        if self.session_idle_minutes == 0 {
            return bad("session_idle_minutes", "must be at least 1".to_string());
        }
        if self.session_absolute_hours == 0 {
            return bad("session_absolute_hours", "must be at least 1".to_string());
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return bad(
                "database_url",
                "must start with sqlite:// or postgres:// (MySQL is not supported)".to_string(),
            );
        }
        if let Err(message) = check_postgres_tls(&self.database_url) {
            return bad("database_url", message);
        }
        if !self.security_contact.contains('@') && !self.security_contact.starts_with("https://") {
            return bad(
                "security_contact",
                format!(
                    "`{}` is neither an email address nor an https:// URL",
                    self.security_contact
                ),
            );
        }
        if let Some(u) = &self.smtp_url {
            match Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "smtp" | "smtps") => {}
                _ => {
                    return bad(
                        "smtp_url",
                        format!("`{u}` is not an smtp:// or smtps:// URL"),
                    );
                }
            }
        }
        let t = &self.throttle;
        if t.ip_max_failures == 0 {
            return bad("login_ip_max_failures", "must be at least 1".to_string());
        }
        if t.ip_window_seconds == 0 {
            return bad("login_ip_window_seconds", "must be at least 1".to_string());
        }
        if t.account_lock_threshold == 0 {
            return bad(
                "login_account_lock_threshold",
                "must be at least 1".to_string(),
            );
        }
        if t.account_lock_base_seconds == 0
            || t.account_lock_max_seconds < t.account_lock_base_seconds
        {
            return bad(
                "login_account_lock_max_seconds",
                "must be at least login_account_lock_base_seconds, which must be at least 1"
                    .to_string(),
            );
        }
        if t.api_key_ip_max_failures == 0 {
            return bad("api_key_ip_max_failures", "must be at least 1".to_string());
        }
        if t.reports_per_hour == 0 {
            return bad("reports_per_hour", "must be at least 1".to_string());
        }
        if t.password_resets_per_hour == 0 {
            return bad("password_resets_per_hour", "must be at least 1".to_string());
        }
        if self.email_verification && self.smtp_url.is_none() {
            return bad(
                "email_verification",
                "needs smtp_url: verification links are mailed".to_string(),
            );
        }
        if t.signups_per_hour == 0 {
            return bad("signups_per_hour", "must be at least 1".to_string());
        }
        if !(32..=128).contains(&t.ipv6_bucket_prefix) {
            return bad(
                "ipv6_bucket_prefix",
                "must be 32..=128 (64 counts one subscriber's /64 as one address)".to_string(),
            );
        }
        if self.allowed_countries.is_empty() {
            return bad(
                "allowed_countries",
                "must name at least one country code (DATA-2 location policy), e.g. DE".to_string(),
            );
        }
        if let Some(c) = self.allowed_countries.iter().find(|c| !is_country_code(c)) {
            return bad(
                "allowed_countries",
                format!("`{c}` is not a two-letter country code such as DE"),
            );
        }
        if !self.allowed_countries.contains(&self.default_region) {
            return bad(
                "default_region",
                format!(
                    "`{}` is not in allowed_countries ({})",
                    self.default_region,
                    self.allowed_countries.join(", ")
                ),
            );
        }
        if self.default_plan.trim().is_empty() {
            return bad("default_plan", "must name a plan, e.g. small".to_string());
        }
        if self.job_workers == 0 || self.job_workers > 256 {
            return bad("job_workers", "must be between 1 and 256".to_string());
        }
        if self.reconcile_interval_secs == 0 {
            return bad("reconcile_interval_secs", "must be at least 1".to_string());
        }
        if self.metrics_interval_secs == 0 {
            return bad("metrics_interval_secs", "must be at least 1".to_string());
        }
        if let Some(d) = &self.dns {
            if d.ttl_secs == 0 || d.ttl_secs > 86_400 {
                return bad("dns_ttl_secs", "must be between 1 and 86400".to_string());
            }
            if d.timeout_secs == 0 || d.timeout_secs > 60 {
                return bad("dns_timeout_secs", "must be between 1 and 60".to_string());
            }
        }
        let img = &self.base_image;
        if img.is_empty() || img.contains('/') || img.starts_with('.') {
            return bad(
                "base_image",
                format!("`{img}` must be a file name in the agents' images directory, not a path"),
            );
        }
        Ok(())
    }

    /// True when the public URL is https (cookies get `Secure`… and HSTS is sent).
    pub fn is_tls(&self) -> bool {
        self.base_url.scheme() == "https"
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    pub fn session_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_idle_minutes * 60)
    }

    pub fn session_absolute(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_absolute_hours * 3600)
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// The client address of a request (AUTH-5): the socket peer, unless the peer is a
    /// trusted proxy; then the right-most `X-Forwarded-For` entry that is not itself a
    /// trusted proxy. Without trusted proxies the header is ignored entirely.
    pub fn resolve_client_addr(&self, peer: IpAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let Some(xff) = x_forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for part in xff.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    let ip = canonical_ip(ip);
                    client = ip;
                    if !self.is_trusted_proxy(ip) {
                        return ip;
                    }
                }
                // Garbage in the header: stop at the last trustworthy hop.
                Err(_) => return client,
            }
        }
        client
    }

    /// A link under the public URL, e.g. `link("/reset-password?token=…")`.
    pub fn link(&self, path_and_query: &str) -> String {
        let base = self.base_url.as_str().trim_end_matches('/');
        format!("{base}{path_and_query}")
    }

    /// Config for tests: everything under `data_dir`, bcrypt cost 4, test mode on.
    pub fn for_tests(data_dir: &Path, database_url: &str) -> ServerConfig {
        let mut c = Self::defaults_in(data_dir);
        c.database_url = database_url.to_string();
        c.bcrypt_cost = MIN_TEST_BCRYPT_COST;
        c.insecure_test_mode = true;
        // Fixtures sign many users up from one test address; the signup limit's own
        // tests set it low again.
        c.throttle.signups_per_hour = 1000;
        c
    }
}

/// DATA-4: a PostgreSQL server that is not on this machine is reached only with
/// `sslmode=verify-full` (encrypted, certificate chain AND host name checked). The
/// weaker modes (`disable`, `allow`, `prefer`, `require`, `verify-ca`) and a missing
/// `sslmode` (libpq's default `prefer` silently falls back to plain text) are refused.
/// A loopback server (`localhost`, 127.0.0.0/8, `::1`) or a unix socket (`host=/…`)
/// never leaves the machine, so any mode is accepted there.
fn check_postgres_tls(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    let parsed = Url::parse(url).map_err(|e| format!("is not a postgres:// URL ({e})"))?;
    let mut sslmode = None;
    let mut socket_host = false;
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            // The last one wins in libpq and sqlx alike.
            "sslmode" => sslmode = Some(v.to_ascii_lowercase()),
            "host" if v.starts_with('/') => socket_host = true,
            _ => {}
        }
    }
    // `postgres:` is not a "special" scheme for the URL standard, so an IPv4 host comes
    // back as a domain string: parse it here.
    let loopback = match parsed.host() {
        None => true,
        Some(url::Host::Domain(d)) => {
            d.is_empty()
                || d.eq_ignore_ascii_case("localhost")
                || d.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
    };
    if loopback || socket_host {
        return Ok(());
    }
    match sslmode.as_deref() {
        Some("verify-full") => Ok(()),
        Some(m) => Err(format!(
            "sslmode={m} is refused for a PostgreSQL server that is not on this machine: \
             use sslmode=verify-full&sslrootcert=/path/to/ca.crt (DATA-4)"
        )),
        None => Err(
            "has no sslmode for a PostgreSQL server that is not on this machine: add \
             sslmode=verify-full&sslrootcert=/path/to/ca.crt (DATA-4)"
                .to_string(),
        ),
    }
}

/// Two ASCII upper-case letters (ISO 3166-1 alpha-2 shape).
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A hostile or broken config file is refused with a message, never a panic.
        #[test]
        fn arbitrary_config_text_never_panics(text in ".{0,300}") {
            let _ = ServerConfig::from_toml_and_env(&text, None, &BTreeMap::new());
        }

        /// Known keys with values of any shape: refused with a message or accepted,
        /// never a panic.
        #[test]
        fn known_keys_with_hostile_values_never_panic(
            key in prop::sample::select(KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>()),
            value in prop_oneof![".{0,40}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|n| n.to_string()), Just("true".to_string()), Just("[\"a\", 1]".to_string())],
        ) {
            let text = format!("{key} = {value}\n");
            let _ = ServerConfig::from_toml_and_env(&text, None, &BTreeMap::new());
            let mut env = BTreeMap::new();
            env.insert(format!("CLAWY_{}", key.to_ascii_uppercase()), value);
            let _ = ServerConfig::from_toml_and_env("", None, &env);
        }
    }
}
