//! The agent's VM lifecycle with a real guest on the `proxmox` driver: the
//! `clawy-agent` binary and `pve-sim` (the Proxmox VE simulator, which boots a
//! real TCG guest per VM) in one test network namespace. Create, start (PVE's
//! `tap<vmid>i0` joins the Clawy bridge and the agent registers it), healthy,
//! stop, start, reboot, delete — and delete leaves no VM config, disk, snippet,
//! tap or nftables element.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{PortForward, Protocol, VmSpec, VmState, VmStatus};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;
use clawy_testkit::pve_sim::{PveSimOptions, TestPveSim};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");

/// The simulator's binary beside this test's (`target/debug/pve-sim`), built on
/// demand: another package's binary has no `CARGO_BIN_EXE_` here.
fn pve_sim_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let bin = debug.join("pve-sim");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", "pve-sim", "--bin", "pve-sim"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

async fn wait_healthy(c: &AgentClient, id: &str) -> VmStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let vm = c.get_vm(id).await.unwrap();
        if let Some(h) = &vm.health {
            if h.tcp_ok && h.http_status == Some(200) {
                return vm;
            }
        }
        assert!(
            Instant::now() < deadline,
            "guest never became healthy: {vm:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn nft_set(ns: &Netns, set: &str) -> String {
    ns.exec(&["nft", "list", "set", "bridge", "clawy_l2", set])
        .unwrap()
}

#[tokio::test]
async fn proxmox_vm_lifecycle_with_real_guest_leaves_no_trace() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let ns = Netns::new("pvelife").unwrap();
    let inet = Netns::new("pvelifenet").unwrap();
    Netns::veth_pair(
        &ns,
        "up0",
        "203.0.113.1/24",
        &inet,
        "peer0",
        "203.0.113.2/24",
    )
    .unwrap();
    let sim = TestPveSim::start(
        &pve_sim_bin(),
        PveSimOptions {
            allowed_bridges: vec!["clawybr0".into()],
            auth_failure_delay_ms: 100,
            templates: vec![(9000, image.clone(), None)],
            ..Default::default()
        },
        Some(&ns),
    )
    .await
    .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("pve-token");
    std::fs::write(&secret, &sim.tokens[0].secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let opts = AgentOptions {
        network_toml: Some(
            "subnet = \"10.79.1.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22200-22299\"\n"
                .into(),
        ),
        driver_toml: format!(
            "[driver]\nkind = \"proxmox\"\n[driver.proxmox]\napi_url = \"https://{listen}/api2/json\"\n\
             node = \"pve\"\ntoken_id = \"{tid}\"\ntoken_secret_file = {secret:?}\nfingerprint = \"{fp}\"\n\
             vmid_range = \"300-309\"\ntemplates = {{ {img:?} = 9000 }}\nsnippets_dir = {snip:?}\n",
            listen = sim.listen,
            tid = sim.tokens[0].id,
            secret = secret.display().to_string(),
            fp = sim.fingerprint,
            img = image_name,
            snip = sim.snippets_dir().display().to_string(),
        ),
        stop_timeout_secs: 30,
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, Some(&ns))
        .await
        .unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let spec = VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image_name,
        mac: "52:54:00:79:01:0a".into(),
        private_ip: "10.79.1.10".into(),
        hostname: "pve-a".into(),
        ssh_authorized_keys: vec![],
        user_data: None,
        public_hostname: None,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: 22210,
            guest_port: 22,
        }],
    };
    let (vm, created) = c.ensure_vm("pve-a", &spec).await.unwrap();
    assert!(created, "{vm:?}");
    assert_eq!(vm.state, VmState::Defined);
    // Before start there is no tap, and nothing is registered.
    assert!(!nft_set(&ns, "vm_ports").contains("tap300i0"));

    let vm = c.start_vm("pve-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running, "{vm:?}");
    let link = ns
        .exec(&["bridge", "-d", "link", "show", "dev", "tap300i0"])
        .unwrap();
    assert!(
        link.contains("master clawybr0") && link.contains("isolated on"),
        "{link}"
    );
    assert!(nft_set(&ns, "allowed").contains("tap300i0"));
    let vm = wait_healthy(&c, "pve-a").await;
    assert_eq!(vm.tap.as_deref(), Some("tap300i0"));
    assert!(vm.memory_used_bytes.is_some());

    let vm = c.stop_vm("pve-a").await.unwrap();
    assert_eq!(vm.state, VmState::Stopped, "{vm:?}");
    let vm = c.start_vm("pve-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    // PVE made a fresh tap: registered (isolated) again.
    let link = ns
        .exec(&["bridge", "-d", "link", "show", "dev", "tap300i0"])
        .unwrap();
    assert!(link.contains("isolated on"), "{link}");
    wait_healthy(&c, "pve-a").await;
    let vm = c.reboot_vm("pve-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    wait_healthy(&c, "pve-a").await;

    c.delete_vm("pve-a").await.unwrap();
    assert!(c.get_vm("pve-a").await.is_err());
    let state = sim.state_dir();
    assert!(!state.join("qemu-server/300.conf").exists());
    assert!(!state.join("images/300").exists());
    let snippets: Vec<_> = std::fs::read_dir(sim.snippets_dir())
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(snippets.is_empty(), "{snippets:?}");
    assert!(
        !ns.output(&["ip", "link", "show", "tap300i0"])
            .unwrap()
            .status
            .success()
    );
    assert!(!nft_set(&ns, "allowed").contains("tap300i0"));
    assert!(!nft_set(&ns, "vm_ports").contains("tap300i0"));
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(!ruleset.contains("22210"), "{ruleset}");
    drop(agent);
    drop(sim);
}
