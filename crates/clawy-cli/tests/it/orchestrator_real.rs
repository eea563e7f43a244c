//! The orchestrator against a REAL agent with a real TCG guest, in throwaway network
//! namespaces: provision → running and healthy (the runner's gateway probe),
//! stop/start/reboot, the reconciler restarting a VM killed behind its back (kill -9
//! of QEMU), flagging a VM the database does not know, showing an unreachable host's
//! instance as `unknown` and recovering, and delete freeing the allocations (ISO-4).

use std::sync::Arc;
use std::time::Duration;

use clawy_core::Actor;
use clawy_core::Core;
use clawy_core::instances::{CreateInstance, InstanceState};
use clawy_orchestrator::{Orchestrator, OrchestratorConfig, RunnerConfig};
use clawy_proto::agent::VmState;
use clawy_testkit::db::TestDatabase;

use crate::orchestrator_support::*;

async fn state_of(core: &Core, owner: &str, id: &str) -> InstanceState {
    core.instances().get(owner, id).await.unwrap().state
}

async fn wait_state(core: &Core, owner: &str, id: &str, want: InstanceState) {
    wait_for(
        &format!("instance {want}"),
        Duration::from_secs(120),
        || async {
            let s = state_of(core, owner, id).await;
            assert_ne!(
                s,
                InstanceState::Error,
                "instance went to error: {:?}",
                core.instances().get(owner, id).await.unwrap().error_reason
            );
            (s == want).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn iso_4_orchestrator_drives_a_real_guest_and_reconciles_drift() {
    let _heavy = HEAVY.lock().await;
    let db = TestDatabase::new().await.unwrap();
    let core = Arc::new(Core::open(control_config(&db)).await.unwrap());
    tiny_plan(&core).await;
    // Room for the instance and one stray VM (the agent refuses more: ISO-2).
    let mut host = AgentHost::start(
        "orch",
        "10.81.1",
        "22100-22199",
        "max_vcpus = 2\nmax_memory_mib = 1024\n",
    )
    .await;
    let host_id = host.register(&core, "fra1", "DE", "fra1").await;
    let owner = user(&core, "owner@example.test").await;

    let config = OrchestratorConfig {
        runner: RunnerConfig {
            workers: 2,
            lease: Duration::from_secs(20),
            idle_poll: Duration::from_millis(100),
            ..RunnerConfig::default()
        },
        reconcile_interval: None,
        metrics_interval: None,
        host_concurrency: 4,
        agent_timeout: Duration::from_secs(clawy_proto::agent::CLIENT_TIMEOUT_SECS),
        host_lease: None,
    };
    let orch = Orchestrator::start(core.clone(), config);
    let caller = Actor::system();

    // Provision → running; the guest answers on its gateway port (health via poller).
    let inst = core
        .instances()
        .create(
            &caller,
            &owner.id,
            CreateInstance {
                name: "alpha".into(),
                plan: Some("tiny".into()),
                region: None,
                ssh_key_ids: vec![],
                secrets: Default::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(inst.host_id, host_id);
    wait_state(&core, &owner.id, &inst.id, InstanceState::Running).await;
    let client = host.client();
    let vm = client.get_vm(&inst.id).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(Some(vm.spec.private_ip.clone()), inst.private_ip);
    assert_eq!(vm.spec.port_forwards[0].host_port, inst.ssh_port.unwrap());
    // ACCESS-1: the runner probes the gateway right after the start, so health shows
    // as soon as the guest answers — the metrics poller is off in this test.
    wait_for("a healthy gateway", Duration::from_secs(120), || async {
        let h = core.metrics().latest_health(&inst.id).await.unwrap()?;
        (h.tcp_ok == Some(true) && h.http_status == Some(200)).then_some(())
    })
    .await;
    orch.poller.poll_once().await.unwrap();
    let (raw, _) = core.metrics().row_counts(&inst.id).await.unwrap();
    assert!(raw >= 1, "the poller stored samples");

    // Stop, start, reboot through jobs.
    core.instances()
        .request(
            &caller,
            &owner.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Stop,
        )
        .await
        .unwrap();
    wait_state(&core, &owner.id, &inst.id, InstanceState::Stopped).await;
    assert!(host.agent.qemu_pids().is_empty());
    core.instances()
        .request(
            &caller,
            &owner.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Start,
        )
        .await
        .unwrap();
    wait_state(&core, &owner.id, &inst.id, InstanceState::Running).await;
    core.instances()
        .request(
            &caller,
            &owner.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Reboot,
        )
        .await
        .unwrap();
    wait_for(
        "the reboot job to finish",
        Duration::from_secs(120),
        || async {
            core.jobs()
                .unfinished_for_instance(&inst.id)
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        state_of(&core, &owner.id, &inst.id).await,
        InstanceState::Running
    );

    // kill -9 QEMU behind the control plane's back: the reconciler restarts it.
    let (_, pid) = host.agent.qemu_pids()[0].clone();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let report = wait_for(
        "the reconciler to see the crash",
        Duration::from_secs(30),
        || async {
            let r = orch.reconciler.reconcile_once().await.unwrap();
            (r.starts_enqueued == 1).then_some(r)
        },
    )
    .await;
    assert_eq!(report.hosts_unreachable, 0);
    wait_for("a new QEMU", Duration::from_secs(120), || async {
        let pids = host.agent.qemu_pids();
        (pids.len() == 1 && pids[0].1 != pid).then_some(())
    })
    .await;
    wait_for(
        "the start job to finish",
        Duration::from_secs(120),
        || async {
            core.jobs()
                .unfinished_for_instance(&inst.id)
                .await
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        client.get_vm(&inst.id).await.unwrap().state,
        VmState::Running
    );
    let events = core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "instance_repaired" && e.actor == "reconciler"),
        "{events:?}"
    );

    // A VM the database does not know: flagged, never deleted.
    let mut stray = vm.spec.clone();
    stray.private_ip = "10.81.1.200".into();
    stray.mac = "52:54:00:81:01:c8".into();
    stray.hostname = "stray".into();
    stray.port_forwards.clear();
    client.ensure_vm("stray-vm", &stray).await.unwrap();
    let r = orch.reconciler.reconcile_once().await.unwrap();
    assert_eq!(r.unknown_vms.len(), 1, "{r:?}");
    assert!(
        client.get_vm("stray-vm").await.is_ok(),
        "the unknown VM is left alone"
    );
    client.delete_vm("stray-vm").await.unwrap();

    // The agent dies: the instance is reported `unknown` with the last contact time.
    host.kill();
    let r = orch.reconciler.reconcile_once().await.unwrap();
    assert_eq!(r.hosts_unreachable, 1);
    let during = core.instances().get(&owner.id, &inst.id).await.unwrap();
    assert_eq!(during.reported_state(), "unknown");
    assert!(during.host_last_contact_at.is_some());
    host.restart().await;
    let r = orch.reconciler.reconcile_once().await.unwrap();
    assert_eq!(r.hosts_unreachable, 0);
    let after = core.instances().get(&owner.id, &inst.id).await.unwrap();
    assert_eq!(
        after.reported_state(),
        "running",
        "the re-adopted VM kept running"
    );

    // Delete: the VM, its disk and its allocations are gone (ISO-4).
    core.instances()
        .request(
            &caller,
            &owner.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Delete,
        )
        .await
        .unwrap();
    wait_state(&core, &owner.id, &inst.id, InstanceState::Deleted).await;
    let gone = core.instances().get(&owner.id, &inst.id).await.unwrap();
    assert!(gone.private_ip.is_none() && gone.ssh_port.is_none());
    assert!(client.list_vms().await.unwrap().vms.is_empty());
    assert!(host.agent.qemu_pids().is_empty());
    assert!(!host.agent.state_dir().join("vms").join(&inst.id).exists());

    orch.shutdown().await;
}
