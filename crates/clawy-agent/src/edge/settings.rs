//! The edge's settings as an operator writes them (`[edge]` in the agent's TOML)
//! and their validation. Everything that reaches Caddy's JSON is checked here once; the config generator only takes an [`EdgeSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use clawy_proto::names::{AcmeEmail, DnsName, NameError};

/// Who signs the instances' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// ACME (Let's Encrypt unless `directory` says otherwise), with the
    /// operator's e-mail for the account.
    Acme {
        email: AcmeEmail,
        directory: Option<url::Url>,
    },
    /// Caddy's own local CA: tests and `clawy up`. Its root is at
    /// `<storage>/pki/authorities/local/root.crt`; it is never installed into the
    /// system's trust store.
    Internal,
}

/// Raw settings (TOML / tests), validated by [`EdgeSettings::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettingsRaw {
    /// Apex under which every instance of this host has one label:
    /// `<label>.<instances_apex>`.
    pub instances_apex: String,
    /// Zone the agent's DNS responder answers, used only between Caddy and the
    /// agent (`<label>.<internal_zone>` → the VM's private IPv4).
    #[serde(default = "default_internal_zone")]
    pub internal_zone: String,
    /// HTTPS listeners, e.g. `["0.0.0.0:443", "[::]:443"]`.
    pub https_listen: Vec<SocketAddr>,
    /// Plain-HTTP listener for ACME HTTP-01 and the redirect to HTTPS (`None` in tests).
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// The instances' gateway port (OpenClaw: 18789).
    #[serde(default = "default_gateway_port")]
    pub gateway_port: u16,
    /// The agent's loopback HTTP endpoint: `/ask` and the error pages.
    pub agent_http: SocketAddr,
    /// The agent's loopback DNS responder (UDP).
    pub agent_dns: SocketAddr,
    /// Caddy's admin API socket (a unix socket path; never a TCP address).
    pub admin_socket: PathBuf,
    /// Caddy's certificate storage root (`file_system` storage).
    pub storage_root: PathBuf,
    /// `"acme"` (needs `acme_email`) or `"internal"`.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default)]
    pub acme_email: Option<String>,
    #[serde(default)]
    pub acme_directory: Option<String>,
    /// Certificates Caddy may obtain on demand per `on_demand_interval_secs`.
    #[serde(default = "default_burst")]
    pub on_demand_burst: u32,
    #[serde(default = "default_interval")]
    pub on_demand_interval_secs: u64,
    /// `Strict-Transport-Security: max-age=…` on every instance response.
    #[serde(default = "default_hsts")]
    pub hsts_max_age_secs: u64,
    /// How often the agent compares Caddy's running config with its own and
    /// re-applies it when they differ (a restarted Caddy, a manual change).
    #[serde(default = "default_check_interval")]
    pub check_interval_secs: u64,
}

fn default_internal_zone() -> String {
    "vm.clawy.internal".into()
}
fn default_gateway_port() -> u16 {
    18789
}
fn default_issuer() -> String {
    "acme".into()
}
fn default_burst() -> u32 {
    20
}
fn default_interval() -> u64 {
    60
}
fn default_hsts() -> u64 {
    31_536_000
}
fn default_check_interval() -> u64 {
    30
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("edge.{key}: {source}")]
    Name {
        key: &'static str,
        #[source]
        source: NameError,
    },
    #[error("edge.{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl SettingsError {
    /// The `[edge]` key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            SettingsError::Name { key, .. } | SettingsError::Invalid { key, .. } => key,
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Validated settings: the only input of the config generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    pub instances_apex: DnsName,
    pub internal_zone: DnsName,
    pub https_listen: Vec<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub gateway_port: u16,
    pub agent_http: SocketAddr,
    pub agent_dns: SocketAddr,
    pub admin_socket: PathBuf,
    pub storage_root: PathBuf,
    pub issuer: Issuer,
    pub on_demand_burst: u32,
    pub on_demand_interval: Duration,
    pub hsts_max_age_secs: u64,
    pub check_interval: Duration,
}

/// A path that goes into Caddy's JSON verbatim: absolute, printable, and without
/// characters Caddy would read as a placeholder (`{`, `}`).
fn check_path(key: &'static str, p: &std::path::Path) -> Result<(), SettingsError> {
    let s = p
        .to_str()
        .ok_or_else(|| invalid(key, "is not valid UTF-8"))?;
    if !p.is_absolute() {
        return Err(invalid(key, "must be an absolute path"));
    }
    if s.len() > 200 {
        return Err(invalid(key, "is longer than 200 characters"));
    }
    if s.chars()
        .any(|c| c.is_control() || matches!(c, '{' | '}' | '"' | '\\' | ' '))
    {
        return Err(invalid(
            key,
            "may only hold printable characters without spaces, quotes, backslashes or braces",
        ));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(key, "must not contain '..'"));
    }
    Ok(())
}

impl EdgeSettings {
    pub fn validate(raw: EdgeSettingsRaw) -> Result<Self, SettingsError> {
        let instances_apex =
            DnsName::parse(&raw.instances_apex, "instances apex", 2).map_err(|source| {
                SettingsError::Name {
                    key: "instances_apex",
                    source,
                }
            })?;
        let internal_zone =
            DnsName::parse(&raw.internal_zone, "internal zone", 2).map_err(|source| {
                SettingsError::Name {
                    key: "internal_zone",
                    source,
                }
            })?;
        // Host label + apex must fit in 253 characters with a 63-character label.
        if instances_apex.as_str().len() > 253 - 64 {
            return Err(invalid(
                "instances_apex",
                "leaves no room for a 63-character instance label (at most 189 characters)",
            ));
        }
        if internal_zone == instances_apex
            || internal_zone
                .as_str()
                .ends_with(&format!(".{instances_apex}"))
            || instances_apex
                .as_str()
                .ends_with(&format!(".{internal_zone}"))
        {
            return Err(invalid(
                "internal_zone",
                "must not overlap the instances apex (the responder would answer public names)",
            ));
        }
        if raw.https_listen.is_empty() {
            return Err(invalid("https_listen", "needs at least one address"));
        }
        if raw.gateway_port == 0 {
            return Err(invalid("gateway_port", "must not be 0"));
        }
        // The ask endpoint approves certificates and the responder steers traffic:
        // nothing outside this host may reach them.
        if !raw.agent_http.ip().is_loopback() {
            return Err(invalid("agent_http", "must be a loopback address"));
        }
        if !raw.agent_dns.ip().is_loopback() {
            return Err(invalid("agent_dns", "must be a loopback address"));
        }
        check_path("admin_socket", &raw.admin_socket)?;
        check_path("storage_root", &raw.storage_root)?;
        let issuer = match raw.issuer.as_str() {
            "internal" => {
                if raw.acme_email.is_some() || raw.acme_directory.is_some() {
                    return Err(invalid(
                        "issuer",
                        "acme_email/acme_directory are set but the issuer is \"internal\"",
                    ));
                }
                Issuer::Internal
            }
            "acme" => {
                let email = raw
                    .acme_email
                    .as_deref()
                    .ok_or_else(|| invalid("acme_email", "is required with issuer \"acme\""))?;
                let email = AcmeEmail::parse(email).map_err(|source| SettingsError::Name {
                    key: "acme_email",
                    source,
                })?;
                let directory = match raw.acme_directory.as_deref() {
                    None => None,
                    Some(d) => {
                        let u = url::Url::parse(d)
                            .map_err(|e| invalid("acme_directory", format!("is not a URL: {e}")))?;
                        if u.scheme() != "https"
                            || u.host_str().is_none()
                            || !u.username().is_empty()
                            || u.password().is_some()
                            || u.fragment().is_some()
                            || u.as_str().contains(['{', '}'])
                        {
                            return Err(invalid(
                                "acme_directory",
                                "must be an https:// URL without credentials, fragment or braces",
                            ));
                        }
                        Some(u)
                    }
                };
                Issuer::Acme { email, directory }
            }
            other => {
                return Err(invalid(
                    "issuer",
                    format!(
                        "must be \"acme\" or \"internal\", not {:?}",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        };
        if raw.on_demand_burst == 0 || raw.on_demand_burst > 10_000 {
            return Err(invalid("on_demand_burst", "must be between 1 and 10000"));
        }
        if raw.on_demand_interval_secs == 0 || raw.on_demand_interval_secs > 86_400 {
            return Err(invalid(
                "on_demand_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        if raw.hsts_max_age_secs > 63_072_000 {
            return Err(invalid("hsts_max_age_secs", "must be at most two years"));
        }
        if raw.check_interval_secs == 0 || raw.check_interval_secs > 3600 {
            return Err(invalid("check_interval_secs", "must be between 1 and 3600"));
        }
        Ok(EdgeSettings {
            instances_apex,
            internal_zone,
            https_listen: raw.https_listen,
            http_listen: raw.http_listen,
            gateway_port: raw.gateway_port,
            agent_http: raw.agent_http,
            agent_dns: raw.agent_dns,
            admin_socket: raw.admin_socket,
            storage_root: raw.storage_root,
            issuer,
            on_demand_burst: raw.on_demand_burst,
            on_demand_interval: Duration::from_secs(raw.on_demand_interval_secs),
            hsts_max_age_secs: raw.hsts_max_age_secs,
            check_interval: Duration::from_secs(raw.check_interval_secs),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(crate) fn raw() -> EdgeSettingsRaw {
        EdgeSettingsRaw {
            instances_apex: "claws.example.com".into(),
            internal_zone: default_internal_zone(),
            https_listen: vec!["0.0.0.0:443".parse().unwrap()],
            http_listen: Some("0.0.0.0:80".parse().unwrap()),
            gateway_port: 18789,
            agent_http: "127.0.0.1:7611".parse().unwrap(),
            agent_dns: "127.0.0.1:7653".parse().unwrap(),
            admin_socket: "/run/clawy/caddy-admin.sock".into(),
            storage_root: "/var/lib/caddy/.local/share/caddy".into(),
            issuer: "acme".into(),
            acme_email: Some("ops@example.com".into()),
            acme_directory: None,
            on_demand_burst: 20,
            on_demand_interval_secs: 60,
            hsts_max_age_secs: 31_536_000,
            check_interval_secs: 30,
        }
    }

    #[test]
    fn valid_settings_pass() {
        let s = EdgeSettings::validate(raw()).unwrap();
        assert!(matches!(s.issuer, Issuer::Acme { .. }));
    }

    #[test]
    fn each_bad_key_is_named() {
        type Mutation = Box<dyn Fn(&mut EdgeSettingsRaw)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "instances_apex",
                Box::new(|r| r.instances_apex = "x\".com".into()),
            ),
            (
                "instances_apex",
                Box::new(|r| r.instances_apex = "com".into()),
            ),
            (
                "internal_zone",
                Box::new(|r| r.internal_zone = "{env.HOME}.x".into()),
            ),
            (
                "internal_zone",
                Box::new(|r| r.internal_zone = "in.claws.example.com".into()),
            ),
            (
                "agent_http",
                Box::new(|r| r.agent_http = "0.0.0.0:7611".parse().unwrap()),
            ),
            (
                "agent_dns",
                Box::new(|r| r.agent_dns = "10.0.0.1:53".parse().unwrap()),
            ),
            (
                "admin_socket",
                Box::new(|r| r.admin_socket = "relative.sock".into()),
            ),
            (
                "admin_socket",
                Box::new(|r| r.admin_socket = "/run/{env.X}.sock".into()),
            ),
            (
                "storage_root",
                Box::new(|r| r.storage_root = "/var/../etc".into()),
            ),
            (
                "acme_email",
                Box::new(|r| r.acme_email = Some("a\"b@example.com".into())),
            ),
            ("acme_email", Box::new(|r| r.acme_email = None)),
            (
                "acme_directory",
                Box::new(|r| r.acme_directory = Some("http://ca.example/dir".into())),
            ),
            ("issuer", Box::new(|r| r.issuer = "zerossl".into())),
            ("https_listen", Box::new(|r| r.https_listen.clear())),
            ("on_demand_burst", Box::new(|r| r.on_demand_burst = 0)),
            (
                "check_interval_secs",
                Box::new(|r| r.check_interval_secs = 0),
            ),
        ];
        for (key, mutate) in cases {
            let mut r = raw();
            mutate(&mut r);
            let err = EdgeSettings::validate(r).unwrap_err().to_string();
            assert!(err.starts_with(&format!("edge.{key}:")), "{key}: {err}");
        }
    }
}
