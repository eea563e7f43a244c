//! Crash injection against the real `clawy server` process and a real agent: the
//! server aborts (`CLAWY_CRASH_POINTS`, same effect as kill -9) at every point of
//! create and delete; after a restart without the variable every job completes and
//! exactly one VM exists per live instance, none for deleted ones, the IP/port
//! allocations match what the agent runs, and the job history shows the retry. Also:
//! the AGENT killed (-9) while an instance is being created.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawy_core::Core;
use clawy_core::instances::InstanceState;
use clawy_core::jobs::{JobKind, JobState};
use clawy_orchestrator::crash::{DELETE_POINTS, PROVISION_POINTS};
use clawy_testkit::db::TestDatabase;

use crate::orchestrator_support::*;

/// A `clawy server` process, killed on drop.
struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    fn start(cfg: &Path, log: &Path, crash_point: Option<&str>) -> Server {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("server")
            .arg("--config")
            .arg(cfg)
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_DATA_DIR")
            .env_remove("CLAWY_CRASH_POINTS")
            // A crashed worker's job is taken up again after 3 s, not 60.
            .env("CLAWY_JOB_LEASE_SECS", "3")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        if let Some(p) = crash_point {
            cmd.env("CLAWY_CRASH_POINTS", p);
        }
        Server {
            child: Some(cmd.spawn().unwrap()),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process ends on its own (the crash point): SIGABRT.
    async fn wait_abort(&mut self, point: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.signal(), Some(6), "{point}: not an abort: {status}");
                assert!(self.log().contains(&format!("crash point {point} reached")));
                self.child = None;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{point} never fired; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Rig {
    core: Arc<Core>,
    host: AgentHost,
    cfg: PathBuf,
    log: PathBuf,
    base: String,
    key: String,
    owner_id: String,
    http: reqwest::Client,
    _db: TestDatabase,
}

impl Rig {
    async fn new(prefix: &str, subnet3: &str) -> Rig {
        Self::new_with(prefix, subnet3, "").await
    }

    /// Like [`Rig::new`] with more lines for the server's config file.
    async fn new_with(prefix: &str, subnet3: &str, extra_toml: &str) -> Rig {
        let db = TestDatabase::new().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = db.temp_dir().join("clawy.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\n\
                 bcrypt_cost = 4\ninsecure_test_mode = true\nbase_image = \"{}\"\n\
                 instance_quota = 20\njob_workers = 2\nreconcile_interval_secs = 3\n\
                 metrics_interval_secs = 3\n{extra_toml}",
                db.data_dir().display(),
                db.url(),
                image_name()
            ),
        )
        .unwrap();
        // The test's own view of the same database and operator key.
        let core = Arc::new(Core::open(control_config(&db)).await.unwrap());
        tiny_plan(&core).await;
        let host = AgentHost::start(
            prefix,
            subnet3,
            "22200-22299",
            "max_vcpus = 6\nmax_memory_mib = 2048\n",
        )
        .await;
        host.register(&core, "fra1", "DE", "fra1").await;
        let owner = user(&core, "owner@example.test").await;
        let key = manage_key(&core, &owner).await;
        Rig {
            log: db.temp_dir().join("server.log"),
            core,
            host,
            cfg,
            base: format!("http://127.0.0.1:{port}"),
            key,
            owner_id: owner.id,
            http: reqwest::Client::new(),
            _db: db,
        }
    }

    async fn server(&self, crash_point: Option<&str>) -> Server {
        let s = Server::start(&self.cfg, &self.log, crash_point);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up:\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create(&self, name: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/instances", self.base))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({"name": name, "plan": "tiny"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    async fn delete(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/api/v1/instances/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    async fn wait_state(&self, id: &str, want: InstanceState, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let inst = self.core.instances().get(&self.owner_id, id).await.unwrap();
            if inst.state == want
                && self
                    .core
                    .jobs()
                    .unfinished_for_instance(id)
                    .await
                    .unwrap()
                    .is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} stuck in {} ({:?}); log:\n{}",
                inst.state,
                inst.error_reason,
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Exactly one VM per live instance, none for deleted ones, and the agent runs
    /// each VM with the instance's allocated IP, MAC and SSH port.
    async fn check_invariants(&self, ctx: &str) {
        let vms = self.host.client().list_vms().await.unwrap().vms;
        let on_agent: BTreeSet<String> = vms.iter().map(|v| v.id.clone()).collect();
        assert_eq!(on_agent.len(), vms.len(), "{ctx}: duplicate VM ids");
        let page = self
            .core
            .instances()
            .list_for_owner(&self.owner_id, 500, None)
            .await
            .unwrap();
        let live: BTreeSet<String> = page.items.iter().map(|i| i.id.clone()).collect();
        assert_eq!(on_agent, live, "{ctx}: VMs on the agent vs live instances");
        let mut ips = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for inst in &page.items {
            let vm = vms.iter().find(|v| v.id == inst.id).unwrap();
            assert_eq!(Some(&vm.spec.private_ip), inst.private_ip.as_ref(), "{ctx}");
            assert_eq!(Some(&vm.spec.mac), inst.mac.as_ref(), "{ctx}");
            assert_eq!(vm.spec.port_forwards.len(), 1, "{ctx}");
            assert_eq!(
                Some(vm.spec.port_forwards[0].host_port),
                inst.ssh_port,
                "{ctx}"
            );
            assert!(
                ips.insert(vm.spec.private_ip.clone()),
                "{ctx}: IP used twice"
            );
            assert!(
                ports.insert(vm.spec.port_forwards[0].host_port),
                "{ctx}: port used twice"
            );
        }
        // QEMU processes: one per running VM, no orphan.
        let running = vms
            .iter()
            .filter(|v| v.state == clawy_proto::agent::VmState::Running)
            .count();
        assert_eq!(
            self.host.agent.qemu_pids().len(),
            running,
            "{ctx}: QEMU processes"
        );
    }

    /// The job of `kind` for `id`: (attempts, outcomes of its attempts).
    async fn job_attempts(&self, id: &str, kind: JobKind) -> (u32, Vec<String>) {
        let history = self.core.jobs().history(id).await.unwrap();
        let h = history.iter().rev().find(|h| h.job.kind == kind).unwrap();
        assert_eq!(h.job.state, JobState::Succeeded, "{:?}", h.job);
        (
            h.job.attempts,
            h.attempt_log
                .iter()
                .map(|a| a.outcome.clone().unwrap_or_default())
                .collect(),
        )
    }
}

#[tokio::test]
async fn crash_at_every_point_of_create_and_delete_leaves_one_vm_per_instance() {
    let _heavy = HEAVY.lock().await;
    let rig = Rig::new("crash", "10.82.1").await;
    for (i, point) in PROVISION_POINTS.iter().enumerate() {
        let name = format!("c{i}");
        // Create; the server dies at the point.
        let mut server = rig.server(Some(point)).await;
        let id = rig.create(&name).await;
        server.wait_abort(point).await;
        // Restart without crash points: the job completes.
        let mut server = rig.server(None).await;
        rig.wait_state(&id, InstanceState::Running, &server).await;
        rig.check_invariants(point).await;
        let (attempts, outcomes) = rig.job_attempts(&id, JobKind::Provision).await;
        if *point == "provision:after_complete" {
            assert_eq!(attempts, 1, "{point}: {outcomes:?}");
        } else {
            // The crashed attempt shows in the history, then the retry that succeeded.
            assert_eq!(outcomes, vec!["lease_expired", "succeeded"], "{point}");
        }
        server.kill();

        // Delete; the server dies at the matching delete point.
        let Some(dpoint) = DELETE_POINTS.get(i) else {
            let server = rig.server(None).await;
            rig.delete(&id).await;
            rig.wait_state(&id, InstanceState::Deleted, &server).await;
            rig.check_invariants("plain delete").await;
            continue;
        };
        let mut server = rig.server(Some(dpoint)).await;
        rig.delete(&id).await;
        server.wait_abort(dpoint).await;
        let server = rig.server(None).await;
        rig.wait_state(&id, InstanceState::Deleted, &server).await;
        rig.check_invariants(dpoint).await;
        let gone = rig.core.instances().get(&rig.owner_id, &id).await.unwrap();
        assert!(
            gone.private_ip.is_none() && gone.ssh_port.is_none() && gone.mac.is_none(),
            "{dpoint}"
        );
        let (attempts, outcomes) = rig.job_attempts(&id, JobKind::Delete).await;
        if *dpoint == "delete:after_complete" {
            assert_eq!(attempts, 1, "{dpoint}: {outcomes:?}");
        } else {
            assert_eq!(outcomes, vec!["lease_expired", "succeeded"], "{dpoint}");
        }
        drop(server);
    }
    // The freed addresses are handed out again (lowest first).
    let server = rig.server(None).await;
    let id = rig.create("again").await;
    rig.wait_state(&id, InstanceState::Running, &server).await;
    let inst = rig.core.instances().get(&rig.owner_id, &id).await.unwrap();
    assert_eq!(inst.private_ip.as_deref(), Some("10.82.1.2"));
    assert_eq!(inst.ssh_port, Some(22200));
    rig.check_invariants("after all crashes").await;
}

#[tokio::test]
async fn agent_killed_during_create_then_back_gives_one_vm() {
    let _heavy = HEAVY.lock().await;
    let mut rig = Rig::new("akill", "10.82.2").await;
    let server = rig.server(None).await;
    let id = rig.create("alpha").await;
    // kill -9 the agent right away: the job's agent calls fail (or are cut) and
    // the job backs off.
    rig.host.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = rig.core.jobs().history(&id).await.unwrap();
        if h[0]
            .attempt_log
            .iter()
            .any(|a| a.outcome.as_deref() == Some("failed"))
        {
            break;
        }
        if h[0].job.state == JobState::Succeeded {
            // The job won the race against the kill; the VM survives the agent.
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt while the agent is down:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.host.restart().await;
    rig.wait_state(&id, InstanceState::Running, &server).await;
    rig.check_invariants("agent restarted").await;
    let h = rig.core.jobs().history(&id).await.unwrap();
    if h[0].job.attempts > 1 {
        assert!(
            h[0].attempt_log
                .iter()
                .any(|a| a.outcome.as_deref() == Some("failed"))
        );
        let events = rig
            .core
            .audit()
            .list(clawy_core::audit::Scope::Instance(&id), 100, None)
            .await
            .unwrap();
        assert!(events.iter().any(|e| e.action == "job_retry"), "{events:?}");
    }
    rig.delete(&id).await;
    rig.wait_state(&id, InstanceState::Deleted, &server).await;
    rig.check_invariants("deleted").await;
}

#[tokio::test]
async fn server_kill_9_at_arbitrary_moments_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let rig = Rig::new("kill9", "10.82.3").await;
    // Requests land, then the server is killed (-9) after a varying delay, so the
    // kills fall at different steps of the jobs; each restart picks up the rest.
    let mut ids = Vec::new();
    for (round, delay_ms) in [150u64, 400, 900, 1600, 2500].into_iter().enumerate() {
        let mut server = rig.server(None).await;
        ids.push(rig.create(&format!("k{round}")).await);
        if round >= 2 {
            // Delete an older one while it may still be provisioning.
            rig.delete(&ids[round - 2]).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill();
    }
    let server = rig.server(None).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if rig.core.jobs().pending_count().await.unwrap() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never finished:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let inst = rig.core.instances().get(&rig.owner_id, id).await.unwrap();
        let want = if i + 2 < ids.len() {
            InstanceState::Deleted
        } else {
            InstanceState::Running
        };
        assert_eq!(inst.state, want, "{} ({:?})", inst.name, inst.error_reason);
    }
    rig.check_invariants("after kill -9 rounds").await;
    let mut cut = 0;
    for id in &ids {
        for h in rig.core.jobs().history(id).await.unwrap() {
            cut += h
                .attempt_log
                .iter()
                .filter(|a| a.outcome.as_deref() == Some("lease_expired"))
                .count();
        }
    }
    eprintln!("attempts cut short by kill -9 and resumed: {cut}");
    assert!(
        cut >= 1,
        "no kill landed inside a job: the test proved nothing"
    );
}

/// The server killed between "VM running" and "DNS published" (crash point
/// `provision:before_dns`), and again right after the delete completed, before the
/// record removal: after each restart the DNS pass converges (the record appears,
/// then it is gone) and nothing is left for the deleted instance. Real `clawy
/// server`, real agent and guest, real knot on a loopback port.
#[tokio::test]
async fn crash_between_vm_running_and_dns_published_converges() {
    let _heavy = HEAVY.lock().await;
    let knot = clawy_testkit::knot::Knot::start("claws.test")
        .await
        .unwrap();
    let extra = format!(
        "instances_domain = \"claws.test\"\ndns_server = \"{}\"\ndns_timeout_secs = 2\n",
        knot.addr()
    );
    let rig = Rig::new_with("dnscrash", "10.82.4", &extra).await;
    rig.core
        .dns_records()
        .set_tsig_key(
            knot.key_name(),
            &clawy_core::SecretString::from(knot.secret_b64().to_string()),
        )
        .await
        .unwrap();
    rig.core
        .dns_records()
        .set_host_addresses("fra1", Some("192.0.2.44".parse().unwrap()), None)
        .await
        .unwrap();
    let wait_a = |name: String, want: Vec<String>| {
        let knot = &knot;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = knot.kdig(&name, "A").unwrap();
                if got == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{name}: {got:?}, want {want:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };

    let point = "provision:before_dns";
    let mut server = rig.server(Some(point)).await;
    let id = rig.create("d1").await;
    server.wait_abort(point).await;
    let inst = rig.core.instances().get(&rig.owner_id, &id).await.unwrap();
    let host = inst.hostname.clone().unwrap();
    assert!(
        knot.kdig(&host, "A").unwrap().is_empty(),
        "not yet published"
    );
    let mut server = rig.server(None).await;
    rig.wait_state(&id, InstanceState::Running, &server).await;
    wait_a(host.clone(), vec!["192.0.2.44".to_string()]).await;
    let inst = rig.core.instances().get(&rig.owner_id, &id).await.unwrap();
    assert_eq!(inst.dns.state.as_deref(), Some("published"));
    rig.check_invariants(point).await;
    server.kill();

    // Killed after the delete completed, before the records were removed.
    let dpoint = "delete:after_complete";
    let mut server = rig.server(Some(dpoint)).await;
    rig.delete(&id).await;
    server.wait_abort(dpoint).await;
    assert_eq!(
        knot.kdig(&host, "A").unwrap(),
        ["192.0.2.44"],
        "still there when the server died"
    );
    let server = rig.server(None).await;
    rig.wait_state(&id, InstanceState::Deleted, &server).await;
    wait_a(host.clone(), vec![]).await;
    let gone = rig.core.instances().get(&rig.owner_id, &id).await.unwrap();
    assert_eq!(gone.dns.state.as_deref(), Some("removed"));
    rig.check_invariants("after the DNS crashes").await;
    drop(server);
}
