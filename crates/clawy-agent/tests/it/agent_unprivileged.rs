//! ISO-4: each VM's QEMU runs as that VM's own unprivileged uid/gid, sandboxed,
//! and no VM's QEMU can open another VM's disk (nor its own again: QEMU opened
//! it before dropping root). Two real TCG guests through the real agent; the
//! "can that uid open this file" check runs a helper with exactly the QEMU
//! process's ids (`setpriv`). Lifecycle under the drop (graceful stop, reboot,
//! agent restart, delete) is in `agent_lifecycle`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{VmSpec, VmState};
use clawy_testkit::agent::{AgentOptions, TestAgent};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");

fn spec(id: &str, n: u8, image: &str) -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image.into(),
        mac: format!("52:54:00:77:09:{n:02x}"),
        private_ip: format!("10.77.9.{n}"),
        hostname: id.into(),
        ssh_authorized_keys: vec![],
        user_data: None,
        port_forwards: vec![],
        public_hostname: None,
    }
}

/// `[real, effective, saved, fs]` uids and gids and the seccomp mode of a process.
fn creds(pid: u32) -> ([u32; 4], [u32; 4], String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> [u32; 4] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        let v: Vec<u32> = line
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        v.try_into().unwrap()
    };
    let seccomp = status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap_or_default();
    (ids("Uid:"), ids("Gid:"), seccomp)
}

/// Tries to open `path` for reading as `uid:gid` with no supplementary groups
/// (what that QEMU process holds). Ok(()) when it could, Err(stderr) otherwise.
fn open_as(uid: u32, gid: u32, path: &Path) -> Result<(), String> {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            "head",
            "-c",
            "1",
        ])
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[tokio::test]
async fn iso_4_each_qemu_runs_as_its_own_user_and_cannot_open_another_vms_disk() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let images_dir = image.parent().unwrap().to_path_buf();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let opts = AgentOptions {
        images_dir: Some(images_dir),
        extra_toml: "max_vcpus = 4\n".into(),
        driver_toml: clawy_testkit::agent::qemu_driver_toml(
            "uid_range = \"1900100000-1900100099\"",
        ),
        ..AgentOptions::default()
    };
    let mut agent = TestAgent::start(Path::new(BIN), opts, None).await.unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    for (id, n) in [("priv-a", 20), ("priv-b", 21)] {
        c.ensure_vm(id, &spec(id, n, &image_name)).await.unwrap();
        c.start_vm(id).await.unwrap();
    }
    let vms = agent.state_dir().join("vms");
    let disk = |id: &str| -> PathBuf { vms.join(id).join("overlay.qcow2") };
    let pids: std::collections::BTreeMap<String, u32> = agent.qemu_pids().into_iter().collect();
    assert_eq!(pids.len(), 2, "{pids:?}\n{}", agent.log());

    let mut seen = Vec::new();
    for (id, pid) in &pids {
        let (uid, gid, seccomp) = creds(*pid);
        // Not root, in every one of its ids, and its own group; sandboxed.
        assert!(uid.iter().all(|u| *u != 0), "{id}: uid {uid:?}");
        assert_eq!(uid, [uid[0]; 4], "{id}: uid {uid:?}");
        assert_eq!(gid, [uid[0]; 4], "{id}: gid {gid:?}");
        assert!(
            (1_900_100_000..=1_900_100_099).contains(&uid[0]),
            "{id}: {uid:?}"
        );
        assert_eq!(seccomp, "2", "{id}: seccomp filter mode");
        seen.push(uid[0]);
        // The disk and seed: root's, 0600, in a 0700 root directory.
        for f in ["overlay.qcow2", "seed.iso"] {
            let m = std::fs::metadata(vms.join(id).join(f)).unwrap();
            assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{id}/{f}");
        }
        let d = std::fs::metadata(vms.join(id)).unwrap();
        assert_eq!(
            (d.uid(), d.permissions().mode() & 0o777),
            (0, 0o700),
            "{id}"
        );
    }
    seen.dedup();
    assert_eq!(seen.len(), 2, "one uid per VM: {seen:?}");

    // As A's QEMU: B's disk cannot be opened (nor A's own: QEMU holds it open
    // from before the drop and never needs to open it again).
    let (a_uid, ..) = creds(pids["priv-a"]);
    let (b_uid, ..) = creds(pids["priv-b"]);
    for (who, other) in [(a_uid[0], "priv-b"), (b_uid[0], "priv-a")] {
        let err = open_as(who, who, &disk(other)).unwrap_err();
        assert!(err.contains("Permission denied"), "{who} -> {other}: {err}");
    }
    assert!(open_as(a_uid[0], a_uid[0], &disk("priv-a")).is_err());
    // Positive control: the helper does open what that uid may read.
    let readable = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(readable.path(), "x").unwrap();
    std::fs::set_permissions(readable.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    open_as(a_uid[0], a_uid[0], readable.path()).unwrap();

    // The ids stay with the VM across a restart of the VM and of the agent.
    c.stop_vm("priv-a").await.unwrap();
    c.start_vm("priv-a").await.unwrap();
    agent.restart(None).await.unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let pids: std::collections::BTreeMap<String, u32> = agent.qemu_pids().into_iter().collect();
    assert_eq!(creds(pids["priv-a"]).0, a_uid);
    assert_eq!(c.get_vm("priv-b").await.unwrap().state, VmState::Running);
    for id in ["priv-a", "priv-b"] {
        c.delete_vm(id).await.unwrap();
    }
    assert!(agent.qemu_pids().is_empty());
}
