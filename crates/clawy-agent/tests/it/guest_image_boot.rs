//! The real guest image (Debian 12 + OpenClaw, `scripts/build-guest-image.sh`) booted
//! under TCG through the real agent and its qemu driver, with the agent's own seed,
//! inside namespaces this test creates. One boot (2–6 minutes on a loaded 2-core
//! machine) proves many things:
//!
//! - AUTH-4: the SSH command the platform displays (`ssh -p <port> claw@<host>`)
//!   logs in with the owner's key, from the "internet" and from the host itself;
//!   a password login is refused (the server offers `publickey` only) and root is
//!   refused even with a valid key in its `authorized_keys`.
//! - NET-1: from the internet namespace a full nmap scan of the host's uplink
//!   finds only the SSH forward; from the bridge only 22 and the gateway port
//!   answer, the gateway port only from the edge's address (the host's bridge
//!   address), not from another address on the same bridge; a listener the owner
//!   starts on another port is unreachable (UFW's default deny).
//! - NET-2: after repeated failed logins from one address that address is banned
//!   (fail2ban's `sshd` jail lists it, its connections fail) while another address
//!   still logs in.
//!
//! The OpenClaw gateway cannot get ready under TCG (docs/BENCHMARKS.md): its unit
//! state is read and reported as it is, never asserted as ready; the gateway itself
//! is tested on the host (`openclaw_gateway_host.rs`). While the firewall is
//! probed, the gateway unit is stopped over SSH so its Node start-up stops taking
//! the guest's CPU (on TCG the scans otherwise crawl), and a plain listener stands
//! on the gateway port: UFW decides by port and source address, not by program.
//!
//! Skips (passes with a message on stderr) only when the image cannot be built,
//! e.g. no Debian mirror; everything after the build must work.
//!
//! ```text
//!  [guest 10.77.8.10]─tap─ clawybr0 10.77.8.1 (edge address) + 10.77.8.250 (another
//!                          address on the bridge) ── agent ns ── up0 203.0.113.1
//!                                                                  │ veth
//!             internet ns: peer0 203.0.113.2 (attacker), .3 (other user), .4 (auth probes)
//! ```

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{GATEWAY_PORT, GUEST_USER, GuestSecrets, PortForward, Protocol, VmSpec};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const UPLINK: &str = "203.0.113.1";
const ATTACKER: &str = "203.0.113.2";
const OTHER_USER: &str = "203.0.113.3";
const AUTH_PROBE: &str = "203.0.113.4";
const GUEST_IP: &str = "10.77.8.10";
const EDGE: &str = "10.77.8.1";
const NOT_EDGE: &str = "10.77.8.250";
const SSH_FORWARD: u16 = 22810;
/// A port the owner listens on that UFW must keep closed.
const OWNER_PORT: u16 = 8080;
/// First boot under TCG on a loaded machine took 87–147 s to SSH (BENCHMARKS.md);
/// this is the ceiling, not the expectation.
const BOOT_TO_SSH: Duration = Duration::from_secs(900);

fn ssh_keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "owner@clawy", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    (key, public.trim().to_string())
}

/// The SSH command the platform displays, exactly as `clawy-server` formats it
/// (`ssh -p <port> claw@<host>`), split into argv.
fn displayed_command(port: u16, host: &str) -> Vec<String> {
    let shown = format!("ssh -p {port} {GUEST_USER}@{host}");
    shown.split(' ').map(str::to_string).collect()
}

/// Options every SSH client call here adds: the test's key, no host-key prompt (a
/// fresh VM), bounded waits, never a prompt.
fn client_opts(key: &Path, source: &str) -> Vec<String> {
    [
        "-i",
        &key.display().to_string(),
        "-b",
        source,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "BatchMode=yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the displayed command (plus the client options and `extra` before the
/// destination) with `remote` as the remote command, inside `ns`.
fn ssh_in(
    ns: &Netns,
    key: &Path,
    source: &str,
    extra: &[&str],
    user_host: Option<&str>,
    remote: &str,
) -> Output {
    let mut argv: Vec<String> = vec!["timeout".into(), "120".into()];
    let shown = displayed_command(SSH_FORWARD, UPLINK);
    argv.push(shown[0].clone()); // ssh
    argv.extend(client_opts(key, source));
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(shown[1..3].iter().cloned()); // -p <port>
    argv.push(user_host.map_or_else(|| shown[3].clone(), str::to_string));
    argv.push(remote.into());
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    ns.output(&refs).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `remote` as claw from `source`; panics unless it exits 0; returns stdout.
fn claw(ns: &Netns, key: &Path, source: &str, remote: &str) -> String {
    let o = ssh_in(ns, key, source, &[], None, remote);
    assert!(o.status.success(), "ssh claw {remote:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Open TCP ports of `target` per nmap's grepable output (`-oG -`).
fn nmap_open(ns: &Netns, args: &[&str], target: &str) -> Vec<u16> {
    let mut argv = vec!["nmap", "-Pn", "-n", "-sS", "-oG", "-"];
    argv.extend_from_slice(args);
    argv.push(target);
    let o = ns.output(&argv).unwrap();
    assert!(o.status.success(), "nmap {argv:?}: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let ports = out
        .lines()
        .find_map(|l| l.split_once("Ports: ").map(|(_, p)| p.to_string()))
        .unwrap_or_default();
    let mut open: Vec<u16> = ports
        .split(", ")
        .filter_map(|p| {
            let f: Vec<&str> = p.split('/').collect();
            (f.len() > 2 && f[1] == "open").then(|| f[0].trim().parse().unwrap())
        })
        .collect();
    open.sort_unstable();
    eprintln!("nmap {args:?} {target}: open {open:?}\n{out}");
    open
}

/// Whether a TCP connection from `source` to `GUEST_IP:port` is accepted.
fn tcp_connects(ns: &Netns, source: &str, port: u16) -> bool {
    ns.output(&[
        "nc",
        "-z",
        "-n",
        "-w",
        "8",
        "-s",
        source,
        GUEST_IP,
        &port.to_string(),
    ])
    .unwrap()
    .status
    .success()
}

/// QEMU's resident memory split into the guest RAM's mapping (the largest anonymous
/// mapping, at least the guest's size) and the rest: what a VM costs the host
/// beside the RAM it gives the guest.
fn qemu_memory(pid: u32, guest_mib: u64) -> String {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return format!("no smaps for QEMU {pid}");
    };
    // (size kB, rss kB, anonymous) per mapping.
    let mut maps: Vec<(u64, u64, bool)> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            maps.push((0, 0, line.split_whitespace().nth(5).is_none()));
        } else if let (Some(m), Some(v)) = (maps.last_mut(), f.next()) {
            let v: u64 = v.parse().unwrap_or(0);
            match first {
                "Size:" => m.0 = v,
                "Rss:" => m.1 = v,
                _ => {}
            }
        }
    }
    let total: u64 = maps.iter().map(|m| m.1).sum();
    let ram = maps
        .iter()
        .filter(|m| m.2 && m.0 >= guest_mib * 1024)
        .max_by_key(|m| m.0)
        .copied()
        .unwrap_or_default();
    format!(
        "QEMU RSS {} MiB = guest RAM touched {} MiB (mapping of {} MiB) + QEMU's own {} MiB",
        total / 1024,
        ram.1 / 1024,
        ram.0 / 1024,
        (total - ram.1) / 1024
    )
}

#[tokio::test]
async fn auth_4_net_1_net_2_real_guest_image_ssh_ufw_fail2ban() {
    let image = match clawy_testkit::openclaw_image::openclaw_image() {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "SKIPPED auth_4_net_1_net_2_real_guest_image_ssh_ufw_fail2ban: the real guest image \
                 could not be built (scripts/build-guest-image.sh needs root, a Debian \
                 mirror and the npm registry): {e:#}"
            );
            return;
        }
    };
    for tool in ["nmap", "sshpass", "ssh", "nc"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(found, "{tool} is missing: run scripts/install-deps.sh");
    }
    let images_dir = image.qcow2.parent().unwrap().to_path_buf();
    let image_name = image
        .qcow2
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = ssh_keypair(dir.path());

    let host = Netns::new("gboot").unwrap();
    let inet = Netns::new("gbootnet").unwrap();
    Netns::veth_pair(
        &host,
        "up0",
        &format!("{UPLINK}/24"),
        &inet,
        "peer0",
        &format!("{ATTACKER}/24"),
    )
    .unwrap();
    for a in [OTHER_USER, AUTH_PROBE] {
        inet.exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", "peer0"])
            .unwrap();
    }
    let opts = AgentOptions {
        images_dir: Some(images_dir),
        network_toml: Some(
            "subnet = \"10.77.8.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22800-22899\"\n"
                .into(),
        ),
        // Both host cores for the guest's two vCPUs (the default keeps one back).
        extra_toml: "max_vcpus = 2\n".into(),
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, Some(&host))
        .await
        .unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let spec = VmSpec {
        vcpus: 2,
        memory_mib: 2048,
        disk_gib: 4,
        base_image: image_name.clone(),
        mac: "52:54:00:77:08:0a".into(),
        private_ip: GUEST_IP.into(),
        hostname: "gboot".into(),
        ssh_authorized_keys: vec![public],
        user_data: None,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: SSH_FORWARD,
            guest_port: 22,
        }],
        public_hostname: None,
    };
    let secrets = GuestSecrets {
        gateway_token: "gw_0123456789abcdefghijklmnopqrstuvwxyzAB".into(),
        telegram_bot_token: None,
        model_key: None,
    };
    let (_, created) = c
        .ensure_vm_with_secrets("gboot", &spec, Some(&secrets))
        .await
        .unwrap();
    assert!(created);
    let t0 = Instant::now();
    c.start_vm("gboot").await.unwrap();

    // --- AUTH-4: the displayed command logs in with the key. Until sshd is up the
    // forward gets refused/reset connections (no authentication, so nothing for
    // fail2ban to count).
    let whoami = loop {
        let o = ssh_in(&inet, &key, ATTACKER, &[], None, "id -un");
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).trim().to_string();
        }
        assert!(
            t0.elapsed() < BOOT_TO_SSH,
            "no SSH login within {BOOT_TO_SSH:?}: {}\nagent log:\n{}",
            text(&o),
            agent.log()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let boot_to_ssh = t0.elapsed();
    eprintln!("real guest: start → SSH login as claw in {boot_to_ssh:.1?}");
    assert_eq!(whoami, GUEST_USER);
    // The same command works on the host itself (local DNAT of the forward).
    let o = ssh_in(&host, &key, EDGE, &[], None, "hostname");
    assert!(o.status.success(), "from the host: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "gboot");

    // First boot finished (runcmd opened UFW to the edge): cloud-init says done.
    let status = claw(
        &inet,
        &key,
        ATTACKER,
        "timeout 420 cloud-init status --wait >/dev/null; cloud-init status --long",
    );
    assert!(status.contains("status: done"), "{status}");
    eprintln!(
        "real guest: cloud-init done {:.1?} after start",
        t0.elapsed()
    );
    let units = claw(
        &inet,
        &key,
        ATTACKER,
        "systemctl is-active ssh ufw fail2ban; cat /etc/clawy/image",
    );
    assert_eq!(
        units.lines().collect::<Vec<_>>(),
        [
            "active",
            "active",
            "active",
            image_name.trim_end_matches(".qcow2")
        ],
        "{units}"
    );
    // For docs/BENCHMARKS.md: systemd's view of this boot and QEMU's memory.
    let analyze = claw(
        &inet,
        &key,
        ATTACKER,
        "systemd-analyze; systemd-analyze blame --no-pager | head -n 12",
    );
    eprintln!("real guest: systemd-analyze:\n{analyze}");
    if let Some((_, pid)) = agent.qemu_pids().first() {
        eprintln!("real guest: {}", qemu_memory(*pid, spec.memory_mib));
    }
    // The gateway as it is under TCG, reported, not asserted ready.
    let gw = claw(
        &inet,
        &key,
        ATTACKER,
        "systemctl show -p ActiveState -p SubState -p NRestarts -p ExecMainStatus openclaw-gateway; \
         sudo -n test -f /var/lib/openclaw/.openclaw/openclaw.json && echo config=present",
    );
    eprintln!("real guest: openclaw-gateway under TCG: {gw}");
    assert!(
        gw.contains("config=present"),
        "the seed wrote no config: {gw}"
    );

    // --- AUTH-4 negatives, from their own address (fail2ban must not count them
    // against the attacker's address below).
    // Password: the server offers no password method, so the client has none to try.
    let o = ssh_in(&inet, &key, AUTH_PROBE, &[], None, "true");
    assert!(
        o.status.success(),
        "key login from the probe address: {}",
        text(&o)
    );
    let pw_argv = ["sshpass", "-p", "claw-password-guess"];
    let mut argv: Vec<String> = pw_argv.iter().map(|s| s.to_string()).collect();
    argv.extend(["timeout".into(), "60".into()]);
    let shown = displayed_command(SSH_FORWARD, UPLINK);
    argv.push(shown[0].clone());
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=20",
        "PreferredAuthentications=password,keyboard-interactive",
        "PubkeyAuthentication=no",
        "NumberOfPasswordPrompts=1",
    ] {
        argv.push("-o".into());
        argv.push(o.into());
    }
    argv.extend(["-b".into(), AUTH_PROBE.into()]);
    argv.extend(shown[1..].iter().cloned());
    argv.push("true".into());
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let o = inet.output(&refs).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "password login worked: {}", text(&o));
    assert!(
        err.contains("Permission denied (publickey)"),
        "the server must offer publickey only: {}",
        text(&o)
    );
    // Root: even with the owner's key in root's authorized_keys, sshd refuses it
    // (PermitRootLogin no), while the same key still works for claw.
    claw(
        &inet,
        &key,
        AUTH_PROBE,
        "sudo -n install -d -m 700 /root/.ssh && sudo -n cp ~/.ssh/authorized_keys /root/.ssh/authorized_keys",
    );
    let o = ssh_in(
        &inet,
        &key,
        AUTH_PROBE,
        &[],
        Some("root@203.0.113.1"),
        "id -un",
    );
    assert!(!o.status.success(), "root logged in: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );
    claw(&inet, &key, AUTH_PROBE, "sudo -n rm -rf /root/.ssh");

    // --- NET-1. Stop the gateway's crash-looping start-ups (CPU), put a plain
    // listener on its port and one on a port of the owner's choosing.
    let listen = |port: u16| {
        format!(
            "setsid -f python3 -c 'import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((\"0.0.0.0\",{port}))\ns.listen(16)\nwhile True:\n  c,_=s.accept(); c.close()' </dev/null >/dev/null 2>&1"
        )
    };
    claw(
        &inet,
        &key,
        ATTACKER,
        &format!(
            "sudo -n systemctl stop openclaw-gateway && sudo -n {} && {}",
            listen(GATEWAY_PORT),
            listen(OWNER_PORT)
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ss = claw(&inet, &key, ATTACKER, "ss -ltnH");
        if ss.contains(&format!("0.0.0.0:{GATEWAY_PORT} "))
            && ss.contains(&format!("0.0.0.0:{OWNER_PORT} "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "listeners did not start: {ss}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The owner's listener answers inside the guest (so "unreachable" below is UFW).
    claw(
        &inet,
        &key,
        ATTACKER,
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"{GUEST_IP}\",{OWNER_PORT}),5)'"
        ),
    );

    // From the internet: only the SSH forward, on every port of the host's uplink.
    let open = nmap_open(&inet, &["-p-", "-T4", "--max-retries", "2"], UPLINK);
    assert_eq!(
        open,
        [SSH_FORWARD],
        "internet sees more than the SSH forward"
    );
    // From the bridge, as the edge: only SSH and the gateway port.
    let open = nmap_open(
        &host,
        &["-p-", "-T4", "--min-rate", "2000", "--max-retries", "3"],
        GUEST_IP,
    );
    assert_eq!(open, [22, GATEWAY_PORT], "the edge sees other ports");
    // From another address on the same bridge: SSH yes, the gateway port no.
    host.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{NOT_EDGE}/24"),
        "dev",
        "clawybr0",
    ])
    .unwrap();
    assert!(tcp_connects(&host, NOT_EDGE, 22), "SSH from {NOT_EDGE}");
    assert!(
        !tcp_connects(&host, NOT_EDGE, GATEWAY_PORT),
        "the gateway port answered a non-edge address"
    );
    assert!(!tcp_connects(&host, NOT_EDGE, OWNER_PORT));
    assert!(
        tcp_connects(&host, EDGE, GATEWAY_PORT),
        "the edge lost the gateway port"
    );
    assert!(
        !tcp_connects(&host, EDGE, OWNER_PORT),
        "the owner's port is open"
    );
    let rules = claw(&inet, &key, ATTACKER, "sudo -n ufw status verbose");
    eprintln!("real guest: {rules}");
    assert!(rules.contains("Default: deny (incoming)"), "{rules}");

    // --- NET-2: invalid-user logins from the attacker's address until fail2ban
    // bans it; the other user's address still gets in.
    let mut banned = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut attempts = 0;
    while Instant::now() < deadline {
        if attempts < 12 {
            let o = ssh_in(
                &inet,
                &key,
                ATTACKER,
                &[],
                Some("intruder@203.0.113.1"),
                "true",
            );
            assert!(!o.status.success());
            attempts += 1;
        } else {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let st = claw(
            &inet,
            &key,
            OTHER_USER,
            "sudo -n fail2ban-client status sshd",
        );
        if st.contains(ATTACKER) {
            eprintln!("real guest: banned after {attempts} failed logins:\n{st}");
            banned = true;
            break;
        }
    }
    assert!(banned, "fail2ban never banned {ATTACKER}");
    // The ban holds: the attacker cannot even log in with the right key.
    let o = ssh_in(
        &inet,
        &key,
        ATTACKER,
        &["-o", "ConnectTimeout=10"],
        None,
        "true",
    );
    assert!(
        !o.status.success(),
        "banned address logged in: {}",
        text(&o)
    );
    // Another address still gets in.
    assert_eq!(claw(&inet, &key, OTHER_USER, "id -un").trim(), GUEST_USER);
    eprintln!("real guest: whole test {:.1?}", t0.elapsed());
    drop(agent);
}
