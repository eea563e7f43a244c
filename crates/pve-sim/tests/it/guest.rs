//! A real guest on a simulated node: the `pve-sim` binary in a test network
//! namespace with a bridge; a linked clone of a template made from the test guest
//! image, configured with PVE's native cloud-init keys, started, reached over SSH
//! with keys whose comments carry spaces, `+`, `/`, `=`, quotes and non-ASCII;
//! then shut down (ACPI) and deleted without a trace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clawy_testkit::netns::Netns;
use clawy_testkit::pve_sim::{PveSimOptions, TestPveSim};
use serde_json::Value;

use super::pve_urlencode;

struct Api {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(&url).query(form),
            "DELETE" => self.client.delete(&url).query(form),
            "PUT" => self.client.put(&url).form(form),
            _ => self.client.post(&url).form(form),
        };
        let r = req
            .header("Authorization", &self.auth)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Value {
        let (s, v) = self.call(method, path, form).await;
        assert_eq!(s, 200, "{method} {path}: {v}");
        v["data"].clone()
    }

    async fn task(&self, method: &str, path: &str, form: &[(&str, &str)]) -> String {
        let upid = self.ok(method, path, form).await;
        let upid = upid.as_str().unwrap().to_string();
        let p = format!(
            "/nodes/pve/tasks/{}/status",
            super::client::path_escape(&upid)
        );
        for _ in 0..1800 {
            let st = self.ok("GET", &p, &[]).await;
            if st["status"] == "stopped" {
                return st["exitstatus"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {upid} did not end");
    }
}

fn keygen(dir: &Path, name: &str, comment: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim_end().to_string())
}

fn ssh(ns: &Netns, key: &Path, cmd: &str) -> std::process::Output {
    ns.output(&[
        "ssh",
        "-i",
        key.to_str().unwrap(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "LogLevel=ERROR",
        "root@10.77.0.10",
        cmd,
    ])
    .unwrap()
}

fn iso_file(volume: &Path, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("seed.iso");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(volume)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&raw)
        .args(["-x", &format!("/{name}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn guest_boots_on_bridge_with_native_cloudinit_keys_and_leaves_no_trace() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let ns = Netns::new("pvesim").unwrap();
    ns.exec(&["ip", "link", "add", "vmbr0", "type", "bridge"])
        .unwrap();
    ns.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "vmbr0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "vmbr0", "up"]).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pve-sim"));
    let opts = PveSimOptions {
        templates: vec![(9000, image, Some("vmbr0".into()))],
        ..Default::default()
    };
    let sim = TestPveSim::start(&bin, opts, Some(&ns)).await.unwrap();
    let api = Api {
        client: sim.client().unwrap(),
        base: sim.base_url.clone(),
        auth: sim.tokens[0].header(),
    };
    let keys = tempfile::tempdir().unwrap();
    let (k1, pub1) = keygen(keys.path(), "k1", "alice laptop + work/home = main");
    let (k2, pub2) = keygen(keys.path(), "k2", "\"quoted\" 'single' ü € naïve");

    let st = api
        .task(
            "POST",
            "/nodes/pve/qemu/9000/clone",
            &[("newid", "101"), ("name", "claw-guest")],
        )
        .await;
    assert_eq!(st, "OK");
    let sshkeys = pve_urlencode(&format!("{pub1}\n{pub2}\n"));
    api.ok(
        "PUT",
        "/nodes/pve/qemu/101/config",
        &[
            ("ciuser", "root"),
            ("sshkeys", &sshkeys),
            ("ipconfig0", "ip=10.77.0.10/24,gw=10.77.0.1"),
            ("nameserver", "10.77.0.1"),
            ("memory", "256"),
            ("balloon", "0"),
            ("agent", "0"),
            ("tags", "clawy;inst-guest"),
        ],
    )
    .await;
    let c = api.ok("GET", "/nodes/pve/qemu/101/config", &[]).await;
    // GET returns the (once) encoded value, as PVE stores it.
    assert_eq!(c["sshkeys"], sshkeys.as_str());
    let mac = c["net0"]
        .as_str()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("virtio=")
        .to_string();
    assert!(mac.starts_with("BC:24:11:"), "{mac}");
    assert_eq!(
        api.task(
            "PUT",
            "/nodes/pve/qemu/101/resize",
            &[("disk", "scsi0"), ("size", "+16M")]
        )
        .await,
        "OK"
    );
    let t0 = Instant::now();
    let st = api
        .task("POST", "/nodes/pve/qemu/101/status/start", &[])
        .await;
    assert_eq!(st, "OK", "{}", sim.log());

    // The tap, named like PVE's, is a port of the bridge.
    let link = ns.exec(&["ip", "-o", "link", "show", "tap101i0"]).unwrap();
    assert!(link.contains("master vmbr0"), "{link}");
    // The cloud-init drive holds exactly what PVE would have generated.
    let vol = sim.state_dir().join("images/101/vm-101-cloudinit.qcow2");
    let user_data = iso_file(&vol, "user-data");
    assert_eq!(
        user_data,
        format!(
            "#cloud-config\nhostname: claw-guest\nmanage_etc_hosts: true\nfqdn: claw-guest\nuser: root\ndisable_root: False\nssh_authorized_keys:\n  - {pub1}\n  - {pub2}\nchpasswd:\n  expire: False\npackage_upgrade: true\n"
        )
    );
    let net = iso_file(&vol, "network-config");
    assert!(
        net.contains(&format!("mac_address: '{}'", mac.to_ascii_lowercase())),
        "{net}"
    );
    assert!(
        net.contains(
            "address: '10.77.0.10'\n        netmask: '255.255.255.0'\n        gateway: '10.77.0.1'"
        ),
        "{net}"
    );

    // The guest comes up on the bridge: SSH with the first key.
    let mut authorized = None;
    while t0.elapsed() < Duration::from_secs(150) {
        let out = ssh(&ns, &k1, "cat /root/.ssh/authorized_keys");
        if out.status.success() {
            authorized = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let authorized = authorized
        .unwrap_or_else(|| panic!("no SSH after {:?}; sim log:\n{}", t0.elapsed(), sim.log()));
    eprintln!("guest reachable over SSH {:?} after start", t0.elapsed());
    // Keys arrive unchanged, comments included.
    assert_eq!(authorized, format!("{pub1}\n{pub2}\n"));
    let out = ssh(&ns, &k2, "echo logged-in");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "logged-in\n",
        "{out:?}"
    );
    ns.exec(&["ping", "-c", "1", "-W", "2", "10.77.0.10"])
        .unwrap();
    // The guest's NIC has net0's MAC.
    let neigh = ns.exec(&["ip", "neigh", "show", "10.77.0.10"]).unwrap();
    assert!(
        neigh.contains(&mac.to_ascii_lowercase()),
        "{neigh} vs {mac}"
    );
    let cur = api
        .ok("GET", "/nodes/pve/qemu/101/status/current", &[])
        .await;
    assert_eq!(cur["status"], "running");
    assert!(
        cur["netin"].as_u64().unwrap() > 0 && cur["netout"].as_u64().unwrap() > 0,
        "{cur}"
    );

    // Reboot: a shutdown with a reboot request; the node starts the VM again.
    let pid1 = cur["pid"].as_i64().unwrap();
    let st = api
        .task(
            "POST",
            "/nodes/pve/qemu/101/status/reboot",
            &[("timeout", "60")],
        )
        .await;
    assert_eq!(st, "OK");
    let mut back = false;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(150) {
        let cur = api
            .ok("GET", "/nodes/pve/qemu/101/status/current", &[])
            .await;
        if cur["status"] == "running"
            && cur["pid"].as_i64() != Some(pid1)
            && ssh(&ns, &k1, "true").status.success()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        back,
        "no new QEMU answering SSH after reboot; log:\n{}",
        sim.log()
    );

    // Fault knobs through the control listener of the simulator process.
    sim.control(
        "POST",
        "/faults/lock",
        Some(serde_json::json!({"vmid": 101, "lock": "backup"})),
    )
    .await
    .unwrap();
    let (s, v) = api
        .call("PUT", "/nodes/pve/qemu/101/config", &[("cores", "2")])
        .await;
    assert_eq!(s, 500);
    assert_eq!(v["message"], "VM is locked (backup)\n");
    sim.control(
        "POST",
        "/faults/lock",
        Some(serde_json::json!({"vmid": 101, "lock": null})),
    )
    .await
    .unwrap();
    let state = sim.control("GET", "/state", None).await.unwrap();
    let me = state["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmid"] == 101)
        .unwrap()
        .clone();
    assert!(me["pid"].is_number() && me["lock"].is_null(), "{me}");

    // cicustom: a snippet the driver writes on the node replaces user-data.
    let snippet = "#cloud-config\nusers: []\n# custom é\n";
    std::fs::write(sim.snippets_dir().join("user-102.yaml"), snippet).unwrap();
    assert_eq!(
        api.task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "102")])
            .await,
        "OK"
    );
    api.ok(
        "PUT",
        "/nodes/pve/qemu/102/config",
        &[
            ("cicustom", "user=local:snippets/user-102.yaml"),
            ("ipconfig0", "ip=10.77.0.11/24"),
        ],
    )
    .await;
    let files = sim.control("GET", "/cloudinit/102", None).await.unwrap();
    assert_eq!(files["user-data"], snippet);
    assert!(
        files["network-config"]
            .as_str()
            .unwrap()
            .contains("address: '10.77.0.11'")
    );
    let r = api
        .call(
            "PUT",
            "/nodes/pve/qemu/102/config",
            &[("cicustom", "user=local:iso/x.iso")],
        )
        .await;
    assert_eq!(r.0, 200);
    let e = sim
        .control("GET", "/cloudinit/102", None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("local:iso/x.iso is not in the snippets directory"),
        "{e}"
    );

    // firewall=1: PVE's topology, tap behind fwbr{vmid}i0, veth fwpr/fwln into
    // the bridge; gone again after a stop.
    api.ok(
        "PUT",
        "/nodes/pve/qemu/102/config",
        &[
            ("net0", "virtio,bridge=vmbr0,firewall=1"),
            ("delete", "cicustom"),
        ],
    )
    .await;
    assert_eq!(
        api.task("POST", "/nodes/pve/qemu/102/status/start", &[])
            .await,
        "OK"
    );
    let tap = ns.exec(&["ip", "-o", "link", "show", "tap102i0"]).unwrap();
    assert!(tap.contains("master fwbr102i0"), "{tap}");
    let fwpr = ns.exec(&["ip", "-o", "link", "show", "fwpr102p0"]).unwrap();
    assert!(fwpr.contains("master vmbr0"), "{fwpr}");
    let fwln = ns.exec(&["ip", "-o", "link", "show", "fwln102i0"]).unwrap();
    assert!(fwln.contains("master fwbr102i0"), "{fwln}");
    assert_eq!(
        api.task("POST", "/nodes/pve/qemu/102/status/stop", &[])
            .await,
        "OK"
    );
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    for gone in ["tap102i0", "fwbr102i0", "fwpr102p0", "fwln102i0"] {
        assert!(!links.contains(gone), "{gone} left: {links}");
    }
    // A bridge the simulator is not allowed to use: the start fails like PVE's
    // pve-bridge hook does.
    api.ok(
        "PUT",
        "/nodes/pve/qemu/102/config",
        &[("net0", "virtio,bridge=vmbr9")],
    )
    .await;
    assert_eq!(
        api.task("POST", "/nodes/pve/qemu/102/status/start", &[])
            .await,
        "start failed: QEMU exited with code 1"
    );

    // Graceful shutdown: the guest powers off on the ACPI request.
    let st = api
        .task(
            "POST",
            "/nodes/pve/qemu/101/status/shutdown",
            &[("timeout", "60")],
        )
        .await;
    assert_eq!(st, "OK");
    assert_eq!(
        api.ok("GET", "/nodes/pve/qemu/101/status/current", &[])
            .await["status"],
        "stopped"
    );
    assert!(ns.exec(&["ip", "link", "show", "tap101i0"]).is_err());

    // Delete: no config, disk, tap or QEMU process remains.
    let st = api
        .task(
            "DELETE",
            "/nodes/pve/qemu/101",
            &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
        )
        .await;
    assert_eq!(st, "OK");
    let (s, _) = api.call("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert_eq!(s, 500);
    assert!(!sim.state_dir().join("qemu-server/101.conf").exists());
    assert!(!sim.state_dir().join("images/101").exists());
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains("tap101i0"), "{links}");
    for pid in ns.pids() {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmd).contains("qemu-system"),
            "QEMU left running: {pid}"
        );
    }
}
