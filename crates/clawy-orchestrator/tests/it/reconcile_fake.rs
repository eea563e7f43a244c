//! The reconciler against the fake agent: restart what should run, re-apply port
//! forwards, flag unknown VMs (never delete them), re-provision a vanished VM, and
//! report an unreachable host's instances as `unknown` until it answers again.

use clawy_core::Clock as _;
use clawy_core::instances::InstanceState;
use clawy_proto::agent::{PortForward, Protocol, VmState};

use crate::common::{Fixture, fake};

#[tokio::test]
async fn reconciler_restarts_a_stopped_vm_that_should_run() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.1").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    let runner = f.runner("t");
    f.drain(&runner).await;
    let rec = f.reconciler();
    // Nothing to do while everything matches.
    let r = rec.reconcile_once().await.unwrap();
    assert_eq!(
        (r.starts_enqueued, r.vanished, r.forwards_reapplied),
        (0, 0, 0),
        "{r:?}"
    );

    agent.set_vm_state(&inst.id, VmState::Crashed);
    let r = rec.reconcile_once().await.unwrap();
    assert_eq!(r.starts_enqueued, 1, "{r:?}");
    // The job is pending: a second pass does not enqueue another.
    let r = rec.reconcile_once().await.unwrap();
    assert_eq!((r.starts_enqueued, r.skipped_busy), (0, 1), "{r:?}");
    f.drain(&runner).await;
    assert_eq!(agent.vm(&inst.id).unwrap().state, VmState::Running);
    let events = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    let repaired = events
        .iter()
        .find(|e| e.action == "instance_repaired")
        .unwrap();
    assert_eq!(repaired.actor, "reconciler");
    assert!(repaired.detail.contains("crashed"), "{repaired:?}");
}

#[tokio::test]
async fn net_5_reconciler_reapplies_port_forwards() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.2").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    f.drain(&f.runner("t")).await;
    agent.set_port_forwards(
        &inst.id,
        vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: 8080,
            guest_port: 80,
        }],
    );
    let r = f.reconciler().reconcile_once().await.unwrap();
    assert_eq!(r.forwards_reapplied, 1, "{r:?}");
    let fwd = agent.vm(&inst.id).unwrap().spec.port_forwards;
    assert_eq!(fwd.len(), 1);
    assert_eq!((fwd[0].host_port, fwd[0].guest_port), (22000, 22));
}

#[tokio::test]
async fn reconciler_flags_unknown_vm_once_and_leaves_it() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.3").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    f.drain(&f.runner("t")).await;
    let mut stray = agent.vm(&inst.id).unwrap().spec;
    stray.hostname = "stray".into();
    agent.insert_vm("stray-vm", stray, VmState::Running);
    let rec = f.reconciler();
    let r = rec.reconcile_once().await.unwrap();
    assert_eq!(r.unknown_vms.len(), 1, "{r:?}");
    assert_eq!(r.unknown_vms[0].1, "stray-vm");
    let r = rec.reconcile_once().await.unwrap();
    assert!(r.unknown_vms.is_empty(), "flagged once: {r:?}");
    assert!(
        agent.vm("stray-vm").is_some(),
        "an unknown VM is never deleted"
    );
    let all = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::All, 100, None)
        .await
        .unwrap();
    let flag = all
        .iter()
        .find(|e| e.action == "instance_drift_detected" && e.detail.contains("stray-vm"))
        .unwrap();
    assert_eq!(flag.actor, "reconciler");
}

#[tokio::test]
async fn reconciler_reprovisions_a_vanished_vm_and_says_so() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.4").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    let runner = f.runner("t");
    f.drain(&runner).await;
    agent.remove_vm(&inst.id);
    let r = f.reconciler().reconcile_once().await.unwrap();
    assert_eq!(r.vanished, 1, "{r:?}");
    f.drain(&runner).await;
    let vm = agent.vm(&inst.id).unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.spec.private_ip, "10.91.4.2", "same allocation");
    let events = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "instance_drift_detected" && e.detail.contains("vanished"))
    );
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Running
    );
}

#[tokio::test]
async fn unreachable_host_shows_unknown_and_recovers() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.5").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    f.drain(&f.runner("t")).await;
    let rec = f.reconciler();
    rec.reconcile_once().await.unwrap();
    let before = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(before.reported_state(), "running");
    let contact = before.host_last_contact_at.unwrap();

    agent.set_down(true);
    f.clock.advance(std::time::Duration::from_secs(30));
    let r = rec.reconcile_once().await.unwrap();
    assert_eq!(r.hosts_unreachable, 1);
    let during = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(during.reported_state(), "unknown");
    assert_eq!(
        during.host_last_contact_at,
        Some(contact),
        "last contact kept"
    );
    assert_eq!(
        during.state,
        InstanceState::Running,
        "stored state untouched"
    );

    agent.set_down(false);
    rec.reconcile_once().await.unwrap();
    let after = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(after.reported_state(), "running");
    assert!(after.host_last_contact_at.unwrap() > contact);
}

#[tokio::test]
async fn access_1_poller_stores_samples_health_and_host_info() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.6").await;
    let host_id = f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    f.drain(&f.runner("t")).await;
    let poller = clawy_orchestrator::Poller::new(f.core.clone(), f.clients.clone(), 4);
    let r = poller.poll_once().await.unwrap();
    assert_eq!((r.hosts, r.samples), (1, 1), "{r:?}");
    let h = f
        .core
        .metrics()
        .latest_health(&inst.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((h.tcp_ok, h.http_status), (Some(true), Some(200)));
    assert_eq!(h.vm_state.as_deref(), Some("running"));
    // A second poll a minute later adds a sample and replaces the health row.
    f.clock.advance(std::time::Duration::from_secs(60));
    agent.set_vm_state(&inst.id, VmState::Stopped);
    poller.poll_once().await.unwrap();
    let h = f
        .core
        .metrics()
        .latest_health(&inst.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((h.tcp_ok, h.vm_state.as_deref()), (None, Some("stopped")));
    assert_eq!(f.core.metrics().row_counts(&inst.id).await.unwrap().0, 2);
    // Host info refreshed (capacity from the agent).
    let host = f.core.hosts().get(&host_id).await.unwrap();
    assert_eq!(host.capacity.vcpus, 64);
    assert!(host.reachable);
}

fn heartbeat(age_secs: u64) -> clawy_proto::heartbeat::ReceivedHeartbeat {
    let facts: clawy_proto::heartbeat::Heartbeat = serde_json::from_str(
        r#"{"v":1,"image":"clawy-openclaw-2026.9.6-1","boot_id":"unknown","booted_at":"2026-11-30T20:00:00Z","sent_at":"2026-11-30T20:01:30Z","config_applied":true,"cloud_init":"done","services":{"openclaw_gateway":{"state":"active","ready":true},"sshd":{"state":"active"},"ufw":{"state":"active","default_incoming":"deny"},"fail2ban":{"state":"failed","jails":[]}}}"#,
    )
    .unwrap();
    clawy_proto::heartbeat::ReceivedHeartbeat {
        received_at: "2026-11-30T20:01:30Z".into(),
        age_secs,
        facts,
    }
}

/// ACCESS-1: the poller stores the heartbeat dated by the control plane's clock
/// (minus the age the agent measured); each service shows with its state and age,
/// and a heartbeat older than three intervals shows every service as unknown.
/// DATA-5: once the agent reports the secrets delivered, the poll erases the
/// sealed copy (one erase path, idempotent, repeated by every later poll).
#[tokio::test]
async fn access_1_data_5_poller_stores_heartbeats_and_erases_delivered_secrets() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.91.7").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    f.drain(&f.runner("t")).await;
    let secrets = f.core.guest_secrets();
    assert!(secrets.pending(&inst.id).await.unwrap().is_some());
    let poller = clawy_orchestrator::Poller::new(f.core.clone(), f.clients.clone(), 4);

    // A heartbeat, not yet delivered: stored, the sealed copy stays.
    agent.set_guest_report(&inst.id, Some(heartbeat(5)), false);
    poller.poll_once().await.unwrap();
    let t0 = f.clock.now();
    let h = f
        .core
        .metrics()
        .latest_health(&inst.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.heartbeat_at, Some(t0 - chrono::Duration::seconds(5)));
    let states = |h: &clawy_core::instances::InstanceHealth,
                  now|
     -> Vec<(&'static str, &'static str, Option<u64>)> {
        h.services(now)
            .into_iter()
            .map(|s| (s.name, s.state, s.age_secs))
            .collect()
    };
    assert_eq!(
        states(&h, t0),
        [
            ("openclaw_gateway", "ok", Some(5)),
            ("sshd", "ok", Some(5)),
            ("ufw", "ok", Some(5)),
            ("fail2ban", "down", Some(5)),
        ]
    );
    assert!(secrets.pending(&inst.id).await.unwrap().is_some());
    assert!(secrets.delivered_at(&inst.id).await.unwrap().is_none());

    // Stale: three intervals (90 s) is the limit; beyond it nothing is healthy.
    f.clock.advance(std::time::Duration::from_secs(85));
    let inst_now = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    let h = inst_now.health.unwrap();
    assert_eq!(states(&h, f.clock.now())[1], ("sshd", "ok", Some(90)));
    f.clock.advance(std::time::Duration::from_secs(1));
    assert!(
        states(&h, f.clock.now())
            .iter()
            .all(|(_, state, age)| *state == "unknown" && *age == Some(91)),
        "{:?}",
        states(&h, f.clock.now())
    );
    // A poll without a heartbeat (an agent restart) keeps the stored one.
    agent.set_guest_report(&inst.id, None, false);
    poller.poll_once().await.unwrap();
    let h = f
        .core
        .metrics()
        .latest_health(&inst.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.heartbeat_at, Some(t0 - chrono::Duration::seconds(5)));

    // Delivered: the sealed copy is erased, the time recorded; later polls are no-ops.
    let sealed: String =
        sqlx::query_scalar("SELECT sealed FROM instance_guest_secrets WHERE instance_id = $1")
            .bind(&inst.id)
            .fetch_one(f.core.store().pool())
            .await
            .unwrap();
    agent.set_guest_report(&inst.id, Some(heartbeat(1)), true);
    poller.poll_once().await.unwrap();
    assert!(secrets.pending(&inst.id).await.unwrap().is_none());
    let at = secrets.delivered_at(&inst.id).await.unwrap();
    assert_eq!(at, Some(f.clock.now().timestamp_millis()));
    f.clock.advance(std::time::Duration::from_secs(30));
    poller.poll_once().await.unwrap();
    assert_eq!(secrets.delivered_at(&inst.id).await.unwrap(), at);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instance_guest_secrets")
        .fetch_one(f.core.store().pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    // SQLite: not even in the file's free pages or the WAL (secure_delete and a
    // checkpoint after the erase).
    if let Some(db) = f.db.sqlite_path() {
        let needle = &sealed.as_bytes()[..32];
        for file in [
            db.clone(),
            std::path::PathBuf::from(format!("{}-wal", db.display())),
        ] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the sealed copy is still in {}",
                file.display()
            );
        }
    }
}
