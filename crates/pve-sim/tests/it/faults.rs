//! Fault knobs: each makes the node misbehave the way a real PVE node can.

use std::time::Duration;

use serde_json::json;

use super::{client, start_sim};

#[tokio::test]
async fn fault_clone_failure_removes_the_half_created_vm() {
    let env = start_sim(|_| {}).await;
    env.sim.fail_next_clones(1, "storage 'local' is full");
    let (upid, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "200")])
        .await;
    assert_eq!(st, "clone failed: storage 'local' is full");
    assert!(
        env.task_log(&upid)
            .await
            .ends_with("TASK ERROR: clone failed: storage 'local' is full")
    );
    let r = env.call("GET", "/nodes/pve/qemu/200/config", &[]).await;
    assert_eq!(r.status, 500);
    assert!(!env.sim.node().cfg.state_dir.join("images/200").exists());
    // The next clone works again.
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "200")])
        .await;
    assert_eq!(st, "OK");
}

#[tokio::test]
async fn fault_vanishing_tasks_are_unknown_afterwards() {
    let env = start_sim(|_| {}).await;
    env.sim.vanish_next_tasks("qmclone", 1);
    let upid = env
        .ok("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "210")])
        .await;
    let upid = upid.as_str().unwrap().to_string();
    assert!(env.sim.wait_tasks_idle(Duration::from_secs(20)).await);
    let r = env
        .call(
            "GET",
            &format!("/nodes/pve/tasks/{}/status", client::path_escape(&upid)),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"]["upid"], "no such task");
    // The clone itself happened.
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/210/config", &[]).await["name"],
        "Copy-of-VM-tmpl"
    );
    let log = env
        .ok(
            "GET",
            &format!("/nodes/pve/tasks/{}/log", client::path_escape(&upid)),
            &[],
        )
        .await;
    assert_eq!(
        log,
        json!([{"n": 1, "t": "unable to open file - No such file or directory"}])
    );
    // A single task can be made to vanish too.
    let (upid, _) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "211")])
        .await;
    assert!(env.sim.vanish_task(&upid));
    let r = env
        .call(
            "GET",
            &format!("/nodes/pve/tasks/{}/status", client::path_escape(&upid)),
            &[],
        )
        .await;
    assert_eq!(r.json()["errors"]["upid"], "no such task");
}

#[tokio::test]
async fn fault_node_restart_loses_tasks_and_keeps_vms_running() {
    let env = start_sim(|_| {}).await;
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "220")])
        .await;
    assert_eq!(st, "OK");
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/220/status/start", &[])
        .await;
    assert_eq!(st, "OK");
    let pid = env
        .ok("GET", "/nodes/pve/qemu/220/status/current", &[])
        .await["pid"]
        .clone();
    env.sim
        .set_task_duration("qmclone", Duration::from_secs(30));
    let upid = env
        .ok("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "221")])
        .await;
    let upid = upid.as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = env
        .sim
        .restart_node(Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(killed, vec![upid.clone()]);
    let st = env.wait_task(&upid).await;
    assert_eq!(st["exitstatus"], "unexpected status");
    // A worker killed mid-clone leaves the VM locked, as on PVE (qm unlock).
    let c = env.ok("GET", "/nodes/pve/qemu/221/config", &[]).await;
    assert_eq!(c["lock"], "clone");
    // Start answers a UPID; the task fails on the lock key.
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/221/status/start", &[])
        .await;
    assert_eq!(st, "VM is locked (clone)");
    let r = env.call("DELETE", "/nodes/pve/qemu/221", &[]).await;
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert_eq!(
        env.wait_task(&upid).await["exitstatus"],
        "VM is locked (clone)"
    );
    // The running VM survived the restart.
    let cur = env
        .ok("GET", "/nodes/pve/qemu/220/status/current", &[])
        .await;
    assert_eq!(cur["status"], "running");
    assert_eq!(cur["pid"], pid);
}

#[tokio::test]
async fn fault_foreign_vm_and_crash() {
    let env = start_sim(|_| {}).await;
    env.sim
        .create_foreign_vm(230, 9000, "someone-elses", Some("prod"), true)
        .await
        .unwrap();
    let c = env.ok("GET", "/nodes/pve/qemu/230/config", &[]).await;
    assert_eq!(c["name"], "someone-elses");
    assert_eq!(c["tags"], "prod");
    let cur = env
        .ok("GET", "/nodes/pve/qemu/230/status/current", &[])
        .await;
    assert_eq!(cur["status"], "running");
    // A crash: QEMU dies; the node notices and cleans up.
    assert!(env.sim.kill_vm(230));
    for _ in 0..50 {
        if env
            .ok("GET", "/nodes/pve/qemu/230/status/current", &[])
            .await["status"]
            == "stopped"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/230/status/current", &[])
            .await["status"],
        "stopped"
    );
    // The node's monitor (qmeventd's job) removes the runtime files.
    let pidfile = env.sim.node().run_paths(230).pid;
    for _ in 0..50 {
        if !pidfile.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pidfile.exists());
}

#[tokio::test]
async fn fault_task_warnings_and_destroyed_lock_during_delete() {
    let env = start_sim(|_| {}).await;
    env.sim.set_task_warnings("qmclone", 2);
    let (upid, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "240")])
        .await;
    assert_eq!(st, "WARNINGS: 2");
    assert!(
        env.task_log(&upid)
            .await
            .contains("WARN: pve-sim: simulated warning")
    );
    // Delete: after the disks are gone the config is only `lock: destroyed`
    // until the task ends.
    env.sim
        .set_task_duration("qmdestroy", Duration::from_millis(1500));
    let upid = env.ok("DELETE", "/nodes/pve/qemu/240", &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = env.ok("GET", "/nodes/pve/qemu/240/config", &[]).await;
    assert_eq!(c["lock"], "destroyed");
    let r = env
        .call("PUT", "/nodes/pve/qemu/240/config", &[("cores", "2")])
        .await;
    assert_eq!(r.reason, "VM is locked (destroyed)");
    let st = env.wait_task(upid.as_str().unwrap()).await;
    assert_eq!(st["exitstatus"], "OK");
    assert_eq!(
        env.call("GET", "/nodes/pve/qemu/240/config", &[])
            .await
            .status,
        500
    );
}

#[tokio::test]
async fn cli_create_template_writes_a_pve_template() {
    let dir = tempfile::tempdir().unwrap();
    let image = super::blank_image(dir.path());
    let cfg = dir.path().join("sim.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\naccelerator = \"tcg\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .arg("--config")
        .arg(&cfg)
        .args(["create-template", "--vmid", "9100", "--image"])
        .arg(&image)
        .args(["--bridge", "vmbr0", "--name", "tmpl-cli"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let conf = std::fs::read_to_string(dir.path().join("state/qemu-server/9100.conf")).unwrap();
    for want in [
        "template: 1\n",
        "name: tmpl-cli\n",
        "scsi0: local:9100/base-9100-disk-0.qcow2,size=64M\n",
        "ide2: local:9100/vm-9100-cloudinit.qcow2,media=cdrom\n",
        "boot: order=scsi0\n",
    ] {
        assert!(conf.contains(want), "{want} not in:\n{conf}");
    }
    assert!(conf.contains("net0: virtio=BC:24:11:"), "{conf}");
    // A second time: the VMID is taken.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .arg("--config")
        .arg(&cfg)
        .args(["create-template", "--vmid", "9100", "--image"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config file already exists"));
}
