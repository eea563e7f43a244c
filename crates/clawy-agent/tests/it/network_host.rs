//! The `network` module against real `ip`/`bridge`/`nft` inside throwaway network
//! namespaces (no VMs here; the two-guest isolation tests are in clawy-cli's
//! `agent_network`).

use std::net::Ipv4Addr;

use clawy_agent::network::{MacAddr, Network, NetworkConfig, NetworkError};
use clawy_proto::agent::{PortForward, Protocol};
use clawy_testkit::netns::Netns;

fn cfg() -> NetworkConfig {
    let mut c = NetworkConfig::new("10.88.4.0/24".parse().unwrap(), "up0");
    c.ssh_port_range = "22000-22099".parse().unwrap();
    c.host_ports_for_vms = vec![8443];
    c
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x88, 4, last])
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 4, last)
}

fn tcp(host_port: u16, guest_port: u16) -> PortForward {
    PortForward {
        protocol: Protocol::Tcp,
        host_port,
        guest_port,
    }
}

fn ruleset(ns: &Netns) -> String {
    ns.exec(&["nft", "list", "ruleset"]).unwrap()
}

#[tokio::test]
async fn iso_3_ensure_host_creates_bridge_tables_and_forwarding_idempotently() {
    let ns = Netns::new("nethost").unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    let addr = ns
        .exec(&["ip", "-o", "addr", "show", "dev", "clawybr0"])
        .unwrap();
    assert!(addr.contains("10.88.4.1/24"), "{addr}");
    let fwd = ns.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).unwrap();
    assert_eq!(fwd.trim(), "1");
    // What the rules are and in which order: network_rules.rs reads them back.
    let rules = net.rule_count().await.unwrap();
    // The agent's count is the rules nft itself lists (`-a`: every rule line ends in
    // its handle, as do the table, chain and set lines).
    let mut listed = 0;
    for (family, table) in [("inet", "clawy"), ("bridge", "clawy_l2")] {
        let text = ns
            .exec(&["nft", "-a", "list", "table", family, table])
            .unwrap();
        listed += text
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("# handle "))
            .filter(|l| {
                !["table ", "chain ", "set ", "map "]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .count();
    }
    assert!(listed > 10, "{listed}");
    assert_eq!(rules, listed);
    let rs = ruleset(&ns);
    assert!(rs.contains("table inet clawy") && rs.contains("table bridge clawy_l2"));
    // Again: same rules, same single bridge address.
    net.ensure_host().await.unwrap();
    assert_eq!(net.rule_count().await.unwrap(), rules);
    let addr = ns
        .exec(&["ip", "-o", "-4", "addr", "show", "dev", "clawybr0"])
        .unwrap();
    assert_eq!(addr.lines().count(), 1, "{addr}");
    // Teardown removes the agent's tables and bridge, and nothing of the host's own.
    ns.exec(&["nft", "add", "table", "inet", "hosts_own"])
        .unwrap();
    net.teardown().await.unwrap();
    let rs = ruleset(&ns);
    assert!(!rs.contains("clawy"), "{rs}");
    assert!(rs.contains("table inet hosts_own"), "{rs}");
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains("clawybr0"), "{links}");
    // Again, with nothing left to remove.
    net.teardown().await.unwrap();
}

#[tokio::test]
async fn iso_3_tap_is_an_isolated_port_with_one_registered_source() {
    let ns = Netns::new("nettap").unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    let tap = net.ensure_tap("vm-a", mac(10), ip(10)).await.unwrap();
    assert_eq!(tap, Network::tap_name("vm-a"));
    let link = ns
        .exec(&["bridge", "-d", "link", "show", "dev", &tap])
        .unwrap();
    assert!(link.contains("master clawybr0"), "{link}");
    assert!(link.contains("isolated on"), "{link}");
    // Idempotent, and the registration is exactly one (tap, MAC, IP) element.
    net.ensure_tap("vm-a", mac(10), ip(10)).await.unwrap();
    let set = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert_eq!(set.matches(&tap).count(), 1, "{set}");
    assert!(set.contains("52:54:00:88:04:0a . 10.88.4.10"), "{set}");

    // Another VM may not take that address or MAC.
    let err = net.ensure_tap("vm-b", mac(11), ip(10)).await.unwrap_err();
    assert!(matches!(err, NetworkError::AddressConflict { .. }), "{err}");
    let err = net.ensure_tap("vm-b", mac(10), ip(11)).await.unwrap_err();
    assert!(matches!(err, NetworkError::AddressConflict { .. }), "{err}");
    // A new address for the same VM replaces its registration.
    net.ensure_tap("vm-a", mac(12), ip(12)).await.unwrap();
    let set = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert!(
        !set.contains("10.88.4.10") && set.contains("10.88.4.12"),
        "{set}"
    );

    net.remove_tap("vm-a").await.unwrap();
    assert!(
        !ns.output(&["ip", "link", "show", &tap])
            .unwrap()
            .status
            .success()
    );
    let set = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert!(!set.contains(&tap), "{set}");
    net.remove_tap("vm-a").await.unwrap();
}

/// A hypervisor's own tap (Proxmox VE creates `tap<vmid>i0` and joins it to the
/// bridge): the agent registers it — isolated port, one allowed source pair, a
/// `vm_ports` element so the strict L2 chain applies — refuses a tap that is
/// not a port of the Clawy bridge, and on removal unregisters it without
/// deleting the hypervisor's interface.
#[tokio::test]
async fn iso_3_hypervisor_tap_is_registered_isolated_and_unregistered() {
    let ns = Netns::new("nethvtap").unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    // What PVE does at VM start.
    ns.exec(&["ip", "tuntap", "add", "dev", "tap101i0", "mode", "tap"])
        .unwrap();
    let err = net
        .register_hypervisor_tap("tap101i0", mac(20), ip(20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a port of clawybr0"), "{err}");
    ns.exec(&["ip", "link", "set", "dev", "tap101i0", "master", "clawybr0"])
        .unwrap();
    // The agent's own prefix is not for hypervisor taps.
    assert!(
        net.register_hypervisor_tap("clawyt123", mac(20), ip(20))
            .await
            .is_err()
    );
    net.register_hypervisor_tap("tap101i0", mac(20), ip(20))
        .await
        .unwrap();
    net.register_hypervisor_tap("tap101i0", mac(20), ip(20))
        .await
        .unwrap();
    let link = ns
        .exec(&["bridge", "-d", "link", "show", "dev", "tap101i0"])
        .unwrap();
    assert!(link.contains("isolated on"), "{link}");
    let allowed = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert_eq!(allowed.matches("tap101i0").count(), 1, "{allowed}");
    let ports = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "vm_ports"])
        .unwrap();
    assert!(ports.contains("\"tap101i0\""), "{ports}");
    assert_eq!(
        net.port_of(ip(20)).await.unwrap().as_deref(),
        Some("tap101i0")
    );
    // An agent restart keeps the registration (elements survive the reload).
    let net2 = Network::in_netns(cfg(), ns.name()).unwrap();
    net2.ensure_host().await.unwrap();
    let ports = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "vm_ports"])
        .unwrap();
    assert!(ports.contains("\"tap101i0\""), "{ports}");
    net2.remove_vm_port("vm-p", "tap101i0").await.unwrap();
    let ports = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "vm_ports"])
        .unwrap();
    assert!(!ports.contains("tap101i0"), "{ports}");
    let allowed = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert!(!allowed.contains("tap101i0"), "{allowed}");
    // The hypervisor's interface is the hypervisor's to delete.
    assert!(
        ns.output(&["ip", "link", "show", "tap101i0"])
            .unwrap()
            .status
            .success()
    );
}

#[tokio::test]
async fn net_5_forwards_replace_conflict_and_remove_without_new_rules() {
    let ns = Netns::new("netfwd").unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    let rules = net.rule_count().await.unwrap();
    net.ensure_tap("vm-a", mac(10), ip(10)).await.unwrap();
    net.ensure_tap("vm-b", mac(11), ip(11)).await.unwrap();
    net.set_port_forwards("vm-a", ip(10), &[tcp(22010, 22), tcp(22011, 18789)])
        .await
        .unwrap();
    net.set_port_forwards("vm-b", ip(11), &[tcp(22020, 22)])
        .await
        .unwrap();
    assert_eq!(net.rule_count().await.unwrap(), rules);
    assert_eq!(net.forwards().await.unwrap().len(), 3);

    // Someone else's host port is a typed conflict, and changes nothing.
    let err = net
        .set_port_forwards("vm-b", ip(11), &[tcp(22010, 22)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::PortConflict { host_port: 22010, owner, .. } if owner == ip(10)),
        "{err}"
    );
    assert_eq!(net.forwards().await.unwrap().len(), 3);

    // Replace: one kept, one changed guest port, one dropped; same for a repeat.
    for _ in 0..2 {
        net.set_port_forwards("vm-a", ip(10), &[tcp(22010, 2222)])
            .await
            .unwrap();
        let map = ns
            .exec(&["nft", "list", "map", "inet", "clawy", "fwd_tcp"])
            .unwrap();
        assert!(map.contains("22010 : 10.88.4.10 . 2222"), "{map}");
        assert!(!map.contains("22011"), "{map}");
        assert!(map.contains("22020 : 10.88.4.11 . 22"), "{map}");
    }

    // UDP forwards live in their own map; the same host port number is free there.
    let udp = PortForward {
        protocol: Protocol::Udp,
        host_port: 22020,
        guest_port: 51820,
    };
    net.set_port_forwards("vm-a", ip(10), &[tcp(22010, 2222), udp])
        .await
        .unwrap();
    let map = ns
        .exec(&["nft", "list", "map", "inet", "clawy", "fwd_udp"])
        .unwrap();
    assert!(map.contains("22020 : 10.88.4.10 . 51820"), "{map}");
    assert_eq!(net.rule_count().await.unwrap(), rules);

    net.remove_vm("vm-a").await.unwrap();
    let rs = ruleset(&ns);
    assert!(!rs.contains("10.88.4.10"), "{rs}");
    assert!(rs.contains("10.88.4.11"), "{rs}");
    assert!(
        !ns.output(&["ip", "link", "show", &Network::tap_name("vm-a")])
            .unwrap()
            .status
            .success()
    );
    assert_eq!(net.rule_count().await.unwrap(), rules);
}

#[tokio::test]
async fn restarted_agent_keeps_elements_of_running_vms() {
    let ns = Netns::new("netrestart").unwrap();
    {
        let net = Network::in_netns(cfg(), ns.name()).unwrap();
        net.ensure_host().await.unwrap();
        net.ensure_tap("vm-a", mac(10), ip(10)).await.unwrap();
        net.set_port_forwards("vm-a", ip(10), &[tcp(22010, 22)])
            .await
            .unwrap();
    }
    // A new process: the atomic ruleset reload keeps what nftables held.
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    let fw = net.forwards().await.unwrap();
    assert_eq!(fw.len(), 1);
    assert_eq!(
        (fw[0].host_port, fw[0].ip, fw[0].guest_port),
        (22010, ip(10), 22)
    );
    let set = ns
        .exec(&["nft", "list", "set", "bridge", "clawy_l2", "allowed"])
        .unwrap();
    assert!(set.contains("10.88.4.10"), "{set}");
    // And it still knows the VM's forwards belong to it.
    net.remove_vm("vm-a").await.unwrap();
    assert!(net.forwards().await.unwrap().is_empty());
}

#[tokio::test]
async fn teardown_removes_only_what_the_agent_owns() {
    let ns = Netns::new("netdown").unwrap();
    // The host's own things: an interface and a firewall table.
    ns.exec(&[
        "ip", "link", "add", "hostv0", "type", "veth", "peer", "name", "hostv1",
    ])
    .unwrap();
    ns.exec(&["nft", "add", "table", "inet", "hostfw"]).unwrap();
    let net = Network::in_netns(cfg(), ns.name()).unwrap();
    net.ensure_host().await.unwrap();
    net.ensure_tap("vm-a", mac(10), ip(10)).await.unwrap();
    net.set_port_forwards("vm-a", ip(10), &[tcp(22010, 22)])
        .await
        .unwrap();
    net.teardown().await.unwrap();
    let tables = ns.exec(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("clawy"), "{tables}");
    assert!(tables.contains("hostfw"), "{tables}");
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains(": clawy"), "{links}");
    assert!(links.contains("hostv0"), "{links}");
    // Teardown twice is fine.
    net.teardown().await.unwrap();
}
