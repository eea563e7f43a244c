//! Scans from outside with the standard attack tools (installed by
//! scripts/install-deps.sh): `nmap` over every TCP port of the host's uplink address,
//! `testssl.sh` against the agent's TLS, and `ssh-audit` against a guest's SSH server
//! through its forward. docs/SECURITY-TESTS.md records the commands and results.
//!
//! Topology, all inside namespaces this test creates and deletes:
//!
//! ```text
//!  [guest 10.77.6.10]─tap─ clawybr0 ── agent (host ns, listens on 203.0.113.1:8443)
//!                                         │ up0 203.0.113.1
//!                                         │ veth
//!                               wan0 203.0.113.2 (internet ns: the scanners run here)
//! ```
//!
//! The agent listens on the uplink address here (as on a host the control plane
//! reaches over a network), so the scan sees what an attacker on that network sees.

use std::path::Path;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{PortForward, Protocol, VmSpec};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const SUBNET: &str = "10.77.6";
const HOST_UPLINK: &str = "203.0.113.1";
const INTERNET: &str = "203.0.113.2";
const AGENT_PORT: u16 = 8443;
const SSH_FORWARD: u16 = 22120;

fn tool(name: &str) {
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap()
            .status
            .success(),
        "{name} is not installed (scripts/install-deps.sh installs it)"
    );
}

/// Every open TCP port of the host's uplink address, by a full `nmap` SYN scan from
/// the internet namespace.
fn nmap_open_ports(internet: &Netns, out_dir: &Path) -> (Vec<u16>, String) {
    let xml = out_dir.join("nmap.xml");
    let out = internet
        .output(&[
            "nmap",
            "-Pn",
            "-n",
            "-sS",
            "-p-",
            "-T4",
            "--max-retries",
            "1",
            "-oX",
            &xml.display().to_string(),
            HOST_UPLINK,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "nmap failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(&xml).unwrap();
    // `<port protocol="tcp" portid="N"><state state="open" …`
    let open = xml
        .split("<port ")
        .skip(1)
        .filter(|p| p.contains("<state state=\"open\""))
        .filter_map(|p| {
            let rest = p.split("portid=\"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
        .collect();
    (open, text)
}

/// Runs testssl.sh against `target` (host:port, reached at `ip`) from `ns` and
/// returns its JSON findings.
fn testssl(ns: &Netns, target: &str, out_dir: &Path, name: &str) -> Vec<serde_json::Value> {
    let json = out_dir.join(format!("testssl-{name}.json"));
    let out = ns
        .output(&[
            "testssl",
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--protocols",
            "--std",
            "--server-preference",
            "--jsonfile",
            &json.display().to_string(),
            target,
        ])
        .unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .unwrap_or_else(|e| panic!("testssl JSON: {e}: {text}"))
}

/// ssh-audit's JSON report of the SSH server at HOST_UPLINK:port, from `ns`.
fn ssh_audit(ns: &Netns, port: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = ns
            .output(&[
                "ssh-audit",
                "-j",
                "-p",
                &port.to_string(),
                "-t",
                "10",
                HOST_UPLINK,
            ])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "ssh-audit gave no report: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn guest_spec(image: &str, key: &str) -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image.into(),
        mac: "52:54:00:77:06:0a".into(),
        private_ip: format!("{SUBNET}.10"),
        hostname: "scan-a".into(),
        ssh_authorized_keys: vec![key.into()],
        user_data: None,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: SSH_FORWARD,
            guest_port: 22,
        }],
        public_hostname: None,
    }
}

#[tokio::test]
async fn net_5_data_3_auth_4_scans_from_outside_nmap_testssl_ssh_audit() {
    for t in ["nmap", "testssl", "ssh-audit", "ssh-keygen"] {
        tool(t);
    }
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let images_dir = image.parent().unwrap().to_path_buf();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    assert!(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public_key = std::fs::read_to_string(tmp.path().join("id_ed25519.pub")).unwrap();

    let host = Netns::new("scanhost").unwrap();
    let internet = Netns::new("scaninet").unwrap();
    Netns::veth_pair(
        &host,
        "up0",
        &format!("{HOST_UPLINK}/24"),
        &internet,
        "wan0",
        &format!("{INTERNET}/24"),
    )
    .unwrap();
    let opts = AgentOptions {
        images_dir: Some(images_dir),
        network_toml: Some(format!(
            "subnet = \"{SUBNET}.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22100-22199\"\n"
        )),
        ..AgentOptions::default()
    };
    let mut agent = TestAgent::start(Path::new(BIN), opts, Some(&host))
        .await
        .unwrap();
    // Listen on the uplink address, as on a host the control plane reaches over a
    // network (the harness starts agents on loopback).
    let cfg = std::fs::read_to_string(agent.config_path()).unwrap();
    let cfg = cfg.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{HOST_UPLINK}:{AGENT_PORT}\""),
        1,
    );
    std::fs::write(agent.config_path(), cfg).unwrap();
    agent.restart(Some(&host)).await.unwrap();

    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    c.ensure_vm("scan-a", &guest_spec(&image_name, public_key.trim()))
        .await
        .unwrap();
    c.start_vm("scan-a").await.unwrap();

    // ssh-audit first: it waits for the guest's SSH server to come up behind the
    // forward, so nmap below sees the forward answer too.
    let audit = ssh_audit(&internet, SSH_FORWARD);
    std::fs::write(
        tmp.path().join("ssh-audit.json"),
        serde_json::to_string_pretty(&audit).unwrap(),
    )
    .unwrap();
    auth_4_ssh_audit_finds_no_weak_algorithm(&audit);

    // NET-5: a full TCP scan of the uplink address finds the agent and the one
    // forward, nothing else.
    let (open, text) = nmap_open_ports(&internet, tmp.path());
    assert_eq!(open, vec![AGENT_PORT, SSH_FORWARD], "nmap:\n{text}");

    // DATA-3: the agent's TLS, as testssl.sh sees it from outside.
    let findings = testssl(
        &internet,
        &format!("{HOST_UPLINK}:{AGENT_PORT}"),
        tmp.path(),
        "agent",
    );
    clawy_testkit::scans::assert_tls_strong(&findings, "agent");

    // A fresh client: the agent closes idle connections (its header-read timeout)
    // while the scans run, so the first client's pooled connection is gone.
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    // ...and it still answers after the scans.
    c.delete_vm("scan-a").await.unwrap();
}

/// AUTH-4: the stand-in guest's SSH server (dropbear) offers no algorithm ssh-audit
/// rates as a failure: key exchange, host key, ciphers, MACs. (The real image's
/// OpenSSH is audited by the same function from the image's boot test when a real
/// guest is reachable; see docs/SECURITY-TESTS.md.)
pub(crate) fn auth_4_ssh_audit_finds_no_weak_algorithm(audit: &serde_json::Value) {
    let mut failures = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for alg in audit[section].as_array().into_iter().flatten() {
            if alg["notes"]["fail"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                failures.push(format!(
                    "{section} {}: {}",
                    alg["algorithm"], alg["notes"]["fail"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "ssh-audit failures: {failures:#?}\nreport: {audit}"
    );
}
