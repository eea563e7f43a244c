//! The control plane with two REAL agents on different drivers, each in its own
//! host namespace: one on the `qemu` driver, one on the `proxmox` driver against
//! `pve-sim` (the Proxmox VE simulator; its VMs are real TCG guests). Placement
//! puts one instance on each (ISO-2: one vCPU per host), both run, the owner's key
//! (a comment with quotes, a backslash and non-ASCII) logs in on both and lands
//! exactly, stop/start works, and delete leaves no VM on either host (ISO-1).

use std::sync::Arc;
use std::time::Duration;

use clawy_core::Actor;
use clawy_core::Core;
use clawy_core::instances::{CreateInstance, InstanceState};
use clawy_core::lifecycle::LifecycleAction;
use clawy_orchestrator::{Orchestrator, OrchestratorConfig, RunnerConfig};
use clawy_testkit::db::TestDatabase;

use crate::orchestrator_support::*;

const COMMENT: &str = "\"owner's\" key back\\slash ünïcödé ☃";

async fn wait_all(core: &Core, owner: &str, ids: &[String], want: InstanceState) {
    wait_for(
        &format!("both instances {want}"),
        Duration::from_secs(300),
        || async {
            let mut all = true;
            for id in ids {
                let i = core.instances().get(owner, id).await.unwrap();
                assert_ne!(i.state, InstanceState::Error, "{:?}", i.error_reason);
                all &= i.state == want;
            }
            all.then_some(())
        },
    )
    .await
}

fn ssh_keypair(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", COMMENT, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    (key, public.trim().to_string())
}

/// AUTH-4 through the control plane: the owner's key logs in through the
/// instance's SSH forward (from the host itself) and is the guest's only
/// `authorized_keys` line, byte for byte.
async fn auth_4_owner_key_lands_exactly(
    host: &AgentHost,
    key: &std::path::Path,
    port: u16,
    public: &str,
) {
    let port = port.to_string();
    let key = key.display().to_string();
    let argv = [
        "ssh",
        "-i",
        key.as_str(),
        "-p",
        port.as_str(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "claw@127.0.0.1",
        "cat ~/.ssh/authorized_keys",
    ];
    let out = wait_for("an SSH login", Duration::from_secs(120), || async {
        let out = host.ns.output(&argv).unwrap();
        out.status.success().then_some(out)
    })
    .await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{public}\n")
    );
}

#[tokio::test]
async fn iso_1_iso_2_auth_4_control_plane_runs_instances_on_a_qemu_and_a_proxmox_host() {
    let _heavy = HEAVY.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let core = Arc::new(Core::open(control_config(&db)).await.unwrap());
    tiny_plan(&core).await;
    let caps = "max_vcpus = 1\nmax_memory_mib = 512\n";
    let qemu = AgentHost::start("dr-q", "10.84.1", "22500-22599", caps).await;
    let pve = AgentHost::start_proxmox("dr-p", "10.84.2", "22600-22699", caps, "700-709").await;
    let qemu_id = qemu.register(&core, "fra1", "DE", "fra1").await;
    let pve_id = pve.register(&core, "fra2", "DE", "fra2").await;
    let owner = user(&core, "owner@example.test").await;
    let caller = Actor::system();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = ssh_keypair(tmp.path());
    let ssh_key = core
        .ssh_keys()
        .add(&owner.id, "laptop", &public, &caller)
        .await
        .unwrap();

    let mut placed = Vec::new();
    for name in ["a", "b"] {
        let i = core
            .instances()
            .create(
                &caller,
                &owner.id,
                CreateInstance {
                    name: name.into(),
                    plan: Some("tiny".into()),
                    region: None,
                    ssh_key_ids: vec![ssh_key.id.clone()],
                    secrets: Default::default(),
                },
            )
            .await
            .unwrap();
        placed.push(i);
    }
    // One vCPU per host: one instance on each driver.
    let mut hosts: Vec<&str> = placed.iter().map(|i| i.host_id.as_str()).collect();
    hosts.sort();
    let mut want = vec![qemu_id.as_str(), pve_id.as_str()];
    want.sort();
    assert_eq!(hosts, want);
    let ids: Vec<String> = placed.iter().map(|i| i.id.clone()).collect();

    let orch = Orchestrator::start(
        core.clone(),
        OrchestratorConfig {
            runner: RunnerConfig {
                workers: 2,
                idle_poll: Duration::from_millis(100),
                ..RunnerConfig::default()
            },
            reconcile_interval: None,
            metrics_interval: None,
            host_concurrency: 4,
            agent_timeout: Duration::from_secs(clawy_proto::agent::CLIENT_TIMEOUT_SECS),
            host_lease: None,
        },
    );
    wait_all(&core, &owner.id, &ids, InstanceState::Running).await;
    assert_eq!(qemu.client().list_vms().await.unwrap().vms.len(), 1);
    let pve_vms = pve.client().list_vms().await.unwrap().vms;
    assert_eq!(pve_vms.len(), 1);
    // The proxmox instance is a PVE VM from the configured range, tagged as ours.
    let sim = pve.sim.as_ref().unwrap();
    let confs: Vec<String> = std::fs::read_dir(sim.state_dir().join("qemu-server"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "9000.conf")
        .collect();
    assert_eq!(confs.len(), 1, "{confs:?}");
    let vmid: u32 = confs[0].trim_end_matches(".conf").parse().unwrap();
    assert!((700..=709).contains(&vmid), "{vmid}");
    let conf =
        std::fs::read_to_string(sim.state_dir().join("qemu-server").join(&confs[0])).unwrap();
    assert!(conf.contains("clawy"), "{conf}");

    for i in &placed {
        let i = core.instances().get(&owner.id, &i.id).await.unwrap();
        let host = if i.host_id == qemu_id { &qemu } else { &pve };
        auth_4_owner_key_lands_exactly(host, &key, i.ssh_port.unwrap(), &public).await;
    }

    // Stop and start both.
    for action in [LifecycleAction::Stop, LifecycleAction::Start] {
        for i in &placed {
            core.instances()
                .request(&caller, &owner.id, &i.id, action)
                .await
                .unwrap();
        }
        let want = if action == LifecycleAction::Stop {
            InstanceState::Stopped
        } else {
            InstanceState::Running
        };
        wait_all(&core, &owner.id, &ids, want).await;
    }

    // Delete both: no VM on either host, nothing of it left on the PVE node.
    for i in &placed {
        core.instances()
            .request(&caller, &owner.id, &i.id, LifecycleAction::Delete)
            .await
            .unwrap();
    }
    wait_all(&core, &owner.id, &ids, InstanceState::Deleted).await;
    assert!(qemu.client().list_vms().await.unwrap().vms.is_empty());
    assert!(qemu.agent.qemu_pids().is_empty());
    assert!(pve.client().list_vms().await.unwrap().vms.is_empty());
    assert!(
        !sim.state_dir()
            .join(format!("qemu-server/{vmid}.conf"))
            .exists()
    );
    assert!(!sim.state_dir().join(format!("images/{vmid}")).exists());
    let snippets: Vec<_> = std::fs::read_dir(sim.snippets_dir())
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(snippets.is_empty(), "{snippets:?}");
    orch.shutdown().await;
}
