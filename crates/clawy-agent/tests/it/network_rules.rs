//! The agent's ruleset as the kernel holds it (`nft -j`, read back in a
//! throwaway namespace): order and verdicts of the rules that keep ISO-3 and
//! ISO-5, and that per-VM data never adds rules. The live-traffic proofs with
//! real guests are in `agent_network` and `agent_egress` beside this file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use clawy_agent::network::{MacAddr, Network, NetworkConfig};
use clawy_testkit::netns::Netns;
use clawy_testkit::nft::{Rule, chains};

fn cfg() -> NetworkConfig {
    let mut c = NetworkConfig::new("10.88.5.0/24".parse().unwrap(), "up0");
    c.ssh_port_range = "22000-22099".parse().unwrap();
    c.host_ports_for_vms = vec![8443];
    c.blocked_destinations = vec!["198.51.100.99/32".parse().unwrap()];
    c.egress_allow = vec![
        "10.99.0.53/32:53/udp".parse().unwrap(),
        "10.99.0.0/30".parse().unwrap(),
    ];
    c
}

fn lines(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(Rule::line).collect()
}

/// Index of the first rule whose line contains every one of `parts`.
fn find(rules: &[Rule], parts: &[&str]) -> Option<usize> {
    rules
        .iter()
        .position(|r| parts.iter().all(|p| r.line().contains(p)))
}

fn must_find(rules: &[Rule], parts: &[&str]) -> usize {
    find(rules, parts).unwrap_or_else(|| panic!("no rule with {parts:?} in {:#?}", lines(rules)))
}

fn set_elements(ns: &Netns, family: &str, table: &str, set: &str) -> String {
    ns.exec(&["nft", "list", "set", family, table, set])
        .unwrap()
}

#[tokio::test]
async fn iso_3_iso_5_rules_read_back_in_order_with_their_verdicts() {
    let ns = Netns::new("netrules").unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    let inet = chains(&ns, "inet", "clawy").unwrap();
    let l2 = chains(&ns, "bridge", "clawy_l2").unwrap();
    let fwd = &inet["forward"];

    // ISO-3 before conntrack: the VM-to-VM drop precedes every `ct state` accept,
    // so a crafted RELATED packet between VMs is never accepted.
    let vm_vm = must_find(
        fwd,
        &["iifname == clawybr0", "oifname == clawybr0", "=> drop"],
    );
    assert!(
        fwd[vm_vm].matches == "iifname == clawybr0 · oifname == clawybr0",
        "{:#?}",
        lines(fwd)
    );
    let first_ct_accept = fwd
        .iter()
        .position(|r| r.matches.contains("ct state") && r.verdict == "accept")
        .unwrap();
    assert!(vm_vm < first_ct_accept, "{:#?}", lines(fwd));
    // ISO-5: exceptions, then the blocked destinations, then the internet.
    let allow_net = must_find(fwd, &["ip daddr == @egress_allow", "=> accept"]);
    let allow_udp = must_find(
        fwd,
        &["ip daddr . udp dport == @egress_allow_udp", "=> accept"],
    );
    let allow_tcp = must_find(
        fwd,
        &["ip daddr . tcp dport == @egress_allow_tcp", "=> accept"],
    );
    let blocked = must_find(
        fwd,
        &[
            "iifname == clawybr0",
            "ip daddr == @egress_blocked",
            "=> drop",
        ],
    );
    let internet = must_find(
        fwd,
        &[
            "iifname == clawybr0",
            "oifname == up0",
            "ip saddr == 10.88.5.0/24",
            "=> accept",
        ],
    );
    for allow in [allow_net, allow_udp, allow_tcp] {
        assert!(allow < blocked, "{:#?}", lines(fwd));
        // An exception only ever opens the uplink, never another interface.
        assert!(
            fwd[allow].matches.contains("oifname == up0"),
            "{:#?}",
            lines(fwd)
        );
    }
    assert!(blocked < internet, "{:#?}", lines(fwd));
    // NET-5 and the end: the chain ends in an unconditional drop.
    must_find(
        fwd,
        &[
            "iifname == up0",
            "oifname == clawybr0",
            "ct status in dnat",
            "=> accept",
        ],
    );
    let last = fwd.last().unwrap();
    assert!(
        last.is_unconditional() && last.verdict == "drop",
        "{:#?}",
        lines(fwd)
    );

    // Input: host ports only on the gateway address, then drop.
    let input = &inet["input"];
    must_find(
        input,
        &["ip daddr == 10.88.5.1", "tcp dport == 8443", "=> accept"],
    );
    let last = input.last().unwrap();
    assert!(
        last.is_unconditional() && last.verdict == "drop",
        "{:#?}",
        lines(input)
    );

    // The sets hold the defaults, the configured extras and the exceptions.
    let blocked_set = set_elements(&ns, "inet", "clawy", "egress_blocked");
    for net in [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "198.51.100.99",
    ] {
        assert!(blocked_set.contains(net), "{net}: {blocked_set}");
    }
    assert!(!blocked_set.contains("203.0.113"), "{blocked_set}");
    assert!(set_elements(&ns, "inet", "clawy", "egress_allow_udp").contains("10.99.0.53 . 53"));
    assert!(set_elements(&ns, "inet", "clawy", "egress_allow").contains("10.99.0.0/30"));

    // L2: our taps jump to the strict chain; every other port may not use the
    // VMs' MACs or subnet; the strict chain accepts only registered IPv4 and ARP
    // and ends in an unconditional drop.
    let pre = &l2["prerouting"];
    assert_eq!(
        pre[0].line(),
        "iifname == clawyt* => jump from_vm",
        "{:#?}",
        lines(pre)
    );
    // A hypervisor's tap (PVE's tap<vmid>i0), once registered, gets the same
    // strict chain.
    assert_eq!(
        pre[1].line(),
        "iifname == @vm_ports => jump from_vm",
        "{:#?}",
        lines(pre)
    );
    must_find(pre, &["ether saddr == @vm_macs", "=> drop"]);
    for field in ["arp saddr ip", "arp daddr ip", "ip saddr", "ip daddr"] {
        must_find(pre, &[&format!("{field} == 10.88.5.0/24"), "=> drop"]);
    }
    let from_vm = &l2["from_vm"];
    assert_eq!(
        lines(from_vm),
        vec![
            "iifname . ether saddr . ip saddr == @allowed => accept".to_string(),
            "iifname . ether saddr . arp saddr ip == @allowed · iifname . arp saddr ether . arp saddr ip == @allowed => accept".to_string(),
            "=> drop".to_string(),
        ]
    );
    let l2fwd = &l2["forward"];
    assert_eq!(
        lines(l2fwd),
        vec![
            "iifname == clawyt* => drop".to_string(),
            "oifname == clawyt* => drop".to_string(),
            "iifname == @vm_ports => drop".to_string(),
            "oifname == @vm_ports => drop".to_string(),
        ]
    );
    // No IPv6 (nor anything but IPv4/ARP) toward VMs, and none on the bridge.
    assert_eq!(
        lines(&l2["output"]),
        vec![
            "oifname == clawyt* · ether type != {ip,arp} => drop".to_string(),
            "oifname == @vm_ports · ether type != {ip,arp} => drop".to_string(),
        ]
    );
    let v6 = ns
        .exec(&["ip", "-6", "addr", "show", "dev", "clawybr0"])
        .unwrap();
    assert!(v6.trim().is_empty(), "{v6}");
    let off = ns
        .exec(&["sysctl", "-n", "net.ipv6.conf.clawybr0.disable_ipv6"])
        .unwrap();
    assert_eq!(off.trim(), "1");

    // A VM adds elements, never rules; its tap has no IPv6 either.
    let before: BTreeMap<String, usize> = inet
        .iter()
        .chain(l2.iter())
        .map(|(k, v)| (k.clone(), v.len()))
        .collect();
    let tap = net
        .ensure_tap(
            "vm-a",
            MacAddr([0x52, 0x54, 0, 0x88, 5, 10]),
            Ipv4Addr::new(10, 88, 5, 10),
        )
        .await
        .unwrap();
    let off = ns
        .exec(&["sysctl", "-n", &format!("net.ipv6.conf.{tap}.disable_ipv6")])
        .unwrap();
    assert_eq!(off.trim(), "1");
    assert!(set_elements(&ns, "bridge", "clawy_l2", "vm_macs").contains("52:54:00:88:05:0a"));
    let after_inet = chains(&ns, "inet", "clawy").unwrap();
    let after_l2 = chains(&ns, "bridge", "clawy_l2").unwrap();
    let after: BTreeMap<String, usize> = after_inet
        .iter()
        .chain(after_l2.iter())
        .map(|(k, v)| (k.clone(), v.len()))
        .collect();
    assert_eq!(before, after);
    net.remove_tap("vm-a").await.unwrap();
    assert!(!set_elements(&ns, "bridge", "clawy_l2", "vm_macs").contains("52:54:00:88:05:0a"));
}
