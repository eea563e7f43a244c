//! The agent's nftables ruleset as text (pure: no I/O), and the parser that reads
//! the per-VM elements back from `nft -j` so a restarted agent keeps them.
//!
//! The RULES depend only on the config; everything per VM (anti-spoof pairs, port
//! forwards) lives in sets and maps, so the rule count stays constant as VMs and
//! forwards are added (the nftables scale requirement: thousands of forwards per host).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use clawy_proto::agent::Protocol;

use super::TAP_PREFIX;
use super::config::{MacAddr, NetworkConfig, Transport};

/// One tap's registered (MAC, IP) pair: the only source addresses its frames may carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowedPair {
    pub tap: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// Where a forwarded host port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForwardTarget {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The per-VM data held in the agent's sets and maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    pub allowed: BTreeSet<AllowedPair>,
    pub fwd_tcp: BTreeMap<u16, ForwardTarget>,
    pub fwd_udp: BTreeMap<u16, ForwardTarget>,
}

impl Elements {
    pub fn fwd(&self, proto: Protocol) -> &BTreeMap<u16, ForwardTarget> {
        match proto {
            Protocol::Tcp => &self.fwd_tcp,
            Protocol::Udp => &self.fwd_udp,
        }
    }
}

/// Name of the forward map for a protocol.
pub fn fwd_map(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "fwd_tcp",
        Protocol::Udp => "fwd_udp",
    }
}

pub fn proto_name(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

pub fn l2_table(cfg: &NetworkConfig) -> String {
    format!("{}_l2", cfg.table)
}

/// The whole ruleset as one `nft -f` script. Each table is declared, deleted and
/// recreated in the same transaction, so the replace is atomic and never leaves a
/// window without filtering (ISO-3).
pub fn render(cfg: &NetworkConfig, elements: &Elements) -> String {
    let t = &cfg.table;
    let l2 = l2_table(cfg);
    let br = &cfg.bridge;
    let up = &cfg.uplink;
    let subnet = cfg.subnet;
    let gw = cfg.subnet.gateway();
    let taps = format!("{TAP_PREFIX}*");
    let mut s = String::new();

    // The inet table: NAT and the routed (L3) filter.
    let _ = writeln!(
        s,
        "table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{"
    );
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let _ = writeln!(
            s,
            "  map {} {{\n    type inet_service : ipv4_addr . inet_service",
            fwd_map(proto)
        );
        let elems: Vec<String> = elements
            .fwd(proto)
            .iter()
            .map(|(hp, to)| format!("{hp} : {} . {}", to.ip, to.port))
            .collect();
        if !elems.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(s, "  }}");
    }
    // ISO-5: the blocked destinations and the operator's exceptions are sets, so
    // the rule count stays the same whatever the lists hold.
    write_interval_set(
        &mut s,
        "egress_blocked",
        "ipv4_addr",
        cfg.blocked().iter().map(ToString::to_string),
    );
    write_interval_set(
        &mut s,
        "egress_allow",
        "ipv4_addr",
        cfg.egress_allow
            .iter()
            .filter(|a| a.service.is_none())
            .map(|a| a.net.to_string()),
    );
    for tr in [Transport::Tcp, Transport::Udp] {
        write_interval_set(
            &mut s,
            &format!("egress_allow_{}", tr.as_str()),
            "ipv4_addr . inet_service",
            cfg.egress_allow.iter().filter_map(|a| match a.service {
                Some((x, port)) if x == tr => Some(format!("{} . {port}", a.net)),
                _ => None,
            }),
        );
    }
    // NET-5: only host ports present in the maps are DNATed to a VM; any other
    // inbound port never reaches the bridge (see the forward chain's final drop).
    let _ = writeln!(
        s,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
    );
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let p = proto_name(proto);
        let _ = writeln!(
            s,
            "    iifname \"{up}\" meta l4proto {p} dnat ip to {p} dport map @{}",
            fwd_map(proto)
        );
    }
    let _ = writeln!(s, "  }}");
    // The SSH command the platform shows (`ssh -p <port> claw@<host>`) must work
    // from the host itself too (`clawy up`, an operator's shell): the same forwards
    // apply to locally generated traffic addressed to any of the host's own
    // addresses. Traffic to other destinations is untouched.
    let _ = writeln!(
        s,
        "  chain output {{\n    type nat hook output priority -100; policy accept;"
    );
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let p = proto_name(proto);
        let _ = writeln!(
            s,
            "    fib daddr type local meta l4proto {p} dnat ip to {p} dport map @{}",
            fwd_map(proto)
        );
    }
    let _ = writeln!(s, "  }}");
    // ISO-3: VMs reach the internet only masqueraded behind the uplink address. A
    // forward used from the host through a loopback address leaves with the
    // gateway address as its source (a 127/8 source is never valid on the wire).
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {subnet} oifname \"{up}\" masquerade\n    ip saddr 127.0.0.0/8 oifname \"{br}\" ct status dnat snat ip to {gw}\n  }}"
    );
    // The forward chain only judges traffic touching our bridge and accepts the
    // rest, so the host's own firewall keeps deciding about everything else (a drop
    // policy here would override other tables' accepts). For bridge traffic it ends
    // in an explicit drop: the effective policy is drop.
    //
    // ISO-3 first: VM-to-VM through the host is dropped before conntrack's
    // `established,related` can accept anything, so an ICMP error one VM crafts
    // against another VM's masqueraded flow (which conntrack calls RELATED and
    // would de-NAT towards that VM) never arrives.
    //
    // ISO-5 next, for new flows from a VM: the operator's exceptions, then the
    // blocked destinations. Replies to inbound forwards stay allowed through the
    // `established` rule (an operator's bastion in 10/8 may use an SSH forward).
    // The host's own addresses are not here: they are local, so the input chain
    // judges them (only `host_ports_for_vms` on the gateway address).
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname != \"{br}\" oifname != \"{br}\" accept\n    \
         iifname \"{br}\" oifname \"{br}\" drop comment \"ISO-3: no VM-to-VM through the host\"\n    \
         ct state established,related accept\n    \
         iifname \"{br}\" oifname \"{up}\" ip daddr @egress_allow accept comment \"ISO-5: operator exception\"\n    \
         iifname \"{br}\" oifname \"{up}\" ip daddr . tcp dport @egress_allow_tcp accept comment \"ISO-5: operator exception\"\n    \
         iifname \"{br}\" oifname \"{up}\" ip daddr . udp dport @egress_allow_udp accept comment \"ISO-5: operator exception\"\n    \
         iifname \"{br}\" ip daddr @egress_blocked drop comment \"ISO-5: internet only\"\n    \
         iifname \"{br}\" oifname \"{up}\" ip saddr {subnet} accept\n    \
         iifname \"{up}\" oifname \"{br}\" ct status dnat accept comment \"NET-5: explicit forwards only\"\n    \
         drop\n  }}"
    );
    // ISO-3: from the bridge a VM reaches the host only on the configured ports of
    // the gateway address (ISO-5: no other address of the host, whichever
    // interface carries it), IPv4 only.
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname != \"{br}\" accept\n    ct state established,related accept"
    );
    // ACCESS-2: the heartbeat receiver, from the bridge only (the receiver then
    // checks that the source is a registered VM's address and its token).
    let _ = writeln!(
        s,
        "    ip daddr {gw} tcp dport {} accept comment \"ACCESS-2: heartbeat\"",
        cfg.heartbeat_port
    );
    if !cfg.host_ports_for_vms.is_empty() {
        let ports: BTreeSet<u16> = cfg.host_ports_for_vms.iter().copied().collect();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            s,
            "    ip daddr {gw} tcp dport {{ {} }} accept",
            ports.join(", ")
        );
    }
    let _ = writeln!(s, "    drop\n  }}\n}}");

    // The bridge table: L2 anti-spoofing, no port-to-port, nothing but IPv4/ARP.
    let _ = writeln!(
        s,
        "table bridge {l2} {{}}\ndelete table bridge {l2}\ntable bridge {l2} {{"
    );
    let _ = writeln!(
        s,
        "  set allowed {{\n    type ifname . ether_addr . ipv4_addr"
    );
    let elems: Vec<String> = elements
        .allowed
        .iter()
        .map(|a| format!("\"{}\" . {} . {}", a.tap, a.mac, a.ip))
        .collect();
    if !elems.is_empty() {
        let _ = writeln!(s, "    elements = {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(s, "  }}");
    // Every registered port by name: the agent's own taps and the hypervisor's
    // (`tap<vmid>i0`), which no name pattern of ours covers.
    let _ = writeln!(s, "  set vm_ports {{\n    type ifname");
    let ports: BTreeSet<String> = elements
        .allowed
        .iter()
        .map(|a| format!("\"{}\"", a.tap))
        .collect();
    if !ports.is_empty() {
        let ports: Vec<String> = ports.into_iter().collect();
        let _ = writeln!(s, "    elements = {{ {} }}", ports.join(", "));
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  set vm_macs {{\n    type ether_addr");
    let macs: BTreeSet<String> = elements.allowed.iter().map(|a| a.mac.to_string()).collect();
    if !macs.is_empty() {
        let macs: Vec<String> = macs.into_iter().collect();
        let _ = writeln!(s, "    elements = {{ {} }}", macs.join(", "));
    }
    let _ = writeln!(s, "  }}");
    // ISO-3, from a VM's first frame: a tap of ours sends only IPv4 and ARP with
    // its own registered MAC and IP (sender MAC and IP of ARP included); forged
    // addresses, unregistered taps, IPv6 (RAs, DHCPv6, everything) and any other
    // protocol are dropped.
    //
    // Ports of the bridge the agent did not add (a hypervisor's own `tap<id>i0`, a
    // stray veth): they may not use a VM's MAC (the bridge would learn it there and
    // send that VM's traffic to them), nor any address of the VMs' subnet (so no
    // ARP answer from the host, no packet to the gateway or a VM, nothing
    // masqueraded); anything else they send is judged at L3 like any foreign
    // source: the forward and input chains drop it. The kernel's bridge-name match
    // (`meta ibrname`, CONFIG_NFT_BRIDGE_META) is not everywhere, so the scope is
    // our subnet and our VMs' MACs, which belong to nobody else.
    // Frames the host itself sends into the bridge never pass this hook.
    let _ = writeln!(
        s,
        "  chain prerouting {{\n    type filter hook prerouting priority filter; policy accept;\n    \
         iifname \"{taps}\" jump from_vm\n    \
         iifname @vm_ports jump from_vm\n    \
         ether saddr @vm_macs drop comment \"ISO-3: a VM's MAC from a port that is not its tap\"\n    \
         ether type arp arp saddr ip {subnet} drop comment \"ISO-3: unregistered port\"\n    \
         ether type arp arp daddr ip {subnet} drop comment \"ISO-3: unregistered port\"\n    \
         ether type ip ip saddr {subnet} drop comment \"ISO-3: unregistered port\"\n    \
         ether type ip ip daddr {subnet} drop comment \"ISO-3: unregistered port\"\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain from_vm {{\n    \
         ether type ip iifname . ether saddr . ip saddr @allowed accept\n    \
         ether type arp iifname . ether saddr . arp saddr ip @allowed iifname . arp saddr ether . arp saddr ip @allowed accept\n    \
         drop comment \"ISO-3: unregistered tap, spoofed source, or not IPv4/ARP\"\n  }}"
    );
    // ISO-3: no frame goes from a VM's tap to any other port, nor from any other
    // port to a VM's tap (belt and braces on top of bridge port isolation, and it
    // covers ports the agent did not add, which are not isolated).
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"{taps}\" drop comment \"ISO-3: no VM-to-VM at L2\"\n    \
         oifname \"{taps}\" drop comment \"ISO-3: no other port reaches a VM\"\n    \
         iifname @vm_ports drop comment \"ISO-3: no VM-to-VM at L2\"\n    \
         oifname @vm_ports drop comment \"ISO-3: no other port reaches a VM\"\n  }}"
    );
    // No IPv6 (router advertisements, DHCPv6, neighbour discovery) nor anything
    // else but IPv4 and ARP from the host to the VMs either.
    let _ = writeln!(
        s,
        "  chain output {{\n    type filter hook output priority filter; policy accept;\n    \
         oifname \"{taps}\" ether type != {{ ip, arp }} drop comment \"no IPv6 toward VMs\"\n    \
         oifname @vm_ports ether type != {{ ip, arp }} drop comment \"no IPv6 toward VMs\"\n  }}\n}}"
    );
    s
}

/// An interval set (always declared, maybe empty) inside the current table.
fn write_interval_set(s: &mut String, name: &str, ty: &str, elems: impl Iterator<Item = String>) {
    let elems: Vec<String> = elems.collect();
    let _ = writeln!(s, "  set {name} {{\n    type {ty}\n    flags interval");
    if !elems.is_empty() {
        let _ = writeln!(s, "    elements = {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(s, "  }}");
}

/// Script that deletes the agent's tables if present (teardown).
pub fn render_delete(cfg: &NetworkConfig) -> String {
    let t = &cfg.table;
    let l2 = l2_table(cfg);
    format!(
        "table inet {t} {{}}\ndelete table inet {t}\ntable bridge {l2} {{}}\ndelete table bridge {l2}\n"
    )
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read nft JSON output: {0}")]
pub struct ParseError(pub String);

fn perr(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
}

fn as_port(v: &serde_json::Value) -> Result<u16, ParseError> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| perr(format!("port {n}"))),
        serde_json::Value::String(s) => s.parse().map_err(|_| perr(format!("port {s}"))),
        other => Err(perr(format!("port {other}"))),
    }
}

fn as_str(v: &serde_json::Value) -> Result<&str, ParseError> {
    v.as_str()
        .ok_or_else(|| perr(format!("expected a string, got {v}")))
}

fn as_ip(v: &serde_json::Value) -> Result<Ipv4Addr, ParseError> {
    let s = as_str(v)?;
    s.parse().map_err(|_| perr(format!("ipv4 {s}")))
}

fn concat(v: &serde_json::Value) -> Result<&Vec<serde_json::Value>, ParseError> {
    v.get("concat")
        .and_then(|c| c.as_array())
        .ok_or_else(|| perr(format!("expected a concat, got {v}")))
}

/// Reads the sets' and maps' elements out of `nft -j list table …` outputs (either
/// table may be missing: pass an empty string).
pub fn parse_elements(inet_json: &str, bridge_json: &str) -> Result<Elements, ParseError> {
    let mut out = Elements::default();
    for doc in [inet_json, bridge_json] {
        if doc.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(doc).map_err(|e| perr(e.to_string()))?;
        let objects = v
            .get("nftables")
            .and_then(|n| n.as_array())
            .ok_or_else(|| perr("no `nftables` array"))?;
        for obj in objects {
            let (body, is_map) = match (obj.get("map"), obj.get("set")) {
                (Some(m), _) => (m, true),
                (None, Some(s)) => (s, false),
                _ => continue,
            };
            let name = body.get("name").and_then(|n| n.as_str()).unwrap_or("");
            let Some(elems) = body.get("elem").and_then(|e| e.as_array()) else {
                continue;
            };
            match (is_map, name) {
                (true, "fwd_tcp" | "fwd_udp") => {
                    let map = if name == "fwd_tcp" {
                        &mut out.fwd_tcp
                    } else {
                        &mut out.fwd_udp
                    };
                    for e in elems {
                        let pair = e
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| perr(format!("map element {e}")))?;
                        let to = concat(&pair[1])?;
                        if to.len() != 2 {
                            return Err(perr(format!("map value {}", pair[1])));
                        }
                        map.insert(
                            as_port(&pair[0])?,
                            ForwardTarget {
                                ip: as_ip(&to[0])?,
                                port: as_port(&to[1])?,
                            },
                        );
                    }
                }
                (false, "allowed") => {
                    for e in elems {
                        let parts = concat(e)?;
                        if parts.len() != 3 {
                            return Err(perr(format!("set element {e}")));
                        }
                        let mac = as_str(&parts[1])?
                            .parse()
                            .map_err(|err: super::config::MacParseError| perr(err.to_string()))?;
                        out.allowed.insert(AllowedPair {
                            tap: as_str(&parts[0])?.to_owned(),
                            mac,
                            ip: as_ip(&parts[2])?,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Number of rules in an `nft -j list …` output.
pub fn count_rules(json: &str) -> Result<usize, ParseError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| perr(e.to_string()))?;
    let objects = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| perr("no `nftables` array"))?;
    Ok(objects.iter().filter(|o| o.get("rule").is_some()).count())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfg() -> NetworkConfig {
        let mut c = NetworkConfig::new("10.77.3.0/24".parse().unwrap(), "eth0");
        c.host_ports_for_vms = vec![8443, 53, 8443];
        c
    }

    fn elements(n: u16) -> Elements {
        let mut e = Elements::default();
        for i in 0..n {
            let ip = Ipv4Addr::new(10, 77, 3, 2 + (i % 200) as u8);
            e.fwd_tcp.insert(22000 + i, ForwardTarget { ip, port: 22 });
            e.allowed.insert(AllowedPair {
                tap: format!("clawyt{i:09x}"),
                mac: MacAddr([0x52, 0x54, 0, 0, (i >> 8) as u8, i as u8]),
                ip,
            });
        }
        e
    }

    fn rule_lines(script: &str) -> usize {
        // Rule lines inside chains: everything indented by four spaces that is not a
        // chain header (`type …`) or map/set body.
        script
            .lines()
            .filter(|l| {
                l.starts_with("    ")
                    && !l.starts_with("    type ")
                    && !l.starts_with("    flags ")
                    && !l.starts_with("    elements")
            })
            .count()
    }

    /// The rule lines of one chain of one table, in order.
    fn chain<'a>(script: &'a str, table: &str, name: &str) -> Vec<&'a str> {
        let body = script
            .split(&format!("\ntable {table} {{\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no table {table}"));
        let body = body.split("\ntable ").next().unwrap();
        let start = body
            .find(&format!("  chain {name} {{\n"))
            .unwrap_or_else(|| panic!("no chain {name}"));
        body[start..]
            .lines()
            .skip(1)
            .take_while(|l| *l != "  }")
            .filter(|l| !l.trim_start().starts_with("type "))
            .map(str::trim)
            .collect()
    }

    fn pos(rules: &[&str], needle: &str) -> usize {
        rules
            .iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {rules:#?}"))
    }

    #[test]
    fn iso_3_iso_5_rules_in_order_and_ending_in_drop() {
        let s = render(&cfg(), &Elements::default());
        let fwd = chain(&s, "inet clawy", "forward");
        // ISO-3 before conntrack can accept anything (crafted RELATED packets).
        let vm_vm = pos(&fwd, "iifname \"clawybr0\" oifname \"clawybr0\" drop");
        assert!(
            vm_vm < pos(&fwd, "ct state established,related accept"),
            "{fwd:#?}"
        );
        // ISO-5: exceptions before the blocked set, both before the internet.
        let blocked = pos(&fwd, "ip daddr @egress_blocked drop");
        assert!(pos(&fwd, "ip daddr @egress_allow accept") < blocked);
        assert!(pos(&fwd, "@egress_allow_udp accept") < blocked);
        assert!(blocked < pos(&fwd, "ip saddr 10.77.3.0/24 accept"));
        assert_eq!(fwd.last(), Some(&"drop"), "{fwd:#?}");
        let input = chain(&s, "inet clawy", "input");
        // Host ports a VM may use: on the gateway only, deduplicated and sorted.
        assert!(
            input.contains(&"ip daddr 10.77.3.1 tcp dport { 53, 8443 } accept"),
            "{input:#?}"
        );
        assert_eq!(input.last(), Some(&"drop"));
        let post = chain(&s, "inet clawy", "postrouting");
        assert_eq!(
            post,
            vec![
                "ip saddr 10.77.3.0/24 oifname \"eth0\" masquerade",
                "ip saddr 127.0.0.0/8 oifname \"clawybr0\" ct status dnat snat ip to 10.77.3.1"
            ]
        );
        // L2: taps to the strict chain, other ports kept off our addresses.
        let pre = chain(&s, "bridge clawy_l2", "prerouting");
        assert_eq!(pre[0], "iifname \"clawyt*\" jump from_vm");
        // A hypervisor's tap (PVE's tap<vmid>i0) once registered: same strict chain.
        assert_eq!(pre[1], "iifname @vm_ports jump from_vm");
        assert!(
            pre.iter()
                .any(|r| r.starts_with("ether saddr @vm_macs drop"))
        );
        let from_vm = chain(&s, "bridge clawy_l2", "from_vm");
        assert!(
            from_vm[0]
                .starts_with("ether type ip iifname . ether saddr . ip saddr @allowed accept")
        );
        assert!(from_vm[1].starts_with("ether type arp iifname . ether saddr . arp saddr ip @allowed iifname . arp saddr ether . arp saddr ip @allowed accept"));
        assert!(from_vm[2].starts_with("drop"), "{from_vm:#?}");
        let l2fwd = chain(&s, "bridge clawy_l2", "forward");
        assert!(l2fwd[0].starts_with("iifname \"clawyt*\" drop"));
        assert!(l2fwd[1].starts_with("oifname \"clawyt*\" drop"));
        // Atomic replace: declare, delete, define for both tables.
        assert!(s.starts_with("table inet clawy {}\ndelete table inet clawy\ntable inet clawy {"));
        assert!(s.contains("table bridge clawy_l2 {}\ndelete table bridge clawy_l2\n"));
    }

    #[test]
    fn iso_5_sets_hold_defaults_extras_and_exceptions() {
        let mut c = cfg();
        c.blocked_destinations = vec!["198.51.100.99/32".parse().unwrap()];
        c.egress_allow = vec![
            "10.0.0.53/32:53/udp".parse().unwrap(),
            "10.0.0.80:443/tcp".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
        ];
        let s = render(&c, &Elements::default());
        assert!(s.contains("169.254.0.0/16, 172.16.0.0/12"), "{s}");
        assert!(s.contains("240.0.0.0/4, 198.51.100.99/32 }"), "{s}");
        assert!(s.contains("set egress_allow_udp {\n    type ipv4_addr . inet_service\n    flags interval\n    elements = { 10.0.0.53/32 . 53 }"), "{s}");
        assert!(s.contains("elements = { 10.0.0.80/32 . 443 }"), "{s}");
        assert!(s.contains("set egress_allow {\n    type ipv4_addr\n    flags interval\n    elements = { 10.20.0.0/16 }"), "{s}");
        // The rules are the same whatever the lists hold.
        assert_eq!(
            rule_lines(&s),
            rule_lines(&render(&cfg(), &Elements::default()))
        );
    }

    #[test]
    fn net_5_only_mapped_ports_are_dnated() {
        let s = render(&cfg(), &elements(2));
        assert!(s.contains("iifname \"eth0\" meta l4proto tcp dnat ip to tcp dport map @fwd_tcp"));
        assert!(
            s.contains("elements = { 22000 : 10.77.3.2 . 22, 22001 : 10.77.3.3 . 22 }"),
            "{s}"
        );
        assert!(s.contains("iifname \"eth0\" oifname \"clawybr0\" ct status dnat accept"));
        // The shown SSH command works from the host itself: local traffic to the
        // host's own addresses takes the same forwards, loopback sources leave as
        // the gateway address.
        assert!(
            s.contains("fib daddr type local meta l4proto tcp dnat ip to tcp dport map @fwd_tcp")
        );
        assert!(s.contains(
            "ip saddr 127.0.0.0/8 oifname \"clawybr0\" ct status dnat snat ip to 10.77.3.1"
        ));
    }

    #[test]
    fn no_host_ports_means_no_accept_rule() {
        let mut c = cfg();
        c.host_ports_for_vms.clear();
        let s = render(&c, &Elements::default());
        assert!(!s.contains("tcp dport {"), "{s}");
        assert_eq!(chain(&s, "inet clawy", "input").last(), Some(&"drop"));
    }

    #[test]
    fn rule_count_independent_of_elements() {
        let few = rule_lines(&render(&cfg(), &elements(1)));
        let many = rule_lines(&render(&cfg(), &elements(1000)));
        assert_eq!(few, many);
        assert!(few > 10);
    }

    #[test]
    fn parse_elements_reads_nft_json() {
        let inet = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "clawy", "handle": 5}}, {"map": {"family": "inet", "name": "fwd_tcp", "table": "clawy", "type": "inet_service", "handle": 2, "map": "ipv4_addr . inet_service", "elem": [[22001, {"concat": ["10.9.0.2", 22]}], ["22002", {"concat": ["10.9.0.3", "2222"]}]]}}, {"map": {"family": "inet", "name": "fwd_udp", "table": "clawy", "type": "inet_service", "handle": 3, "map": "ipv4_addr . inet_service"}}]}"#;
        let bridge = r#"{"nftables": [{"set": {"family": "bridge", "name": "allowed", "table": "clawy_l2", "type": ["ifname", "ether_addr", "ipv4_addr"], "handle": 3, "elem": [{"concat": ["clawyt1", "52:54:00:00:00:01", "10.9.0.2"]}]}}, {"rule": {"family": "bridge"}}]}"#;
        let e = parse_elements(inet, bridge).unwrap();
        assert_eq!(e.fwd_tcp.len(), 2);
        assert_eq!(
            e.fwd_tcp[&22002],
            ForwardTarget {
                ip: Ipv4Addr::new(10, 9, 0, 3),
                port: 2222
            }
        );
        assert!(e.fwd_udp.is_empty());
        assert_eq!(e.allowed.len(), 1);
        assert_eq!(count_rules(bridge).unwrap(), 1);
        assert_eq!(parse_elements("", "").unwrap(), Elements::default());
    }

    #[test]
    fn render_then_parse_roundtrip_shape() {
        // What render writes as elements is what parse reads back (via nft's JSON in
        // the integration tests); here: the text forms agree with the JSON forms.
        let e = elements(3);
        let s = render(&cfg(), &e);
        for a in &e.allowed {
            assert!(s.contains(&format!("\"{}\" . {} . {}", a.tap, a.mac, a.ip)));
        }
    }
}
