//! `[driver.proxmox]`: where the PVE API is, how the agent authenticates and pins
//! its certificate, which VMIDs and templates are Clawy's. Validated at start-up;
//! unknown keys are refused by name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, invalid};
use crate::network::NetworkConfig;

pub const DEFAULT_API_URL: &str = "https://127.0.0.1:8006/api2/json";
pub const DEFAULT_SNIPPETS_DIR: &str = "/var/lib/vz/snippets";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxFile {
    api_url: Option<String>,
    node: Option<String>,
    token_id: Option<String>,
    token_secret_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    fingerprint: Option<String>,
    vmid_range: Option<String>,
    templates: Option<BTreeMap<String, u32>>,
    full_clone: Option<bool>,
    storage: Option<String>,
    snippets_storage: Option<String>,
    snippets_dir: Option<PathBuf>,
    cpu: Option<String>,
    onboot: Option<bool>,
    disk: Option<String>,
}

/// How the agent trusts the node's certificate: the cluster CA, or the node
/// certificate's own SHA-256 fingerprint (ACME certificates rotate: pin the CA then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPin {
    CaFile(PathBuf),
    Fingerprint([u8; 32]),
}

#[derive(Debug, Clone)]
pub struct ProxmoxConfig {
    pub api_url: url::Url,
    pub node: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// A 0600 file holding the token's secret (never in the config itself).
    pub token_secret_file: PathBuf,
    pub tls: TlsPin,
    /// Inclusive VMID range the agent allocates from and alone manages.
    pub vmid_range: (u32, u32),
    /// `base_image` name → template VMID.
    pub templates: BTreeMap<String, u32>,
    pub full_clone: bool,
    /// Target storage of full clones (linked clones stay on the template's).
    pub storage: Option<String>,
    /// PVE storage id whose `snippets` content lives in `snippets_dir`.
    pub snippets_storage: String,
    pub snippets_dir: PathBuf,
    pub cpu: String,
    pub onboot: bool,
    /// The template's boot disk (`scsi0`), grown to the spec's size.
    pub disk: String,
    /// The Clawy bridge (from `[network]`), where every VM's `net0` goes.
    pub bridge: String,
}

fn pve_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `USER@REALM!TOKENID`, each part a plain word (it goes into an HTTP header).
pub fn valid_token_id(s: &str) -> bool {
    let Some((user, rest)) = s.split_once('@') else {
        return false;
    };
    let Some((realm, token)) = rest.split_once('!') else {
        return false;
    };
    pve_word(user) && pve_word(realm) && pve_word(token)
}

pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    clawy_agent_client::pin::parse_sha256_fingerprint(s)
}

impl ProxmoxFile {
    pub fn validate(self, network: Option<&NetworkConfig>) -> Result<ProxmoxConfig, ConfigError> {
        let k = |name: &str| format!("driver.proxmox.{name}");
        let api_text = self.api_url.unwrap_or_else(|| DEFAULT_API_URL.into());
        let api_url = url::Url::parse(&api_text)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host().is_some())
            .ok_or_else(|| invalid(&k("api_url"), "must be an https:// URL"))?;
        let node = self
            .node
            .ok_or_else(|| invalid(&k("node"), "required: the PVE node's name"))?;
        if !pve_word(&node) {
            return Err(invalid(&k("node"), "must be a node name ([A-Za-z0-9._-])"));
        }
        let token_id = self
            .token_id
            .ok_or_else(|| invalid(&k("token_id"), "required: USER@REALM!TOKENID"))?;
        if !valid_token_id(&token_id) {
            return Err(invalid(&k("token_id"), "must look like clawy@pve!agent"));
        }
        let token_secret_file = self.token_secret_file.ok_or_else(|| {
            invalid(
                &k("token_secret_file"),
                "required: a 0600 file holding the token secret",
            )
        })?;
        if !token_secret_file.is_absolute() {
            return Err(invalid(&k("token_secret_file"), "must be an absolute path"));
        }
        let tls = match (self.ca_file, self.fingerprint) {
            (Some(ca), None) => TlsPin::CaFile(ca),
            (None, Some(fp)) => TlsPin::Fingerprint(parse_fingerprint(&fp).ok_or_else(|| {
                invalid(&k("fingerprint"), "must be 32 hex pairs AA:BB:… (SHA-256)")
            })?),
            _ => {
                return Err(invalid(
                    &k("ca_file"),
                    "give exactly one of ca_file (the cluster CA) or fingerprint",
                ));
            }
        };
        let vmid_range = match self.vmid_range {
            None => (100_000, 199_999),
            Some(text) => {
                let parsed = text.split_once('-').and_then(|(a, b)| {
                    Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
                });
                match parsed {
                    Some((a, b))
                        if (100..=999_999_999).contains(&a) && a <= b && b <= 999_999_999 =>
                    {
                        (a, b)
                    }
                    _ => {
                        return Err(invalid(
                            &k("vmid_range"),
                            "must be START-END with 100 <= START <= END <= 999999999",
                        ));
                    }
                }
            }
        };
        let templates = self.templates.unwrap_or_default();
        if templates.is_empty() {
            return Err(invalid(
                &k("templates"),
                "required: base image name = template VMID, e.g. templates = { \"clawy-guest\" = 9000 }",
            ));
        }
        for (name, id) in &templates {
            crate::spec::validate_image_name(name)
                .map_err(|e| invalid(&k("templates"), format!("`{name}`: {}", e.message)))?;
            if (vmid_range.0..=vmid_range.1).contains(id) || *id < 100 {
                return Err(invalid(
                    &k("templates"),
                    format!("template {id} must be a VMID >= 100 outside vmid_range"),
                ));
            }
        }
        let word = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_string());
            if pve_word(&v) {
                Ok(v)
            } else {
                Err(invalid(&k(key), "must be [A-Za-z0-9._-]"))
            }
        };
        let storage = match self.storage {
            Some(s) => Some(word("storage", Some(s), "")?),
            None => None,
        };
        let snippets_storage = word("snippets_storage", self.snippets_storage, "local")?;
        let cpu = word("cpu", self.cpu, "host")?;
        let disk = word("disk", self.disk, "scsi0")?;
        let snippets_dir = self
            .snippets_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SNIPPETS_DIR));
        if !snippets_dir.is_absolute() {
            return Err(invalid(&k("snippets_dir"), "must be an absolute path"));
        }
        let Some(net) = network else {
            return Err(invalid(
                &k("node"),
                "the proxmox driver needs a [network] section: the agent owns the Clawy bridge",
            ));
        };
        Ok(ProxmoxConfig {
            api_url,
            node,
            token_id,
            token_secret_file,
            tls,
            vmid_range,
            templates,
            full_clone: self.full_clone.unwrap_or(false),
            storage,
            snippets_storage,
            snippets_dir,
            cpu,
            onboot: self.onboot.unwrap_or(true),
            disk,
            bridge: net.bridge.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::config::{AgentConfig, DriverConfig, Env};

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    const NET: &str = "[network]\nsubnet = \"10.77.3.0/24\"\nuplink = \"eth0\"\n";

    fn cfg(extra: &str) -> Result<AgentConfig, String> {
        AgentConfig::from_toml(
            &format!(
                "state_dir = \"/tmp\"\n{NET}[driver]\nkind = \"proxmox\"\n[driver.proxmox]\nnode = \"pve\"\ntoken_id = \"clawy@pve!agent\"\ntoken_secret_file = \"/etc/clawy/pve-token\"\n{extra}"
            ),
            &NoEnv,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_complete_section_parses() {
        let fp = vec!["AB"; 32].join(":");
        let c = cfg(&format!(
            "fingerprint = \"{fp}\"\nvmid_range = \"5000-5999\"\ntemplates = {{ \"clawy-guest\" = 9000 }}\n"
        ))
        .unwrap();
        let DriverConfig::Proxmox(p) = &c.driver else {
            panic!("not proxmox")
        };
        assert_eq!(p.vmid_range, (5000, 5999));
        assert_eq!(p.templates["clawy-guest"], 9000);
        assert_eq!(p.api_url.as_str(), "https://127.0.0.1:8006/api2/json");
        assert_eq!(p.bridge, "clawybr0");
        assert!(!p.full_clone);
    }

    #[test]
    fn bad_values_name_their_key() {
        let fp = vec!["AB"; 32].join(":");
        let t = "templates = { \"g\" = 9000 }\n";
        for (extra, key) in [
            (t.to_string(), "driver.proxmox.ca_file"),
            (
                format!("fingerprint = \"AB:CD\"\n{t}"),
                "driver.proxmox.fingerprint",
            ),
            (
                format!("fingerprint = \"{fp}\"\n"),
                "driver.proxmox.templates",
            ),
            (
                format!("fingerprint = \"{fp}\"\ntemplates = {{ \"g\" = 150000 }}\n"),
                "driver.proxmox.templates",
            ),
            (
                format!("fingerprint = \"{fp}\"\n{t}vmid_range = \"9-1\"\n"),
                "driver.proxmox.vmid_range",
            ),
            (
                format!("fingerprint = \"{fp}\"\n{t}api_url = \"http://x\"\n"),
                "driver.proxmox.api_url",
            ),
            (
                format!("fingerprint = \"{fp}\"\n{t}secret = \"x\"\n"),
                "secret",
            ),
        ] {
            let err = cfg(&extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err = AgentConfig::from_toml(
            "[driver]\nkind = \"proxmox\"\n[driver.proxmox]\nnode = \"pve\"\ntoken_id = \"a b\"\n",
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("token_id"), "{err}");
    }
}
