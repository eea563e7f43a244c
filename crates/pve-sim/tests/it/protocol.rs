//! PVE protocol conformance of the simulator: auth, error shapes, schema
//! refusals, UPIDs, digests, nextid, locks and the clone → config → resize →
//! start → delete flow (a real QEMU process, no network device).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{client, pve_urlencode, start_sim};

fn upid_regex() -> regex::Regex {
    regex::Regex::new(
        r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:([a-z]+):([0-9]*):([^:]+):$",
    )
    .unwrap()
}

#[tokio::test]
async fn auth_token_required_and_401_is_delayed_with_empty_body() {
    let env = start_sim(|_| {}).await;
    let addr = env.sim.addr();
    let ca = env.sim.ca_pem().to_string();
    for (auth, reason) in [
        (None, "No ticket"),
        (
            Some("PVEAPIToken=clawy@pve!agent=wrong".to_string()),
            "Authentication failed!",
        ),
        (
            Some(format!(
                "PVEAPIToken=clawy@pve!nosuch={}",
                super::TOKEN_SECRET
            )),
            "Authentication failed!",
        ),
        (Some("Bearer abc".to_string()), "No ticket"),
    ] {
        let t = Instant::now();
        let r = client::request(
            addr,
            &ca,
            "GET",
            "/api2/json/version",
            auth.as_deref(),
            None,
            b"",
        )
        .await;
        let took = t.elapsed();
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.reason, reason);
        assert!(r.body.is_empty(), "{}", r.text());
        // The configured PVE-like delay (300 ms here, 3 s by default).
        assert!(took >= Duration::from_millis(290), "401 after {took:?}");
    }
    let t = Instant::now();
    let v = env.ok("GET", "/version", &[]).await;
    assert!(t.elapsed() < Duration::from_millis(250));
    assert_eq!(v["release"], "9.1");
    assert!(v["version"].as_str().unwrap().starts_with("9.1."));
    // TLS pinning material: the node certificate's SHA-256 in PVE's notation.
    let fp = env.sim.fingerprint();
    assert_eq!(fp.len(), 95);
    // It is the certificate served (signed by the CA the client pinned).
    assert_eq!(client::peer_fingerprint(addr, &ca).await, fp);
    assert!(
        fp.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[tokio::test]
async fn error_shapes_are_pves() {
    let env = start_sim(|_| {}).await;
    // 400: reason phrase, errors map, message (newer pve-http-server).
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/9000/config",
            &[("cores", "0"), ("bogus", "1")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason, "Parameter verification failed.");
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    let v = r.json();
    assert_eq!(v["data"], serde_json::Value::Null);
    assert_eq!(v["errors"]["cores"], "value must have a minimum value of 1");
    assert_eq!(
        v["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert_eq!(v["message"], "Parameter verification failed.\n");
    // 500: the message is the reason phrase; body {"data":null,"message":…}.
    let r = env.call("GET", "/nodes/pve/qemu/999/config", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"
    );
    assert_eq!(
        r.json(),
        json!({"data": null, "message": "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist\n"})
    );
    // 403 for a token lacking the privilege.
    let r = env
        .call_as(&env.ro_auth(), "DELETE", "/nodes/pve/qemu/9000", &[])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason, "Permission check failed (/vms/9000, VM.Allocate)");
    // 501 for what PVE does not have.
    let r = env.call("GET", "/nodes/pve/qemu/9000/bogus", &[]).await;
    assert_eq!(r.status, 501);
    assert_eq!(
        r.reason,
        "Method 'GET /nodes/pve/qemu/9000/bogus' not implemented"
    );
    // Another node name: PVE tries to proxy to it.
    let r = env.call("GET", "/nodes/other/qemu", &[]).await;
    assert_eq!(r.status, 500);
    assert!(
        r.reason.starts_with("hostname lookup 'other' failed"),
        "{}",
        r.reason
    );
    // Path vs body conflict.
    let r = env
        .call("PUT", "/nodes/pve/qemu/9000/config", &[("vmid", "9001")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"]["vmid"],
        "duplicate parameter (already defined in URI) with conflicting values!"
    );
    // A body on GET.
    let r = client::request(
        env.sim.addr(),
        env.sim.ca_pem(),
        "GET",
        "/api2/json/version",
        Some(&env.auth()),
        Some("application/x-www-form-urlencoded"),
        b"a=b",
    )
    .await;
    assert_eq!(r.status, 501);
    assert_eq!(r.reason, "Unexpected content for method 'GET'");

    // Older pve-http-server: no "message" in the body.
    let old = start_sim(|c| c.error_message_in_body = false).await;
    let r = old.call("GET", "/nodes/pve/qemu/999/config", &[]).await;
    assert_eq!(r.json(), json!({"data": null}));
}

#[tokio::test]
async fn schema_refusals_and_encodings() {
    let env = start_sim(|_| {}).await;
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/9000/config",
            &[
                ("net0", "virtio=01:00:00:00:00:01,bridge=vmbr0"),
                ("ipconfig0", "gw=10.0.0.1"),
                ("onboot", "true"),
                ("memory", "8"),
                ("vga", "bogus"),
                ("tags", "bad tag!"),
                ("cpu", "pentium9"),
                ("serial0", "tcp"),
                ("scsi0", "local:9000/base-9000-disk-0.qcow2,size=xx"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    let e = &r.json()["errors"];
    assert!(
        e["net0"].as_str().unwrap().contains(
            "net0.macaddr: invalid format - value does not look like a valid unicast MAC address"
        ),
        "{e}"
    );
    assert!(
        e["ipconfig0"]
            .as_str()
            .unwrap()
            .contains("missing property required by 'ipconfig0.gw'"),
        "{e}"
    );
    assert_eq!(e["onboot"], "type check ('boolean') failed - got 'true'");
    assert!(
        e["memory"]
            .as_str()
            .unwrap()
            .contains("memory.current: value must have a minimum value of 16")
    );
    assert!(
        e["vga"]
            .as_str()
            .unwrap()
            .contains("does not have a value in the enumeration")
    );
    assert_eq!(e["tags"], "invalid format - invalid characters in tag\n");
    assert!(
        e["cpu"]
            .as_str()
            .unwrap()
            .contains("Built-in cputype 'pentium9' is not defined")
    );
    assert_eq!(e["serial0"], "value does not match the regex pattern");
    assert!(e["scsi0"].as_str().unwrap().contains("scsi0.size"), "{e}");

    // sshkeys: PVE's percent-encoding, then form-encoded once more.
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm me@host";
    let once = pve_urlencode(&format!("{key}\n"));
    // Encoded only once on the wire: the form decoding leaves spaces → refused.
    let body = format!("sshkeys={once}");
    let r = client::request(
        env.sim.addr(),
        env.sim.ca_pem(),
        "PUT",
        "/api2/json/nodes/pve/qemu/9000/config",
        Some(&env.auth()),
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["errors"]["sshkeys"]
            .as_str()
            .unwrap()
            .starts_with("invalid format - invalid urlencoded string: ssh-ed25519 AAAA")
    );
    // A raw '+' in the form means a space: refused too.
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/9000/config",
            &[("sshkeys", "ssh-ed25519+AAAA")],
        )
        .await;
    assert_eq!(r.status, 400);

    // JSON bodies are taken as PVE takes them (booleans as JSON true/false too).
    let r = client::request(
        env.sim.addr(),
        env.sim.ca_pem(),
        "POST",
        "/api2/json/nodes/pve/qemu/9000/clone",
        Some(&env.auth()),
        Some("application/json"),
        br#"{"newid": 120, "full": true, "name": "json-clone"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert_eq!(env.wait_task(&upid).await["exitstatus"], "OK");
    let c = env.ok("GET", "/nodes/pve/qemu/120/config", &[]).await;
    assert_eq!(c["name"], "json-clone");
    // The node remembers every request (names only, never values) with PVE's
    // verdict: a client's conformance test asserts none failed verification.
    let recs = env.sim.requests();
    let refused = recs
        .iter()
        .find(|r| r.status == 400 && r.errors.as_ref().is_some_and(|e| e.contains_key("sshkeys")))
        .expect("the refused sshkeys request is recorded");
    assert_eq!(refused.path, "/nodes/pve/qemu/9000/config");
    assert_eq!(refused.params, vec!["sshkeys".to_string()]);
    // Values are not recorded (only PVE's own error texts may quote one).
    assert!(!format!("{recs:?}").contains("json-clone"));
    // Full clone: its own copy, no backing file on the template.
    assert!(
        c["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local:120/vm-120-disk-0.qcow2,"),
        "{c}"
    );
}

#[tokio::test]
async fn nextid_reserves_nothing_and_checks_taken_ids() {
    let env = start_sim(|_| {}).await;
    let a = env.ok("GET", "/cluster/nextid", &[]).await;
    let b = env.ok("GET", "/cluster/nextid", &[]).await;
    // A string, as PVE sends it; asking twice gives the same id.
    assert_eq!(a, json!("100"));
    assert_eq!(a, b);
    assert_eq!(
        env.ok("GET", "/cluster/nextid", &[("vmid", "101")]).await,
        json!("101")
    );
    let r = env
        .call("GET", "/cluster/nextid", &[("vmid", "9000")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"]["vmid"], "VM 9000 already exists");
    // Racing clones on the id nextid gave: the second is refused synchronously.
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "100")])
        .await;
    assert_eq!(st, "OK");
    let r = env
        .call("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "100")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "unable to create VM 100: config file already exists"
    );
    assert_eq!(env.ok("GET", "/cluster/nextid", &[]).await, json!("101"));
}

#[tokio::test]
async fn tasks_unknown_upid_and_log_shape() {
    let env = start_sim(|_| {}).await;
    let r = env
        .call(
            "GET",
            "/nodes/pve/tasks/UPID:pve:00001234:00ABCDEF:65000000:qmstart:100:root@pam:/status",
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"]["upid"], "no such task");
    let r = env
        .call("GET", "/nodes/pve/tasks/garbage/status", &[])
        .await;
    assert_eq!(r.json()["errors"]["upid"], "unable to parse worker upid");
    let (upid, st) = env
        .run_task(
            "POST",
            "/nodes/pve/qemu/9000/clone",
            &[("newid", "130"), ("name", "c130")],
        )
        .await;
    assert_eq!(st, "OK");
    let caps = upid_regex().captures(&upid).unwrap();
    // qmclone's id is the source VM; the user is the token.
    assert_eq!(&caps[1], "qmclone");
    assert_eq!(&caps[2], "9000");
    assert_eq!(&caps[3], "clawy@pve!agent");
    let st = env.wait_task(&upid).await;
    assert_eq!(st["user"], "clawy@pve");
    assert_eq!(st["tokenid"], "agent");
    assert_eq!(st["type"], "qmclone");
    assert_eq!(st["upid"], upid.as_str());
    let r = env
        .call(
            "GET",
            &format!("/nodes/pve/tasks/{}/log", client::path_escape(&upid)),
            &[],
        )
        .await;
    let v = r.json();
    let lines = v["data"].as_array().unwrap();
    assert_eq!(lines[0]["n"], 1);
    assert!(lines.last().unwrap()["t"] == "TASK OK");
    assert_eq!(v["total"], lines.len());
    assert!(
        env.task_log(&upid)
            .await
            .contains("create linked clone of drive scsi0 (local:9000/base-9000-disk-0.qcow2)")
    );
    // Another token may not read it without Sys.Audit; the read-only one has it.
    let r = env
        .call_as(
            &env.ro_auth(),
            "GET",
            &format!("/nodes/pve/tasks/{}/status", client::path_escape(&upid)),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn clone_lock_and_config_lock_errors() {
    let env = start_sim(|c| c.lock_wait_ms = 400).await;
    // A slow clone: the new VM exists, locked `clone`, until the task ends.
    env.sim
        .set_task_duration("qmclone", Duration::from_millis(1500));
    let upid = env
        .ok("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "140")])
        .await
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = env.ok("GET", "/nodes/pve/qemu/140/config", &[]).await;
    assert_eq!(c["lock"], "clone");
    let r = env
        .call("PUT", "/nodes/pve/qemu/140/config", &[("cores", "2")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "VM is locked (clone)");
    let st = env
        .ok("GET", "/nodes/pve/qemu/140/status/current", &[])
        .await;
    assert_eq!(st["lock"], "clone");
    // Start answers a UPID; its task waits for the config lock the clone worker
    // holds (400 ms here, PVE's 10 s by default) and gives up.
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/140/status/start", &[])
        .await;
    assert_eq!(
        st,
        "can't lock file '/var/lock/qemu-server/lock-140.conf' - got timeout"
    );
    assert_eq!(env.wait_task(&upid).await["exitstatus"], "OK");
    let c = env.ok("GET", "/nodes/pve/qemu/140/config", &[]).await;
    assert!(c.get("lock").is_none(), "{c}");
    assert_eq!(c["name"], "Copy-of-VM-tmpl");

    // A held config lock (flock): sync calls wait lock_wait, then fail.
    env.sim
        .hold_config_lock(140, Duration::from_secs(5))
        .await
        .unwrap();
    let t = Instant::now();
    let r = env
        .call("PUT", "/nodes/pve/qemu/140/config", &[("cores", "2")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "can't lock file '/var/lock/qemu-server/lock-140.conf' - got timeout"
    );
    assert!(t.elapsed() >= Duration::from_millis(390));
    let (upid, st) = env
        .run_task("POST", "/nodes/pve/qemu/140/config", &[("cores", "2")])
        .await;
    assert_eq!(
        st,
        "can't lock file '/var/lock/qemu-server/lock-140.conf' - got timeout"
    );
    assert!(
        env.task_log(&upid)
            .await
            .contains("trying to acquire lock...")
    );

    // The config's lock key (e.g. a backup running).
    env.sim.set_vm_lock(9000, Some("backup")).unwrap();
    let r = env
        .call("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "141")])
        .await;
    assert_eq!(r.reason, "VM is locked (backup)");
    env.sim.set_vm_lock(9000, None).unwrap();
}

#[tokio::test]
async fn digest_detects_concurrent_changes() {
    let env = start_sim(|_| {}).await;
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "150")])
        .await;
    assert_eq!(st, "OK");
    let c = env.ok("GET", "/nodes/pve/qemu/150/config", &[]).await;
    let digest = c["digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 40);
    assert_eq!(
        env.ok(
            "PUT",
            "/nodes/pve/qemu/150/config",
            &[("cores", "2"), ("digest", &digest)]
        )
        .await,
        json!(null)
    );
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/150/config",
            &[("cores", "3"), ("digest", &digest)],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "checksum mismatch (file change by other user?)");
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/150/resize",
            &[("disk", "scsi0"), ("size", "+1M"), ("digest", &digest)],
        )
        .await;
    let upid = r.json()["data"].as_str().unwrap().to_string();
    assert_eq!(
        env.wait_task(&upid).await["exitstatus"],
        "checksum mismatch (file change by other user?)"
    );
}

#[tokio::test]
async fn clone_config_resize_start_stop_delete_flow() {
    let env = start_sim(|_| {}).await;
    let node = env.sim.node().clone();
    let tmpl = env.ok("GET", "/nodes/pve/qemu/9000/config", &[]).await;
    assert_eq!(tmpl["template"], 1);
    let (_, st) = env
        .run_task(
            "POST",
            "/nodes/pve/qemu/9000/clone",
            &[
                ("newid", "101"),
                ("name", "claw-1"),
                ("description", "clawy instance 42"),
            ],
        )
        .await;
    assert_eq!(st, "OK");
    let c = env.ok("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert_eq!(c["description"], "clawy instance 42");
    let scsi0 = c["scsi0"].as_str().unwrap();
    assert!(
        scsi0.starts_with("local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2,"),
        "{scsi0}"
    );
    assert!(
        c["ide2"]
            .as_str()
            .unwrap()
            .starts_with("local:101/vm-101-cloudinit.qcow2,media=cdrom")
    );
    assert!(c.get("template").is_none());
    // The linked clone is a qcow2 overlay on the template's base image.
    let disk = node.cfg.state_dir.join("images/101/vm-101-disk-0.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["backing-filename"], "../9000/base-9000-disk-0.qcow2");
    // ISO-4: the disk is the VM's own uid's, 0600.
    let md = std::fs::metadata(&disk).unwrap();
    assert_eq!(md.uid(), node.uid_for(101));
    assert_eq!(md.mode() & 0o777, 0o600);

    // Sync config: integers come back as numbers; tags are normalised like PVE.
    let r = env
        .ok(
            "PUT",
            "/nodes/pve/qemu/101/config",
            &[
                ("cores", "2"),
                ("memory", "256"),
                ("balloon", "0"),
                ("agent", "0"),
                ("onboot", "1"),
                ("tags", "Clawy,inst-AB;clawy"),
            ],
        )
        .await;
    assert_eq!(r, json!(null));
    let c = env.ok("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert_eq!(c["cores"], 2);
    assert_eq!(c["onboot"], 1);
    assert_eq!(c["memory"], "256");
    assert_eq!(c["tags"], "clawy;inst-ab");
    // Async config: a qmconfig task.
    let (upid, st) = env
        .run_task("POST", "/nodes/pve/qemu/101/config", &[("ciuser", "claw")])
        .await;
    assert_eq!(st, "OK");
    assert!(upid.contains(":qmconfig:101:"));
    assert!(
        env.task_log(&upid)
            .await
            .contains("update VM 101: -ciuser claw")
    );

    // Resize: grow only, a UPID.
    let (upid, st) = env
        .run_task(
            "PUT",
            "/nodes/pve/qemu/101/resize",
            &[("disk", "scsi0"), ("size", "+64M")],
        )
        .await;
    assert_eq!(st, "OK", "{}", env.task_log(&upid).await);
    let c = env.ok("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert!(c["scsi0"].as_str().unwrap().ends_with("size=128M"), "{c}");
    let (_, st) = env
        .run_task(
            "PUT",
            "/nodes/pve/qemu/101/resize",
            &[("disk", "scsi0"), ("size", "64M")],
        )
        .await;
    assert_eq!(st, "shrinking disks is not supported");

    // Start: a real QEMU, unprivileged, sandboxed, paused until plugged.
    let (upid, st) = env
        .run_task("POST", "/nodes/pve/qemu/101/status/start", &[])
        .await;
    assert_eq!(st, "OK", "{}", env.task_log(&upid).await);
    let cur = env
        .ok("GET", "/nodes/pve/qemu/101/status/current", &[])
        .await;
    assert_eq!(cur["status"], "running");
    assert_eq!(cur["qmpstatus"], "running");
    assert_eq!(cur["cpus"], 2);
    assert_eq!(cur["maxmem"], 256 * 1024 * 1024);
    assert_eq!(cur["maxdisk"], 128 * 1024 * 1024);
    assert_eq!(cur["disk"], 0);
    for k in [
        "cpu",
        "mem",
        "uptime",
        "netin",
        "netout",
        "diskread",
        "diskwrite",
    ] {
        assert!(cur.get(k).is_some(), "status/current lacks {k}: {cur}");
    }
    let pid = cur["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains(&node.uid_for(101).to_string()),
        "{uid_line}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("on,obsolete=deny,spawn=deny")),
        "{args:?}"
    );
    // ACCESS-2 / ISO-2 in the generated machine: no guest agent, no balloon.
    assert!(
        !args
            .iter()
            .any(|a| a.contains("guest_agent") || a.contains("balloon")),
        "{args:?}"
    );
    // The cloud-init drive was built and belongs to the VM's uid.
    let ci = node.cfg.state_dir.join("images/101/vm-101-cloudinit.qcow2");
    assert_eq!(std::fs::metadata(&ci).unwrap().uid(), node.uid_for(101));
    let list = env.ok("GET", "/nodes/pve/qemu", &[]).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|v| v["vmid"] == 101 && v["status"] == "running")
    );
    let res = env.ok("GET", "/cluster/resources", &[("type", "vm")]).await;
    let me = res
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmid"] == 101)
        .unwrap()
        .clone();
    assert_eq!(me["id"], "qemu/101");
    assert_eq!(me["tags"], "clawy;inst-ab");
    // Failures that only appear in the task.
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/101/status/start", &[])
        .await;
    assert_eq!(st, "VM 101 already running");
    let r = env
        .call("DELETE", "/nodes/pve/qemu/101", &[("purge", "1")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "VM 101 is running - destroy failed");
    // A config change of a running VM stays pending (cores), fast options apply.
    env.ok(
        "PUT",
        "/nodes/pve/qemu/101/config",
        &[("cores", "1"), ("name", "claw-1b")],
    )
    .await;
    let cur = env
        .ok("GET", "/nodes/pve/qemu/101/config", &[("current", "1")])
        .await;
    assert_eq!(cur["cores"], 2);
    assert_eq!(cur["name"], "claw-1b");
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/101/config", &[]).await["cores"],
        1
    );

    // Shutdown: an ACPI request this guest (no OS) ignores; after `timeout` the
    // task fails, or with forceStop the VM is terminated.
    let (_, st) = env
        .run_task(
            "POST",
            "/nodes/pve/qemu/101/status/shutdown",
            &[("timeout", "1")],
        )
        .await;
    assert_eq!(st, "VM quit/powerdown failed - got timeout");
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/101/status/current", &[])
            .await["status"],
        "running"
    );
    let (upid, st) = env
        .run_task(
            "POST",
            "/nodes/pve/qemu/101/status/shutdown",
            &[("timeout", "1"), ("forceStop", "1")],
        )
        .await;
    assert_eq!(st, "OK");
    assert!(
        env.task_log(&upid)
            .await
            .contains("VM still running - terminating now with SIGTERM")
    );
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/101/status/current", &[])
            .await["status"],
        "stopped"
    );
    // The image really grew.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 128 * 1024 * 1024);
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/101/status/start", &[])
        .await;
    assert_eq!(st, "OK");
    let pid = env
        .ok("GET", "/nodes/pve/qemu/101/status/current", &[])
        .await["pid"]
        .as_i64()
        .unwrap();
    // Stop: hard.
    let (_, st) = env
        .run_task(
            "POST",
            "/nodes/pve/qemu/101/status/stop",
            &[("timeout", "18446744073709551615")],
        )
        .await;
    assert_eq!(st, "OK");
    assert_eq!(
        env.ok("GET", "/nodes/pve/qemu/101/status/current", &[])
            .await["status"],
        "stopped"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    );
    let r = env
        .call("POST", "/nodes/pve/qemu/101/status/reboot", &[])
        .await;
    assert_eq!(r.reason, "VM 101 not running");

    // Delete: a UPID; nothing left.
    let (_, st) = env
        .run_task(
            "DELETE",
            "/nodes/pve/qemu/101",
            &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
        )
        .await;
    assert_eq!(st, "OK");
    let r = env.call("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve/qemu-server/101.conf' does not exist"
    );
    assert!(!node.cfg.state_dir.join("images/101").exists());
    // The template's base image is untouched.
    assert!(
        node.cfg
            .state_dir
            .join("images/9000/base-9000-disk-0.qcow2")
            .exists()
    );
}

#[tokio::test]
async fn privileges_per_config_key() {
    let env = start_sim(|c| {
        c.tokens.push(pve_sim::TokenConfig {
            id: "cfg@pve!cpu".into(),
            secret: "cpu-only-secret".into(),
            privileges: vec!["VM.Config.CPU".into()],
        });
    })
    .await;
    let auth = "PVEAPIToken=cfg@pve!cpu=cpu-only-secret";
    let (_, st) = env
        .run_task("POST", "/nodes/pve/qemu/9000/clone", &[("newid", "160")])
        .await;
    assert_eq!(st, "OK");
    let r = env
        .call_as(auth, "PUT", "/nodes/pve/qemu/160/config", &[("cores", "2")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env
        .call_as(
            auth,
            "PUT",
            "/nodes/pve/qemu/160/config",
            &[("memory", "512")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.reason,
        "Permission check failed (/vms/160, VM.Config.Memory)"
    );
    let r = env
        .call_as(
            auth,
            "PUT",
            "/nodes/pve/qemu/160/config",
            &[("ciuser", "x")],
        )
        .await;
    assert_eq!(
        r.reason,
        "Permission check failed (/vms/160, VM.Config.Cloudinit|VM.Config.Network)"
    );
    let r = env
        .call_as(
            auth,
            "PUT",
            "/nodes/pve/qemu/160/config",
            &[("lock", "backup")],
        )
        .await;
    assert_eq!(r.reason, "only root can set 'lock' config");
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/160/config",
            &[("skiplock", "1"), ("cores", "2")],
        )
        .await;
    assert_eq!(
        r.json()["errors"]["skiplock"],
        "Only root may use this option."
    );
    let r = env
        .call_as(
            &env.ro_auth(),
            "POST",
            "/nodes/pve/qemu/9000/clone",
            &[("newid", "161")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason, "Permission check failed (/vms/9000, VM.Clone)");
}
