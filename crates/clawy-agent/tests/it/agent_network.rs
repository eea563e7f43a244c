//! The VMs' network through the real agent with two real TCG guests (ISO-3, NET-3,
//! NET-5), and key-only SSH on the stand-in guest (AUTH-4), with keys whose
//! comments hold quotes, backslashes, YAML syntax and non-ASCII. One body, run on
//! both drivers: `qemu`, and `proxmox` against `pve-sim` (the Proxmox VE simulator;
//! its VMs are real TCG guests whose `tap<vmid>i0` joins the agent's bridge).
//! Topology, all inside namespaces the test creates and deletes:
//!
//! ```text
//!  [guest A 10.77.2.10]─tap─┐
//!                           clawybr0 10.77.2.1 ── agent (host ns) ── up0 203.0.113.1
//!  [guest B 10.77.2.11]─tap─┘                                          │ veth
//!                                                            wan0 203.0.113.2 (internet ns)
//! ```
//!
//! Each guest runs a probe script from its user-data (the test guest serves the
//! output at `/probe.txt`; the agent has no exec path: ACCESS-2) and the test reads
//! the results from the host namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{PortForward, Protocol, VmSpec};
use clawy_testkit::agent::AgentOptions;
use clawy_testkit::netns::Netns;

use crate::drivers::{Driver, start_agent};
const SUBNET: &str = "10.77.2";
const GW: &str = "10.77.2.1";
const HOST_UPLINK: &str = "203.0.113.1";
const INTERNET: &str = "203.0.113.2";

struct Guest {
    id: &'static str,
    ip: String,
    mac: &'static str,
    ssh_port: u16,
}

fn guests() -> [Guest; 2] {
    [
        Guest {
            id: "net-a",
            ip: format!("{SUBNET}.10"),
            mac: "52:54:00:77:02:0a",
            ssh_port: 22110,
        },
        Guest {
            id: "net-b",
            ip: format!("{SUBNET}.11"),
            mac: "52:54:00:77:02:0b",
            ssh_port: 22111,
        },
    ]
}

/// The probe a guest runs once, against the other guest; every line is
/// `name=result`. Phase 1 (no changes to itself) runs at once and is published at
/// `/phase1.txt`; phase 2 forges addresses and waits for its turn (the host's
/// port 8082 answers whose turn it is), so the other guest is never mid-forgery
/// while this one tests reaching it. Every attempt is bounded by `timeout`.
fn probe_script(me: &Guest, other: &Guest) -> String {
    let (id, ip, oip, omac, oport) = (me.id, &me.ip, &other.ip, other.mac, other.ssh_port);
    format!(
        r#"#!/bin/sh
# get HOST PORT PATH: the HTTP body, or "closed" (busybox nc).
get() {{
  r=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$3" | timeout 5 nc -w 3 "$1" "$2" 2>/dev/null | tr -d '\r' | sed '1,/^$/d')
  echo "${{r:-closed}}"
}}
ping_other() {{ ping -c 1 -W 2 {oip} >/dev/null 2>&1 && echo open || echo closed; }}
# The positive control beside every ping that must fail: the same ping to the
# internet namespace must get through.
ping_inet() {{ ping -c 1 -W 2 {INTERNET} >/dev/null 2>&1 && echo open || echo closed; }}
reset_net() {{
  ip addr flush dev eth0
  ip link set eth0 down; ip link set eth0 address $1; ip link set eth0 up
  ip addr add $2/24 dev eth0
  ip route add default via {GW} dev eth0
  ip neigh flush all
}}
# Phase 1 starts only when the host has seen both guests answer (turn `phase1`),
# so "closed" below can never mean "the other guest had not booted yet".
while [ "$(get {GW} 8082 /)" != "phase1" ]; do sleep 1; done
{{
echo "inet=$(get {INTERNET} 8000 /)"
echo "host_allowed=$(get {GW} 8080 /)"
echo "host_blocked=$(get {GW} 8081 /)"
echo "icmp_inet=$(ping_inet)"
echo "icmp_other=$(ping_other)"
echo "tcp_other=$(get {oip} 18789 /healthz)"
# L3 detour: force the path to the other VM through the host's routing.
ip route add {oip}/32 via {GW} dev eth0
echo "tcp_other_via_gw=$(get {oip} 18789 /healthz)"
echo "icmp_inet_via_gw=$(ping_inet)"
echo "icmp_other_via_gw=$(ping_other)"
ip route del {oip}/32
# Hairpin: the other guest's SSH forward on the host's uplink address, from inside
# (the same check against its own SSH server shows the check itself works).
echo "own_ssh=$(r=$(sleep 2 | timeout 4 nc -w 3 127.0.0.1 22 2>/dev/null | head -c 7); echo "${{r:-closed}}")"
echo "hairpin_other_ssh=$(r=$(sleep 2 | timeout 4 nc -w 3 {HOST_UPLINK} {oport} 2>/dev/null | head -c 7); echo "${{r:-closed}}")"
echo "hairpin_other_ssh_direct=$(r=$(sleep 2 | timeout 4 nc -w 3 {oip} 22 2>/dev/null | head -c 7); echo "${{r:-closed}}")"
}} > /tmp/phase1
cat /tmp/phase1
cp /tmp/phase1 /www/.phase1 && mv /www/.phase1 /www/phase1.txt
while [ "$(get {GW} 8082 /)" != "{id}" ]; do sleep 1; done
# Forged IP: a free address of the subnet, then the other guest's address.
mymac=$(cat /sys/class/net/eth0/address)
reset_net $mymac {SUBNET}.99
echo "inet_forged_ip=$(get {INTERNET} 8000 /)"
echo "host_forged_ip=$(get {GW} 8080 /)"
reset_net $mymac {oip}
echo "inet_forged_other_ip=$(get {INTERNET} 8000 /)"
# Forged MAC (the other guest's) with its own IP, then both forged.
reset_net {omac} {ip}
echo "inet_forged_mac=$(get {INTERNET} 8000 /)"
echo "tcp_other_forged_mac=$(get {oip} 18789 /healthz)"
reset_net {omac} {oip}
echo "inet_forged_both=$(get {INTERNET} 8000 /)"
# Back to its real identity: the network works again (the checks above were real).
reset_net $mymac {ip}
echo "inet_restored=$(get {INTERNET} 8000 /)"
echo "tcp_other_restored=$(get {oip} 18789 /healthz)"
"#
    )
}

fn spec(g: &Guest, image: &str, keys: &[String], user_data: Option<String>) -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image.into(),
        mac: g.mac.into(),
        private_ip: g.ip.clone(),
        hostname: g.id.into(),
        ssh_authorized_keys: keys.to_vec(),
        user_data,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: g.ssh_port,
            guest_port: 22,
        }],
        public_hostname: None,
    }
}

/// A tiny HTTP responder (socat, one shell per connection) whose body is `body`,
/// or the client's address as seen here when `body` is None.
pub(crate) fn spawn_http_echo(
    ns: &Netns,
    dir: &Path,
    bind: &str,
    port: u16,
    body: Option<&str>,
) -> tokio::process::Child {
    let script = dir.join(format!("respond-{port}.sh"));
    let body = body.map_or("$SOCAT_PEERADDR".to_string(), str::to_string);
    std::fs::write(
        &script,
        format!(
            "cr=$(printf '\\r')\nwhile read -r l; do case \"$l\" in \"$cr\"|\"\") break;; esac; done\nprintf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s' \"{body}\"\n"
        ),
    )
    .unwrap();
    ns.tokio_command("socat")
        .arg(format!("TCP-LISTEN:{port},fork,reuseaddr,bind={bind}"))
        .arg(format!("SYSTEM:sh {}", script.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn nft_rule_count(ns: &Netns) -> usize {
    let mut n = 0;
    for (family, table) in [("inet", "clawy"), ("bridge", "clawy_l2")] {
        let json = ns
            .exec(&["nft", "-j", "list", "table", family, table])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        n += v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o.get("rule").is_some())
            .count();
    }
    n
}

/// Waits until the guest's HTTP server answers from the host namespace (it has
/// booted and its network works).
pub(crate) async fn wait_http(host: &Netns, ip: &str) {
    let url = format!("http://{ip}:18789/healthz");
    let deadline = Instant::now() + Duration::from_secs(240);
    while !host
        .output(&["curl", "-s", "-f", "-m", "3", &url])
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "{ip} never answered from the host"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads a guest's `/<file>` from the host namespace once it exists (`probe.txt`
/// appears when the whole probe finished).
pub(crate) async fn read_probe(host: &Netns, ip: &str, file: &str) -> BTreeMap<String, String> {
    let url = format!("http://{ip}:18789/{file}");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let out = host.output(&["curl", "-s", "-f", "-m", "3", &url]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && (file != "probe.txt" || text.contains("probe-exit=")) {
            return text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
        }
        assert!(Instant::now() < deadline, "no probe result from {ip}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn ssh_keypair(dir: &Path, comment: &str) -> (std::path::PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    (key, public.trim().to_string())
}

fn ssh_args(key: &Path, port: u16) -> Vec<String> {
    [
        "ssh",
        "-i",
        &key.display().to_string(),
        "-p",
        &port.to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn port_open(ns: &Netns, addr: &str, port: u16) -> bool {
    ns.output(&["nc", "-z", "-w", "2", addr, &port.to_string()])
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn iso_3_net_3_net_5_auth_4_two_guests_nat_isolation_and_forwards() {
    two_guests_nat_isolation_and_forwards(Driver::Qemu).await;
}

/// The same on the `proxmox` driver, against `pve-sim`.
#[tokio::test]
async fn iso_3_net_3_net_5_auth_4_two_guests_nat_isolation_and_forwards_on_proxmox() {
    two_guests_nat_isolation_and_forwards(Driver::Proxmox).await;
}

/// SSH-key comments as owners write them: each must reach the guest's
/// `authorized_keys` exactly and log in (the first key is the one the rest of
/// the test uses).
const KEY_COMMENTS: [&str; 4] = [
    "alice@laptop +/= two  spaces",
    "\"quoted\" it's back\\slash \\\" ends\\",
    "me@host: {evil: 1} # not a comment - [x] &a *b !t",
    "ünïcödé ☃ 鍵 ключ",
];

async fn two_guests_nat_isolation_and_forwards(driver: Driver) {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let keys: Vec<(std::path::PathBuf, String)> = KEY_COMMENTS
        .iter()
        .enumerate()
        .map(|(i, c)| ssh_keypair(&tmp.path().join(format!("k{i}")), c))
        .collect();
    let key = keys[0].0.clone();
    let public_keys: Vec<String> = keys.iter().map(|(_, p)| p.clone()).collect();

    let host = Netns::new("nethost").unwrap();
    let internet = Netns::new("netinet").unwrap();
    Netns::veth_pair(
        &host,
        "up0",
        &format!("{HOST_UPLINK}/24"),
        &internet,
        "wan0",
        &format!("{INTERNET}/24"),
    )
    .unwrap();
    // The "internet" answers with the source address it sees.
    let _inet_http = spawn_http_echo(&internet, tmp.path(), INTERNET, 8000, None);

    let opts = AgentOptions {
        network_toml: Some(format!(
            "subnet = \"{SUBNET}.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22100-22199\"\nhost_ports_for_vms = [8080, 8082]\n"
        )),
        extra_toml: "max_vcpus = 4\n".into(),
        ..AgentOptions::default()
    };
    let node = start_agent(driver, &host, &image, opts, "400-409").await;
    let agent = &node.agent;
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    // Management services on the gateway address (the agent made the bridge): one
    // port VMs may use (8080, in host_ports_for_vms) and one they may not (8081);
    // 8082 (allowed) tells the guests whose turn it is to forge addresses.
    let _host_ok = spawn_http_echo(&host, tmp.path(), GW, 8080, Some("hostok"));
    let _host_no = spawn_http_echo(&host, tmp.path(), GW, 8081, Some("hostno"));
    let turn = tmp.path().join("turn");
    std::fs::write(&turn, "nobody").unwrap();
    let turn_body = format!("$(cat {})", turn.display());
    let _turn = spawn_http_echo(&host, tmp.path(), GW, 8082, Some(&turn_body));

    let [a, b] = guests();
    let rules_before = nft_rule_count(&host);
    for (me, other) in [(&a, &b), (&b, &a)] {
        let s = spec(me, &image_name, &public_keys, Some(probe_script(me, other)));
        c.ensure_vm(me.id, &s).await.unwrap();
        c.start_vm(me.id).await.unwrap();
    }
    // Rule count: VMs and forwards added only map/set elements.
    assert_eq!(nft_rule_count(&host), rules_before);

    // Both guests answer from the host before any isolation probe runs.
    for g in [&a, &b] {
        wait_http(&host, &g.ip).await;
    }
    std::fs::write(&turn, "phase1").unwrap();
    // Phase 1 of both, then each guest's forging phase in turn.
    let mut pa = read_probe(&host, &a.ip, "phase1.txt").await;
    let mut pb = read_probe(&host, &b.ip, "phase1.txt").await;
    std::fs::write(&turn, a.id).unwrap();
    pa.extend(read_probe(&host, &a.ip, "probe.txt").await);
    std::fs::write(&turn, b.id).unwrap();
    pb.extend(read_probe(&host, &b.ip, "probe.txt").await);
    let log = agent.log();
    for (name, p) in [("A", &pa), ("B", &pb)] {
        let show = format!("guest {name}: {p:?}\nagent log:\n{log}");
        iso_3_reaches_internet_masqueraded(p, &show);
        iso_3_vm_to_vm_blocked(p, &show);
        iso_3_host_only_on_allowed_ports(p, &show);
        iso_3_forged_addresses_blocked(p, &show);
    }

    net_5_ssh_forward(&internet, &key, &a).await;
    auth_4_key_comments_land_exactly_and_every_key_logs_in(&internet, &keys, &a);
    ssh_forward_works_from_the_host_itself(&host, &key, &a);
    net_5_unforwarded_closed(&internet, &host, &a);

    // NET-5 with a changed set of forwards: one more for A, rule count unchanged.
    let mut more = spec(&a, &image_name, &public_keys, Some(probe_script(&a, &b)));
    more.port_forwards.push(PortForward {
        protocol: Protocol::Tcp,
        host_port: 22150,
        guest_port: 18789,
    });
    c.ensure_vm(a.id, &more).await.unwrap();
    assert_eq!(nft_rule_count(&host), rules_before);
    let page = internet
        .exec(&[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{HOST_UPLINK}:22150/"),
        ])
        .unwrap();
    assert!(page.contains("net-a"), "{page}");

    // Delete both; teardown leaves no clawy table or interface.
    for g in [&a, &b] {
        c.delete_vm(g.id).await.unwrap();
    }
    let ruleset = host.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(
        !ruleset.contains(&a.ip) && !ruleset.contains("22110"),
        "{ruleset}"
    );
    let out = agent.cli_in_netns(&["teardown"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = host.exec(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("clawy"), "{tables}");
    let links = host.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains(": clawy"), "{links}");
}

fn iso_3_reaches_internet_masqueraded(p: &BTreeMap<String, String>, show: &str) {
    // The internet namespace saw the host's uplink address, not the private one.
    assert_eq!(p["inet"], HOST_UPLINK, "{show}");
    assert_eq!(p["inet_restored"], HOST_UPLINK, "{show}");
}

fn iso_3_vm_to_vm_blocked(p: &BTreeMap<String, String>, show: &str) {
    // Positive controls: the same pings, to the internet, got through.
    assert_eq!(p["icmp_inet"], "open", "{show}");
    assert_eq!(p["icmp_inet_via_gw"], "open", "{show}");
    for k in [
        "icmp_other",
        "tcp_other",
        "tcp_other_via_gw",
        "icmp_other_via_gw",
        "tcp_other_forged_mac",
        "tcp_other_restored",
        "hairpin_other_ssh",
        "hairpin_other_ssh_direct",
    ] {
        assert_eq!(p[k], "closed", "{k}: {show}");
    }
}

fn iso_3_host_only_on_allowed_ports(p: &BTreeMap<String, String>, show: &str) {
    assert_eq!(p["own_ssh"], "SSH-2.0", "{show}");
    assert_eq!(p["host_allowed"], "hostok", "{show}");
    assert_eq!(p["host_blocked"], "closed", "{show}");
}

fn iso_3_forged_addresses_blocked(p: &BTreeMap<String, String>, show: &str) {
    for k in [
        "inet_forged_ip",
        "host_forged_ip",
        "inet_forged_other_ip",
        "inet_forged_mac",
        "inet_forged_both",
    ] {
        assert_eq!(p[k], "closed", "{k}: {show}");
    }
}

/// The SSH command the platform shows, `ssh -p <port> claw@<host>`, also works on
/// the host itself (`clawy up`'s `127.0.0.1`, or the host's own uplink address):
/// locally generated traffic takes the same forwards.
fn ssh_forward_works_from_the_host_itself(host: &Netns, key: &Path, a: &Guest) {
    for addr in ["127.0.0.1", HOST_UPLINK] {
        let mut args = ssh_args(key, a.ssh_port);
        args.extend([format!("claw@{addr}"), "hostname".into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = host.output(&argv).unwrap();
        assert!(
            out.status.success(),
            "ssh from the host to {addr}:{}: {}",
            a.ssh_port,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), a.id);
    }
}

async fn net_5_ssh_forward(internet: &Netns, key: &Path, a: &Guest) {
    // A real key login through the forward on the host's uplink address, as the
    // owner's user the platform's SSH command names.
    let mut args = ssh_args(key, a.ssh_port);
    args.extend([format!("claw@{HOST_UPLINK}"), "hostname".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = internet.output(&argv).unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), a.id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ssh via forward failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    auth_4_password_login_is_not_offered(internet, key, a);
}

/// AUTH-4: every registered key, whatever its comment, logs in through the
/// forward, and the guest's `authorized_keys` holds exactly the keys sent, one per
/// line, byte for byte (the seed's YAML escaping undone, nothing added).
fn auth_4_key_comments_land_exactly_and_every_key_logs_in(
    internet: &Netns,
    keys: &[(std::path::PathBuf, String)],
    a: &Guest,
) {
    let expected: String = keys.iter().map(|(_, p)| format!("{p}\n")).collect();
    for (key, public) in keys {
        let mut args = ssh_args(key, a.ssh_port);
        args.extend([
            format!("claw@{HOST_UPLINK}"),
            "cat ~/.ssh/authorized_keys".into(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = internet.output(&argv).unwrap();
        assert!(
            out.status.success(),
            "login with the key {public:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }
}

/// AUTH-4 on the stand-in guest: the SSH server offers public keys only. The
/// stand-in obeys the seed's `ssh_pwauth: false` (guest/test-image/init), so a seed
/// without it makes the server list `password` and this fails. The real image's
/// sshd is tested with that image.
fn auth_4_password_login_is_not_offered(internet: &Netns, key: &Path, a: &Guest) {
    let mut args = ssh_args(key, a.ssh_port);
    args.extend([
        "-o".into(),
        "PubkeyAuthentication=no".into(),
        format!("root@{HOST_UPLINK}"),
        "true".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = internet.output(&argv).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // The methods the server still accepts: `publickey` alone, not `password`
    // (nor keyboard-interactive).
    assert!(
        stderr.contains("Permission denied (publickey)."),
        "{stderr}"
    );
}

fn net_5_unforwarded_closed(internet: &Netns, host: &Netns, a: &Guest) {
    // Scan the host's uplink address from outside (netcat-openbsd, one process for
    // all ports): only the two SSH forwards are open.
    let out = internet
        .output(&[
            "nc",
            "-z",
            "-v",
            "-w",
            "2",
            HOST_UPLINK,
            "1-1024",
            "8000-8100",
            "18789",
            "22000-22199",
        ])
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    let open: Vec<u16> = report
        .lines()
        .filter(|l| l.ends_with("succeeded!"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
        .collect();
    assert_eq!(open, vec![22110, 22111], "{report}");
    // NET-3: even with a route to the private subnet, nothing inside is reachable
    // from outside except through the forwards.
    internet
        .exec(&[
            "ip",
            "route",
            "add",
            &format!("{SUBNET}.0/24"),
            "via",
            HOST_UPLINK,
        ])
        .unwrap();
    assert!(!port_open(internet, &a.ip, 22));
    assert!(!port_open(internet, &a.ip, 18789));
    internet
        .exec(&["ip", "route", "del", &format!("{SUBNET}.0/24")])
        .unwrap();
    // While the VM's own port is fine from the host side.
    assert!(port_open(host, &a.ip, 18789));
}
