//! A real TCG guest through the real agent, inside a throwaway network namespace,
//! on both drivers (one body): `qemu`, and `proxmox` against `pve-sim` (the
//! Proxmox VE simulator, which boots a real TCG guest per VM; PVE's
//! `tap<vmid>i0` joins the agent's bridge). Create/start → running with a
//! healthy gateway port, forwards changed live, graceful stop, start, reboot,
//! agent restart re-adopts the VM, and delete leaves nothing behind (ISO-1,
//! ISO-4): no process, disk, seed or snippet, VM config, tap or nftables
//! element. On `qemu` also: CPU pinning, QEMU's argv, teardown refusal and a
//! killed QEMU showing as crashed. A guest that powers itself off shows as
//! stopped, not crashed.

use std::path::Path;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{PortForward, Protocol, VmSpec, VmState, VmStatus};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;

use crate::drivers::{Driver, start_agent};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const GRACEFUL_STOP_TIMEOUT_SECS: u64 = 60;
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6 test@clawy";

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

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn nft_set(ns: &Netns, set: &str) -> String {
    ns.exec(&["nft", "list", "set", "bridge", "clawy_l2", set])
        .unwrap()
}

#[tokio::test]
async fn iso_1_iso_4_vm_lifecycle_with_real_guest() {
    vm_lifecycle_with_real_guest(Driver::Qemu).await;
}

/// The same on the `proxmox` driver, against `pve-sim`.
#[tokio::test]
async fn iso_1_vm_lifecycle_with_real_guest_on_proxmox() {
    vm_lifecycle_with_real_guest(Driver::Proxmox).await;
}

/// ACCESS-2 / ISO-2 on the real QEMU process: pinned to the CPUs the agent
/// picked, no guest-agent channel, serial console, extra monitor or balloon.
fn qemu_process_is_pinned_and_bare(agent: &TestAgent, pid: u32) {
    let pinned = std::fs::read_to_string(agent.state_dir().join("vms/life-a/cpus")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(allowed, pinned.trim());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    for banned in [
        "-chardev",
        "virtio-serial",
        "virtserialport",
        "qemu-ga",
        "-serial",
        "-monitor",
        "-mon ",
        "balloon",
        "-vnc",
        "-spice",
    ] {
        assert!(
            !cmdline.contains(banned),
            "QEMU runs with `{banned}`: {cmdline}"
        );
    }
    assert!(cmdline.contains("-nodefaults"), "{cmdline}");
}

async fn vm_lifecycle_with_real_guest(driver: Driver) {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let base_mtime = std::fs::metadata(&image).unwrap().modified().unwrap();

    let ns = Netns::new("life").unwrap();
    let inet = Netns::new("lifenet").unwrap();
    Netns::veth_pair(
        &ns,
        "up0",
        "203.0.113.1/24",
        &inet,
        "peer0",
        "203.0.113.2/24",
    )
    .unwrap();
    let opts = AgentOptions {
        network_toml: Some(
            "subnet = \"10.77.1.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22000-22099\"\n"
                .into(),
        ),
        // Long on purpose: the stop below must finish by the guest powering off on
        // the ACPI request, far sooner than this.
        stop_timeout_secs: GRACEFUL_STOP_TIMEOUT_SECS,
        driver_toml: clawy_testkit::agent::qemu_driver_toml("pin_cpus = true"),
        ..AgentOptions::default()
    };
    let mut node = start_agent(driver, &ns, &image, opts, "300-309").await;
    let c = AgentClient::new(
        &node.agent.base_url,
        &node.agent.fingerprint,
        &node.agent.token,
    )
    .unwrap();

    let spec = VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image_name,
        mac: "52:54:00:77:01:0a".into(),
        private_ip: "10.77.1.10".into(),
        hostname: "life-a".into(),
        ssh_authorized_keys: vec![KEY.into()],
        user_data: None,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: 22010,
            guest_port: 22,
        }],
        public_hostname: None,
    };
    let (vm, created) = c.ensure_vm("life-a", &spec).await.unwrap();
    assert!(created);
    assert_eq!(vm.state, VmState::Defined);
    if driver == Driver::Proxmox {
        // Before start PVE has made no tap, and nothing is registered.
        assert!(!nft_set(&ns, "vm_ports").contains("tap300i0"));
    }

    // Start → running, gateway port answers HTTP from the host side.
    let vm = c.start_vm("life-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let vm = wait_healthy(&c, "life-a").await;
    let tap = vm.tap.clone().unwrap();
    assert!(vm.memory_used_bytes.unwrap() > 0, "{vm:?}");
    if driver == Driver::Qemu {
        assert!(vm.disk_used_bytes.unwrap() > 0);
        assert!(vm.net_rx_bytes.is_some() && vm.net_tx_bytes.is_some());
        assert_eq!(vm.disk_allocated_bytes, 1 << 30);
    } else {
        // PVE's tap, joined to the Clawy bridge as an isolated port the agent
        // registered.
        assert_eq!(tap, "tap300i0");
        let link = ns
            .exec(&["bridge", "-d", "link", "show", "dev", &tap])
            .unwrap();
        assert!(
            link.contains("master clawybr0") && link.contains("isolated on"),
            "{link}"
        );
        assert!(nft_set(&ns, "allowed").contains(&tap));
    }
    let probe = c.probe_vm("life-a").await.unwrap();
    assert!(probe.tcp_ok);
    // Starting a running VM changes nothing.
    let qemu_pid = |a: &TestAgent| match driver {
        Driver::Qemu => a.qemu_pids()[0].1,
        Driver::Proxmox => 0,
    };
    let pid = qemu_pid(&node.agent);
    if driver == Driver::Qemu {
        qemu_process_is_pinned_and_bare(&node.agent, pid);
    }
    let vm = c.start_vm("life-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(qemu_pid(&node.agent), pid);

    // NET-5: port forwards change live; anything else needs a stopped VM.
    let mut more = spec.clone();
    more.port_forwards.push(PortForward {
        protocol: Protocol::Tcp,
        host_port: 22011,
        guest_port: 18789,
    });
    let (vm, created) = c.ensure_vm("life-a", &more).await.unwrap();
    assert!(!created);
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(qemu_pid(&node.agent), pid);
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(ruleset.contains("22011"), "{ruleset}");
    let mut bigger = more.clone();
    bigger.memory_mib = 320;
    match c.ensure_vm("life-a", &bigger).await {
        Err(e) => assert_eq!(e.status(), Some(409), "{e}"),
        Ok(v) => panic!("memory changed under a running VM: {v:?}"),
    }
    let (_, _) = c.ensure_vm("life-a", &spec).await.unwrap();
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(!ruleset.contains("22011"), "{ruleset}");

    if driver == Driver::Qemu {
        // Teardown refuses while a VM runs (it stops nothing silently).
        let out = node.agent.cli_in_netns(&["teardown"]).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("life-a"));
        assert!(pid_alive(pid));
    }

    // ISO-1 graceful stop: the ACPI power button powers the booted guest off (its
    // acpid runs `poweroff`), well within the stop timeout and without forcing.
    let asked = Instant::now();
    let vm = c.stop_vm("life-a").await.unwrap();
    let took = asked.elapsed();
    assert_eq!(vm.state, VmState::Stopped);
    // Within the stop timeout (a forced stop would take all of it). No tighter
    // wall-clock band: under TCG on a loaded machine the guest's poweroff time
    // varies widely.
    assert!(
        took < Duration::from_secs(GRACEFUL_STOP_TIMEOUT_SECS),
        "graceful stop took {took:?}"
    );
    if driver == Driver::Qemu {
        assert!(!pid_alive(pid));
        assert!(node.agent.qemu_pids().is_empty());
        // The log lines say which path was taken.
        let log = node.agent.log();
        assert!(
            log.contains("VM stopped gracefully"),
            "no graceful stop in the agent log:\n{log}"
        );
        assert!(
            !log.contains("forcing it off"),
            "the agent forced the stop:\n{log}"
        );
    }
    c.stop_vm("life-a").await.unwrap();

    // Start again, then reboot: same process, guest comes back.
    c.start_vm("life-a").await.unwrap();
    wait_healthy(&c, "life-a").await;
    if driver == Driver::Proxmox {
        // PVE made a fresh tap: registered (isolated) again.
        let link = ns
            .exec(&["bridge", "-d", "link", "show", "dev", &tap])
            .unwrap();
        assert!(link.contains("isolated on"), "{link}");
    }
    let pid = qemu_pid(&node.agent);
    let vm = c.reboot_vm("life-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    wait_healthy(&c, "life-a").await;
    assert_eq!(qemu_pid(&node.agent), pid);

    // Kill the agent: the VM keeps running; a new agent re-adopts it (and
    // re-registers its port: the health probe crosses the bridge).
    node.agent.kill_agent();
    if driver == Driver::Qemu {
        assert!(pid_alive(pid), "VM died with the agent");
    }
    node.agent.restart(Some(&ns)).await.unwrap();
    let c = AgentClient::new(
        &node.agent.base_url,
        &node.agent.fingerprint,
        &node.agent.token,
    )
    .unwrap();
    let vm = wait_healthy(&c, "life-a").await;
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(qemu_pid(&node.agent), pid);

    if driver == Driver::Qemu {
        // kill -9 QEMU → crashed, not running; start recovers it.
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let vm = c.get_vm("life-a").await.unwrap();
            if vm.state == VmState::Crashed {
                assert!(vm.health.is_none());
                break;
            }
            assert!(Instant::now() < deadline, "killed VM shows {:?}", vm.state);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.start_vm("life-a").await.unwrap();
        wait_healthy(&c, "life-a").await;
    }
    let pid = qemu_pid(&node.agent);

    // Delete: no process, no disk, no seed, no state, no tap, no nftables element.
    let tap = c.get_vm("life-a").await.unwrap().tap.unwrap();
    assert!(
        ns.output(&["ip", "link", "show", &tap])
            .unwrap()
            .status
            .success()
    );
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(ruleset.contains("10.77.1.10"), "{ruleset}");
    c.delete_vm("life-a").await.unwrap();
    assert!(c.get_vm("life-a").await.is_err());
    assert!(
        !ns.output(&["ip", "link", "show", &tap])
            .unwrap()
            .status
            .success(),
        "tap left behind"
    );
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(
        !ruleset.contains("10.77.1.10"),
        "nftables element left behind: {ruleset}"
    );
    assert!(
        !ruleset.contains("22010"),
        "port forward left behind: {ruleset}"
    );
    assert!(!nft_set(&ns, "allowed").contains(&tap));
    assert!(!nft_set(&ns, "vm_ports").contains(&tap));
    assert!(c.list_vms().await.unwrap().vms.is_empty());
    assert!(!node.agent.state_dir().join("vms/life-a").exists());
    match &node.sim {
        None => assert!(!pid_alive(pid)),
        Some(sim) => {
            // PVE side: no VM config, no disk, no cicustom snippet.
            let state = sim.state_dir();
            assert!(!state.join("qemu-server/300.conf").exists());
            assert!(!state.join("images/300").exists());
            let snippets: Vec<_> = std::fs::read_dir(sim.snippets_dir())
                .map(|d| d.flatten().collect())
                .unwrap_or_default();
            assert!(snippets.is_empty(), "{snippets:?}");
        }
    }
    // ISO-4: the shared base image (the template's disk on PVE) was never written.
    assert_eq!(
        std::fs::metadata(&image).unwrap().modified().unwrap(),
        base_mtime
    );

    // Teardown removes the agent's bridge and tables (and refuses nothing: no VMs).
    node.agent.kill_agent();
    let out = node.agent.cli_in_netns(&["teardown"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ruleset = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(!ruleset.contains("clawy"), "{ruleset}");
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    // Interface names only (the veth's peer namespace is called clawy-t-…).
    assert!(!links.contains(": clawy"), "{links}");
}

/// ISO-1: a guest that powers itself off (no stop request) ends as `stopped`, not
/// `crashed`: QEMU runs with `-no-shutdown`, so the agent sees the guest's
/// power-off, records it and ends QEMU. No network needed: the guest's user-data
/// script powers it off right after boot.
#[tokio::test]
async fn iso_1_guest_powering_itself_off_shows_stopped_not_crashed() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let opts = AgentOptions {
        images_dir: Some(image.parent().unwrap().to_path_buf()),
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, None).await.unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let spec = VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image.file_name().unwrap().to_str().unwrap().to_string(),
        mac: "52:54:00:77:02:0a".into(),
        private_ip: "10.77.2.10".into(),
        hostname: "off-a".into(),
        ssh_authorized_keys: vec![KEY.into()],
        user_data: Some(clawy_testkit::guest::probe_user_data("sync; poweroff -f")),
        port_forwards: vec![],
        public_hostname: None,
    };
    c.ensure_vm("off-a", &spec).await.unwrap();
    let vm = c.start_vm("off-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let vm = c.get_vm("off-a").await.unwrap();
        assert_ne!(vm.state, VmState::Crashed, "{vm:?}");
        if vm.state == VmState::Stopped {
            break;
        }
        assert!(Instant::now() < deadline, "guest never powered off: {vm:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(agent.qemu_pids().is_empty(), "QEMU left running");
    assert!(
        agent.log().contains("guest powered itself off"),
        "{}",
        agent.log()
    );
    // Stays stopped (not re-read as a crash) and starts again.
    assert_eq!(c.get_vm("off-a").await.unwrap().state, VmState::Stopped);
    let vm = c.start_vm("off-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    c.delete_vm("off-a").await.unwrap();
    assert!(agent.qemu_pids().is_empty());
}
