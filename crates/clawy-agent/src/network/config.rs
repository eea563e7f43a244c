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
    /// ISO-5: destinations VMs may never reach, on top of `DEFAULT_BLOCKED` (e.g.
    /// the control plane's or the hosts' management addresses when they are public).
    #[serde(default)]
    pub blocked_destinations: Vec<Ipv4Cidr>,
    /// ISO-5: the operator's exceptions, e.g. an internal resolver
    /// (`"10.0.0.53/32:53/udp"`) or a whole network (`"10.20.0.0/16"`).
    #[serde(default)]
    pub egress_allow: Vec<EgressAllow>,
    /// ACCESS-2: the port of the heartbeat receiver on the gateway address (plain
    /// HTTP, reachable from the bridge only; the guests' reporter is told it in
    /// their seed). Must not be in `ssh_port_range` nor `host_ports_for_vms`.
    #[serde(default = "default_heartbeat_port")]
    pub heartbeat_port: u16,
}

/// The heartbeat receiver's default port on the gateway address.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 8790;

fn default_heartbeat_port() -> u16 {
    DEFAULT_HEARTBEAT_PORT
}

/// ISO-5: what a VM may never reach by default: "this network", RFC 1918,
/// carrier-grade NAT, loopback, link-local (cloud metadata services), IETF protocol
/// assignments, benchmarking, multicast and the reserved/broadcast range. The
/// documentation ranges (TEST-NETs) are left alone: they are not routed anyway and
/// the tests use one as their "internet".
pub const DEFAULT_BLOCKED: [&str; 11] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

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
            blocked_destinations: Vec::new(),
            egress_allow: Vec::new(),
            heartbeat_port: DEFAULT_HEARTBEAT_PORT,
        }
    }

    /// ISO-5: every blocked destination, defaults first (the configured list is
    /// validated, so the defaults always parse).
    pub fn blocked(&self) -> Vec<Ipv4Cidr> {
        let mut out: Vec<Ipv4Cidr> = DEFAULT_BLOCKED
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        out.extend(self.blocked_destinations.iter().copied());
        out
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
        if self.heartbeat_port == 0
            || (self.ssh_port_range.start..=self.ssh_port_range.end).contains(&self.heartbeat_port)
            || self.host_ports_for_vms.contains(&self.heartbeat_port)
        {
            return Err(config_error(
                "heartbeat_port",
                "must be a TCP port outside ssh_port_range and host_ports_for_vms",
            ));
        }
        if let Some(p) = self.host_ports_for_vms.iter().find(|p| **p == 0) {
            return Err(config_error(
                "host_ports_for_vms",
                format!("port {p} is not a valid TCP port"),
            ));
        }
        let subnet = Ipv4Cidr {
            addr: self.subnet.network(),
            len: Subnet::PREFIX_LEN,
        };
        for a in &self.egress_allow {
            if a.net.len == 0 {
                return Err(config_error(
                    "egress_allow",
                    format!("`{a}` allows everything; remove it or list the real destinations"),
                ));
            }
            // ISO-3 outranks the allow-list: VM-to-VM traffic is never allowed.
            if a.net.overlaps(&subnet) {
                return Err(config_error(
                    "egress_allow",
                    format!(
                        "`{a}` overlaps the VMs' own subnet {}; VMs never reach each other (ISO-3)",
                        self.subnet
                    ),
                ));
            }
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

pub(crate) fn validate_ifname(key: &'static str, name: &str) -> Result<(), ConfigError> {
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

/// An IPv4 network `A.B.C.D/LEN` (a bare address means /32). Host bits must be
/// zero, so `10.1.2.3/8` (probably a typo) is refused rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Cidr {
    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let len = self.len.min(other.len);
        let m = Self::mask(len);
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = Self::mask(self.len);
        u32::from(ip) & m == u32::from(self.addr) & m
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a CIDR did not parse (the caller names the key).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{text}`: {why}")]
pub struct CidrParseError {
    text: String,
    why: &'static str,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| CidrParseError {
            text: s.to_owned(),
            why,
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                l.parse::<u8>()
                    .map_err(|_| bad("prefix length must be 0-32"))?,
            ),
            None => (s, 32),
        };
        if addr.contains(':') {
            return Err(bad(
                "IPv6 is not used: VMs get no IPv6 and all of it is dropped",
            ));
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        if len > 32 {
            return Err(bad("prefix length must be 0-32"));
        }
        if u32::from(addr) & !Self::mask(len) != 0 {
            return Err(bad("host bits are set (write the network address)"));
        }
        Ok(Self { addr, len })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
            .map_err(|e: CidrParseError| config_error("blocked_destinations", e.to_string()))
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

/// ISO-5: one operator exception to the blocked destinations: a network, or a
/// network plus one port and protocol. Written `10.0.0.53/32:53/udp`,
/// `10.0.0.53:443/tcp` or `10.20.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EgressAllow {
    pub net: Ipv4Cidr,
    /// `None` = every protocol and port.
    pub service: Option<(Transport, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for EgressAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.service {
            Some((t, port)) => write!(f, "{}:{port}/{}", self.net, t.as_str()),
            None => write!(f, "{}", self.net),
        }
    }
}

impl FromStr for EgressAllow {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| config_error("egress_allow", format!("`{s}`: {why}"));
        let shape = "expected NET, NET:PORT/tcp or NET:PORT/udp (e.g. 10.0.0.53/32:53/udp)";
        let (net, service) = match s.split_once(':') {
            None => (s, None),
            Some((net, svc)) => {
                let (port, proto) = svc.split_once('/').ok_or_else(|| bad(shape.into()))?;
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(format!("port must be 1-65535; {shape}")))?;
                let t = match proto {
                    "tcp" => Transport::Tcp,
                    "udp" => Transport::Udp,
                    _ => return Err(bad(format!("protocol must be tcp or udp; {shape}"))),
                };
                (net, Some((t, port)))
            }
        };
        let net: Ipv4Cidr = net
            .parse()
            .map_err(|e: CidrParseError| bad(e.to_string()))?;
        Ok(Self { net, service })
    }
}

impl TryFrom<String> for EgressAllow {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<EgressAllow> for String {
    fn from(a: EgressAllow) -> String {
        a.to_string()
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
    fn iso_3_subnet_must_be_private_ten_slash_24() {
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
    fn iso_5_egress_lists_parse_and_errors_name_the_key() {
        let base = "subnet = \"10.0.0.0/24\"\nuplink = \"eth0\"\n";
        let cfg = parse(&format!(
            "{base}blocked_destinations = [\"203.0.113.7\", \"198.51.100.0/24\"]\n\
             egress_allow = [\"10.9.0.53/32:53/udp\", \"10.9.0.80:443/tcp\", \"10.20.0.0/16\"]\n"
        ))
        .unwrap();
        assert_eq!(cfg.blocked_destinations[0].to_string(), "203.0.113.7/32");
        assert_eq!(cfg.egress_allow[0].service, Some((Transport::Udp, 53)));
        assert_eq!(cfg.egress_allow[1].to_string(), "10.9.0.80/32:443/tcp");
        assert_eq!(cfg.egress_allow[2].service, None);
        let blocked = cfg.blocked();
        assert!(
            blocked
                .iter()
                .any(|c| c.contains(Ipv4Addr::new(169, 254, 169, 254)))
        );
        assert!(
            blocked
                .iter()
                .any(|c| c.contains(Ipv4Addr::new(203, 0, 113, 7)))
        );
        assert!(
            !blocked
                .iter()
                .any(|c| c.contains(Ipv4Addr::new(203, 0, 113, 8)))
        );
        for (extra, key) in [
            (
                "blocked_destinations = [\"fd00::/8\"]\n",
                "network.blocked_destinations",
            ),
            (
                "blocked_destinations = [\"10.1.2.3/8\"]\n",
                "network.blocked_destinations",
            ),
            (
                "blocked_destinations = [\"10.1.2.0/33\"]\n",
                "network.blocked_destinations",
            ),
            (
                "egress_allow = [\"10.9.0.53:53\"]\n",
                "network.egress_allow",
            ),
            (
                "egress_allow = [\"10.9.0.53:0/udp\"]\n",
                "network.egress_allow",
            ),
            (
                "egress_allow = [\"10.9.0.53:53/icmp\"]\n",
                "network.egress_allow",
            ),
            ("egress_allow = [\"nope\"]\n", "network.egress_allow"),
            ("egress_allow = [\"0.0.0.0/0\"]\n", "network.egress_allow"),
            // ISO-3 outranks the allow-list.
            ("egress_allow = [\"10.0.0.0/16\"]\n", "network.egress_allow"),
            (
                "egress_allow = [\"10.0.0.7:22/tcp\"]\n",
                "network.egress_allow",
            ),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn cidr_overlap_and_contains() {
        let a: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Ipv4Cidr = "10.77.2.0/24".parse().unwrap();
        let c: Ipv4Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(b.contains(Ipv4Addr::new(10, 77, 2, 9)));
        assert!(!b.contains(Ipv4Addr::new(10, 77, 3, 9)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
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
