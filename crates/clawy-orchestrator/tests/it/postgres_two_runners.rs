//! PostgreSQL only (`CLAWY_TEST_DB=postgres`): two orchestrators with their own pools
//! (as two server processes would have) run 50 creates against one database and no
//! job runs twice (`FOR UPDATE SKIP LOCKED` claims). Agent: the in-process fake, so
//! the test measures the claim logic rather than 50 TCG boots; it counts every ensure
//! call per VM id.

use std::sync::Arc;
use std::time::Duration;

use clawy_core::config::ServerConfig;
use clawy_core::instances::InstanceState;
use clawy_core::{Core, SystemClock};
use clawy_orchestrator::JobRunner;
use clawy_orchestrator::clients::AgentClients;
use clawy_testkit::db::{TestBackend, TestDatabase};

use crate::common::{Fixture, fake, runner_config};

#[tokio::test]
async fn postgres_only_two_orchestrators_never_run_a_job_twice() {
    clawy_testkit::db::require_backend(TestBackend::Postgres);
    let db = TestDatabase::new().await.unwrap();
    let mut config = ServerConfig::for_tests(&db.data_dir(), db.url());
    config.instance_quota = 100;
    let f = Fixture::with_config(db, config.clone()).await;
    let agent = fake("DE-fra1", "10.92.1").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(f.create(&user, &format!("vm-{i}")).await.id);
    }
    // Two independent "processes": separate Core (pool) each, real clock, 4 workers.
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for p in 0..2 {
        let core = Arc::new(
            Core::open_with_clock(config.clone(), Arc::new(SystemClock))
                .await
                .unwrap(),
        );
        let clients = Arc::new(AgentClients::new(core.clone(), Duration::from_secs(5)));
        let mut rc = runner_config(&format!("proc{p}"));
        rc.workers = 4;
        let runner = Arc::new(JobRunner::new(core, clients, rc));
        let (tx, rx) = tokio::sync::watch::channel(false);
        handles.extend(runner.spawn(rx));
        stops.push(tx);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let running = f
            .count("SELECT COUNT(*) FROM instances WHERE state = 'running'")
            .await;
        if running == 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {running} of 50 running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in stops {
        s.send(true).unwrap();
    }
    for h in handles {
        h.await.unwrap();
    }
    // Exactly one attempt per job, one ensure (and one create) per VM.
    assert_eq!(
        f.count("SELECT COUNT(*) FROM jobs WHERE attempts <> 1")
            .await,
        0
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM job_attempts").await, 50);
    let workers = f
        .count("SELECT COUNT(DISTINCT substr(worker, 1, 5)) FROM job_attempts")
        .await;
    assert_eq!(workers, 2, "both processes took jobs");
    let c = agent.counters();
    for id in &ids {
        assert_eq!(c.ensure_calls.get(id), Some(&1), "{id}");
        assert_eq!(c.creates.get(id), Some(&1), "{id}");
        let inst = f.core.instances().get_any(id).await.unwrap();
        assert_eq!(inst.state, InstanceState::Running);
    }
}
