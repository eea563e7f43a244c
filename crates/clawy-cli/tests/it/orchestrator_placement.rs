//! Two REAL agents in two host namespaces at different locations (DE-fra1, FR-par1):
//! placement follows the location policy (DATA-2) and never overcommits (ISO-2),
//! exhaustion gives the clear `no capacity` error, and a host taken down shows its
//! instances as `unknown` until its agent answers again.

use std::sync::Arc;
use std::time::Duration;

use clawy_core::Actor;
use clawy_core::Core;
use clawy_core::DomainError;
use clawy_core::instances::{CreateInstance, InstanceState};
use clawy_orchestrator::{Orchestrator, OrchestratorConfig, RunnerConfig};
use clawy_testkit::db::TestDatabase;

use crate::orchestrator_support::*;

fn req(name: &str, region: Option<&str>) -> CreateInstance {
    CreateInstance {
        name: name.into(),
        plan: Some("tiny".into()),
        region: region.map(str::to_string),
        ssh_key_ids: vec![],
        secrets: Default::default(),
    }
}

#[tokio::test]
async fn data_2_iso_2_two_agents_placement_exhaustion_and_unknown_host() {
    let _heavy = HEAVY.lock().await;
    let db = TestDatabase::new().await.unwrap();
    // Policy: Germany only (the default).
    let core = Arc::new(Core::open(control_config(&db)).await.unwrap());
    tiny_plan(&core).await;
    let caps = "max_vcpus = 2\nmax_memory_mib = 1024\n";
    let de = AgentHost::start("pl-de", "10.83.1", "22300-22399", caps).await;
    let mut fr = AgentHost::start("pl-fr", "10.83.2", "22400-22499", caps).await;
    let de_id = de.register(&core, "fra1", "DE", "fra1").await;
    let fr_id = fr.register(&core, "par1", "FR", "par1").await;
    let owner = user(&core, "owner@example.test").await;
    let caller = Actor::system();

    // DE fills up to its 2 vCPUs; the free French host is never used (DATA-2).
    let a = core
        .instances()
        .create(&caller, &owner.id, req("a", None))
        .await
        .unwrap();
    let b = core
        .instances()
        .create(&caller, &owner.id, req("b", Some("DE")))
        .await
        .unwrap();
    assert_eq!(
        (a.host_id.as_str(), b.host_id.as_str()),
        (de_id.as_str(), de_id.as_str())
    );
    assert_ne!(a.private_ip, b.private_ip);
    assert_ne!(a.ssh_port, b.ssh_port);
    let full = core
        .instances()
        .create(&caller, &owner.id, req("c", None))
        .await
        .unwrap_err();
    assert_eq!(full.code(), "no_capacity");
    assert!(
        full.to_string()
            .contains("no capacity in region DE for plan tiny"),
        "{full}"
    );
    let refused = core
        .instances()
        .create(&caller, &owner.id, req("c", Some("FR")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "region_not_allowed");

    // The operator allows France: the same request lands on the French host.
    let mut cfg = control_config(&db);
    cfg.allowed_countries = vec!["DE".into(), "FR".into()];
    let core2 = Arc::new(Core::open(cfg).await.unwrap());
    let c = core2
        .instances()
        .create(&caller, &owner.id, req("c", Some("FR")))
        .await
        .unwrap();
    assert_eq!(c.host_id, fr_id);
    assert_eq!(c.private_ip.as_deref(), Some("10.83.2.2"));
    core2
        .instances()
        .create(&caller, &owner.id, req("d", Some("FR")))
        .await
        .unwrap();
    let err = core2
        .instances()
        .create(&caller, &owner.id, req("e", Some("FR")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no capacity in region FR for plan tiny"),
        "{err}"
    );

    // Bring them all up, then take the French host down.
    let orch = Orchestrator::start(
        core2.clone(),
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
    wait_for("all four running", Duration::from_secs(240), || async {
        let page = core2
            .instances()
            .list_for_owner(&owner.id, 10, None)
            .await
            .unwrap();
        for i in &page.items {
            assert_ne!(i.state, InstanceState::Error, "{:?}", i.error_reason);
        }
        page.items
            .iter()
            .all(|i| i.state == InstanceState::Running)
            .then_some(())
    })
    .await;
    assert_eq!(de.client().list_vms().await.unwrap().vms.len(), 2);
    assert_eq!(fr.client().list_vms().await.unwrap().vms.len(), 2);

    fr.kill();
    let r = orch.reconciler.reconcile_once().await.unwrap();
    assert_eq!((r.hosts, r.hosts_unreachable), (2, 1), "{r:?}");
    let page = core2
        .instances()
        .list_for_owner(&owner.id, 10, None)
        .await
        .unwrap();
    for i in &page.items {
        let want = if i.host_id == fr_id {
            "unknown"
        } else {
            "running"
        };
        assert_eq!(i.reported_state(), want, "{}", i.name);
        if i.host_id == fr_id {
            assert!(i.host_last_contact_at.is_some());
        }
    }
    let fr_host = core2.hosts().get(&fr_id).await.unwrap();
    assert!(!fr_host.reachable && fr_host.last_error.is_some());

    fr.restart().await;
    let r = orch.reconciler.reconcile_once().await.unwrap();
    assert_eq!(r.hosts_unreachable, 0, "{r:?}");
    let page = core2
        .instances()
        .list_for_owner(&owner.id, 10, None)
        .await
        .unwrap();
    assert!(page.items.iter().all(|i| i.reported_state() == "running"));
    orch.shutdown().await;
}
