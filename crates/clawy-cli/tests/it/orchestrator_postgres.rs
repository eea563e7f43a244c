//! PostgreSQL only (`CLAWY_TEST_DB=postgres`): TWO real `clawy server` processes on
//! one database take 50 creates through the API (alternating between them) and no
//! job runs twice: each job has exactly one attempt and the agent saw exactly one
//! `ensure` per VM. The agent here is the in-process FAKE
//! (`clawy_testkit::fake_agent`): 50 real TCG guests would need ~13 GB of RAM
//! and minutes of boot on these machines, and this test is about job claiming.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawy_core::Core;
use clawy_core::instances::InstanceState;
use clawy_proto::agent::Resources;
use clawy_testkit::db::{TestBackend, TestDatabase};
use clawy_testkit::fake_agent::FakeAgent;

use crate::orchestrator_support::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(cfg: &Path, log: &Path) -> Proc {
    let err = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .arg("server")
            .arg("--config")
            .arg(cfg)
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_DATA_DIR")
            .env_remove("CLAWY_CRASH_POINTS")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn postgres_only_two_server_processes_never_run_a_job_twice() {
    clawy_testkit::db::require_backend(TestBackend::Postgres);
    let db = TestDatabase::new().await.unwrap();
    let mut config = control_config(&db);
    config.instance_quota = 100;
    let core = Core::open(config).await.unwrap();
    tiny_plan(&core).await;
    let caps = Resources {
        vcpus: 256,
        memory_mib: 1 << 20,
        disk_gib: 1 << 16,
    };
    let agent = FakeAgent::start("DE-fra1", caps, "10.84.1", [22000, 22999])
        .await
        .unwrap();
    let host = core
        .hosts()
        .register(
            &clawy_core::Actor::system(),
            clawy_core::hosts::RegisterHost {
                name: "fra1".into(),
                url: agent.base_url.clone(),
                fingerprint: agent.fingerprint.clone(),
                token: clawy_core::SecretString::from(agent.token.clone()),
                region: "DE".into(),
                site: "fra1".into(),
                enabled: true,
            },
        )
        .await
        .unwrap();
    let client =
        clawy_agent_client::AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token)
            .unwrap();
    core.hosts()
        .update_info(&host.id, &client.host().await.unwrap())
        .await
        .unwrap();
    let owner = user(&core, "owner@example.test").await;
    let key = manage_key(&core, &owner).await;

    let mut bases = Vec::new();
    let mut procs = Vec::new();
    for n in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = db.temp_dir().join(format!("clawy-{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\n\
                 bcrypt_cost = 4\ninsecure_test_mode = true\nbase_image = \"{}\"\n\
                 instance_quota = 100\njob_workers = 4\n",
                db.data_dir().display(),
                db.url(),
                image_name()
            ),
        )
        .unwrap();
        procs.push(start_server(
            &cfg,
            &db.temp_dir().join(format!("server-{n}.log")),
        ));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let http = reqwest::Client::new();
    for base in &bases {
        wait_for("server up", Duration::from_secs(60), || async {
            let r = http.get(format!("{base}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = http
            .post(format!("{}/api/v1/instances", bases[i % 2]))
            .bearer_auth(&key)
            .json(&serde_json::json!({"name": format!("vm-{i}"), "plan": "tiny"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let page = core
            .instances()
            .list_for_owner(&owner.id, 100, None)
            .await
            .unwrap();
        if page
            .items
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count()
            == 50
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all 50 running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counters = agent.counters();
    let mut workers = HashSet::new();
    for id in &ids {
        let history = core.jobs().history(id).await.unwrap();
        assert_eq!(history.len(), 1, "{id}");
        assert_eq!(history[0].job.attempts, 1, "{id}: {:?}", history[0]);
        assert_eq!(history[0].attempt_log.len(), 1);
        // worker = <host>-<pid>-<rand>/<n>: the process part.
        let w = &history[0].attempt_log[0].worker;
        workers.insert(w.rsplit_once('/').unwrap().0.to_string());
        assert_eq!(counters.ensure_calls.get(id), Some(&1), "{id}");
        assert_eq!(counters.creates.get(id), Some(&1), "{id}");
    }
    assert_eq!(
        workers.len(),
        2,
        "both server processes ran jobs: {workers:?}"
    );
    assert_eq!(agent.vm_ids().len(), 50);
    drop(procs);
}
