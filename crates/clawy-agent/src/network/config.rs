//! The agent config's `network` section: typed, validated at start-up, errors name the key.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Interfaces and nftables tables the agent owns all start with this, so it never
/// touches anything of the host's own (ISO-3 coexistence with the host firewall).
pub const OWNED_PREFIX: &str = "clawy";

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("network.{key}: {reason}")]
pub struct ConfigError {
    /// The offending key, e.g. `subnet`.
    pub key: &'static str,
    pub reason: String,
}

fn config_error(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

/// `[network]` of the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Bridge the VMs' taps attach to; carries the gateway address (`.1`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The host's private VM subnet: a /24 inside 10.0.0.0/8, e.g. `10.77.3.0/24`.
    pub subnet: Subnet,
    /// Interface VM traffic is masqueraded out of and port forwards come in on.
    pub uplink: String,
    /// Host ports that may be forwarded to VMs (SSH per VM), e.g. `22000-22999`.
    #[serde(default = "default_ssh_port_range")]
    pub ssh_port_range: PortRange,
    /// TCP ports on the host a VM may connect to (the management layer's needs).
    #[serde(default)]
    pub host_ports_for_vms: Vec<u16>,
    /// Name of the agent's nftables tables: `<table>` (inet) and `<table>_l2` (bridge).
    #[serde(default = "default_table")]
    pub table: String,
}

fn default_bridge() -> String {
    "clawybr0".to_owned()
}

fn default_ssh_port_range() -> PortRange {
    PortRange {
        start: 22000,
        end: 22999,
    }
}

fn default_table() -> String {
    OWNED_PREFIX.to_owned()
}

impl NetworkConfig {
    /// A config with every default and the given subnet and uplink.
    pub fn new(subnet: Subnet, uplink: impl Into<String>) -> Self {
        Self {
            bridge: default_bridge(),
            subnet,
            uplink: uplink.into(),
            ssh_port_range: default_ssh_port_range(),
            host_ports_for_vms: Vec::new(),
            table: default_table(),
        }
    }

    /// Checks everything serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_ifname("bridge", &self.bridge)?;
        if !self.bridge.starts_with(OWNED_PREFIX) {
            return Err(config_error(
                "bridge",
                format!(
                    "must start with `{OWNED_PREFIX}` (the agent only touches interfaces it owns)"
                ),
            ));
        }
        if self.bridge.starts_with(super::TAP_PREFIX) {
            return Err(config_error(
                "bridge",
                format!(
                    "must not start with `{}` (reserved for VM taps)",
                    super::TAP_PREFIX
                ),
            ));
        }
        validate_ifname("uplink", &self.uplink)?;
        if self.uplink.starts_with(OWNED_PREFIX) {
            return Err(config_error(
                "uplink",
                "must be a host interface, not one the agent owns",
            ));
        }
        if self.ssh_port_range.start == 0 || self.ssh_port_range.start > self.ssh_port_range.end {
            return Err(config_error(
                "ssh_port_range",
                "must be `START-END` with 1 <= START <= END",
            ));
        }
        if let Some(p) = self.host_ports_for_vms.iter().find(|p| **p == 0) {
            return Err(config_error(
                "host_ports_for_vms",
                format!("port {p} is not a valid TCP port"),
            ));
        }
        let table_ok = self.table.starts_with(OWNED_PREFIX)
            && self.table.len() <= 32
            && self
                .table
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !table_ok {
            return Err(config_error(
                "table",
                format!("must start with `{OWNED_PREFIX}` and be at most 32 of [a-z0-9_]"),
            ));
        }
        Ok(())
    }
}

fn validate_ifname(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!("`{name}` is not an interface name (1-{IFNAME_MAX} of [A-Za-z0-9._-])"),
        ))
    }
}

/// A /24 inside 10.0.0.0/8 (ISO-3: the VMs' private NAT network, one per host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
}

impl Subnet {
    pub const PREFIX_LEN: u8 = 24;

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The host's address on the bridge: `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.network.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// True for addresses a VM may hold: inside the /24, not network, gateway or broadcast.
    pub fn is_vm_address(&self, ip: Ipv4Addr) -> bool {
        let [a, b, c, d] = ip.octets();
        let [na, nb, nc, _] = self.network.octets();
        (a, b, c) == (na, nb, nc) && (2..=254).contains(&d)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, Self::PREFIX_LEN)
    }
}

impl FromStr for Subnet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| config_error("subnet", format!("`{s}`: {why}"));
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.0/24"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        if len != "24" {
            return Err(bad("must be a /24"));
        }
        let [a, _, _, d] = network.octets();
        if a != 10 {
            return Err(bad("must be inside 10.0.0.0/8"));
        }
        if d != 0 {
            return Err(bad("host bits must be zero (A.B.C.0/24)"));
        }
        Ok(Self { network })
    }
}

impl TryFrom<String> for Subnet {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// An inclusive port range written `START-END`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for PortRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || config_error("ssh_port_range", format!("`{s}`: expected START-END"));
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start = a.trim().parse().map_err(|_| bad())?;
        let end = b.trim().parse().map_err(|_| bad())?;
        Ok(Self { start, end })
    }
}

impl TryFrom<String> for PortRange {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

/// A MAC address as nftables and `ip` write it (`52:54:00:12:34:56`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a unicast MAC address like 52:54:00:12:34:56")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        // Multicast source MACs are never a NIC's own address.
        if parts.next().is_some() || out[0] & 1 == 1 {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(toml_src: &str) -> Result<NetworkConfig, String> {
        let cfg: NetworkConfig = toml::from_str(toml_src).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_fill_in() {
        let cfg = parse("subnet = \"10.77.3.0/24\"\nuplink = \"eth0\"\n").unwrap();
        assert_eq!(cfg.bridge, "clawybr0");
        assert_eq!(cfg.table, "clawy");
        assert_eq!(
            cfg.ssh_port_range,
            PortRange {
                start: 22000,
                end: 22999
            }
        );
        assert_eq!(cfg.subnet.gateway(), Ipv4Addr::new(10, 77, 3, 1));
        assert!(cfg.host_ports_for_vms.is_empty());
    }

    #[test]
    fn iso3_subnet_must_be_private_ten_slash_24() {
        for bad in [
            "192.168.1.0/24",
            "10.1.2.0/16",
            "10.1.2.5/24",
            "10.1.2.0",
            "x/24",
        ] {
            let err = parse(&format!("subnet = \"{bad}\"\nuplink = \"eth0\"\n")).unwrap_err();
            assert!(err.contains("network.subnet"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_rejected() {
        let err = parse("subnet = \"10.0.0.0/24\"\nuplink = \"eth0\"\nflood = true\n").unwrap_err();
        assert!(err.contains("flood"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let base = "subnet = \"10.0.0.0/24\"\nuplink = \"eth0\"\n";
        let cases = [
            ("bridge = \"br0\"\n", "network.bridge"),
            ("bridge = \"clawybridge-too-long\"\n", "network.bridge"),
            ("bridge = \"clawyt0\"\n", "network.bridge"),
            ("table = \"filter\"\n", "network.table"),
            ("table = \"clawy-x\"\n", "network.table"),
            ("ssh_port_range = \"3000-2000\"\n", "network.ssh_port_range"),
            ("host_ports_for_vms = [0]\n", "network.host_ports_for_vms"),
        ];
        for (extra, key) in cases {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err = parse("subnet = \"10.0.0.0/24\"\nuplink = \"clawybr0\"\n").unwrap_err();
        assert!(err.contains("network.uplink"), "{err}");
        let err = parse("subnet = \"10.0.0.0/24\"\nuplink = \"eth0;rm\"\n").unwrap_err();
        assert!(err.contains("network.uplink"), "{err}");
    }

    #[test]
    fn subnet_vm_addresses() {
        let s: Subnet = "10.9.8.0/24".parse().unwrap();
        assert!(s.is_vm_address(Ipv4Addr::new(10, 9, 8, 2)));
        assert!(!s.is_vm_address(Ipv4Addr::new(10, 9, 8, 1)));
        assert!(!s.is_vm_address(Ipv4Addr::new(10, 9, 8, 255)));
        assert!(!s.is_vm_address(Ipv4Addr::new(10, 9, 9, 2)));
    }

    #[test]
    fn mac_parsing() {
        let m: MacAddr = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:01:02".parse::<MacAddr>().is_err());
    }
}
