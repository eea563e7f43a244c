//! PostgreSQL only (`CLAWY_TEST_DB=postgres`): THREE real `clawy server` processes
//! (the release path: `clawy server --config`, host leases on through
//! `CLAWY_HOST_LEASE_SECS`) on one database share 200 hosts. One is killed with
//! SIGKILL (no goodbye: its leases just stop being renewed). The poll records (every
//! poll writes one sample per instance; one instance per host) must show: every host
//! polled while all three run, the killed replica's hosts polled again by the others
//! within one lease period (+ one refresh, one interval and slack for a loaded
//! machine), no host polled twice in an interval, none left unpolled.
//!
//! The agents are the in-process FAKE (`clawy_testkit::fake_agent`): 200 real hosts
//! cannot run here, and this test is about how the replicas share them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clawy_core::config::ServerConfig;
use clawy_core::{Actor, Core, SecretString};
use clawy_proto::agent::{PortForward, Protocol, Resources, VmSpec, VmState};
use clawy_testkit::db::{TestBackend, TestDatabase};
use clawy_testkit::fake_agent::FakeAgent;
use sqlx::Row;

use crate::orchestrator_support::*;

const HOSTS: usize = 200;
const REPLICAS: usize = 3;
const INTERVAL_MS: i64 = 2_000;
const LEASE_SECS: i64 = 3;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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
            .env("CLAWY_HOST_LEASE_SECS", LEASE_SECS.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap(),
    )
}

/// (host id, poll time) of every poll up to `until`.
async fn polls(core: &Core, until: i64) -> BTreeMap<String, Vec<i64>> {
    let rows = sqlx::query(
        "SELECT i.host_id, s.at FROM metric_samples s JOIN instances i ON i.id = s.instance_id \
         WHERE s.at <= $1 ORDER BY i.host_id, s.at",
    )
    .bind(until)
    .fetch_all(core.store().pool())
    .await
    .unwrap();
    let mut by_host: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        by_host
            .entry(r.get::<String, _>("host_id"))
            .or_default()
            .push(r.get::<i64, _>("at"));
    }
    by_host
}

/// (owner, host) of every live lease.
async fn leases(core: &Core) -> Vec<(String, String)> {
    sqlx::query("SELECT owner, host_id FROM host_leases WHERE lease_until >= $1")
        .bind(now_ms())
        .fetch_all(core.store().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>("owner"), r.get::<String, _>("host_id")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_host_leases_real_server_processes_share_hosts_and_take_over_from_a_killed_one()
 {
    clawy_testkit::db::require_backend(TestBackend::Postgres);
    let db = TestDatabase::new().await.unwrap();
    let mut config = ServerConfig::for_tests(&db.data_dir(), db.url());
    config.base_image = "fake".into();
    let core = Core::open(config).await.unwrap();
    let caps = Resources {
        vcpus: 256,
        memory_mib: 1 << 20,
        disk_gib: 1 << 16,
    };
    let owner = user(&core, "fleet@example.test").await;
    let plan = core.plans().get("small").await.unwrap();
    let mut agents = Vec::new();
    let mut hosts = Vec::new();
    for h in 0..HOSTS {
        let subnet = format!("10.{}.{}", 100 + h / 256, h % 256);
        let agent = FakeAgent::start(&format!("DE-r{h}"), caps, &subnet, [22000, 22999])
            .await
            .unwrap();
        let host = core
            .hosts()
            .register(
                &Actor::system(),
                clawy_core::hosts::RegisterHost {
                    name: format!("r{h}"),
                    url: agent.base_url.clone(),
                    fingerprint: agent.fingerprint.clone(),
                    token: SecretString::from(agent.token.clone()),
                    region: "DE".into(),
                    site: format!("r{h}"),
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
        // One running instance (valid allocation) and its VM on the fake.
        let id = uuid::Uuid::new_v4().to_string();
        let ip = format!("{subnet}.2");
        let mac = format!("52:54:00:01:{:02x}:{:02x}", h >> 8, h & 0xff);
        let now = core.now_ms();
        sqlx::query(
            "INSERT INTO instances (id, owner_id, name, plan_id, plan_name, vcpus, memory_mib, disk_gib, \
             region, host_id, private_ip, mac, ssh_port, base_image, state, error_reason, desired_power, \
             created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'DE', $9, $10, $11, \
             22000, 'fake', 'running', NULL, 'running', $12, $12, NULL)",
        )
        .bind(&id)
        .bind(&owner.id)
        .bind(format!("vm-{h}"))
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(i64::from(plan.vcpus))
        .bind(plan.memory_mib as i64)
        .bind(plan.disk_gib as i64)
        .bind(&host.id)
        .bind(&ip)
        .bind(&mac)
        .bind(now)
        .execute(core.store().pool())
        .await
        .unwrap();
        agent.insert_vm(
            &id,
            VmSpec {
                vcpus: plan.vcpus,
                memory_mib: plan.memory_mib,
                disk_gib: plan.disk_gib,
                base_image: "fake".into(),
                mac,
                private_ip: ip,
                hostname: format!("vm-{h}"),
                ssh_authorized_keys: vec![],
                user_data: None,
                port_forwards: vec![PortForward {
                    protocol: Protocol::Tcp,
                    host_port: 22000,
                    guest_port: 22,
                }],
                public_hostname: None,
            },
            VmState::Running,
        );
        hosts.push(host.id);
        agents.push(agent);
    }

    let started = now_ms();
    let mut procs = Vec::new();
    for n in 0..REPLICAS {
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
                 bcrypt_cost = 4\ninsecure_test_mode = true\nbase_image = \"fake\"\n\
                 job_workers = 1\nmetrics_interval_secs = {}\nreconcile_interval_secs = 2\n",
                db.data_dir().display(),
                db.url(),
                INTERVAL_MS / 1000
            ),
        )
        .unwrap();
        procs.push(start_server(
            &cfg,
            &db.temp_dir().join(format!("server-{n}.log")),
        ));
    }

    // All three share the hosts, fairly (⌈200 / 3⌉ = 67 at most each). The first
    // replica up holds more until the others appear; each renewal hands back what
    // is above the fair share, so fairness comes within a few lease periods.
    let per_owner = |l: &[(String, String)]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for (o, _) in l {
            *m.entry(o.clone()).or_default() += 1;
        }
        m
    };
    wait_for(
        "three replicas holding fair shares of all hosts",
        Duration::from_secs(60),
        || async {
            let l = leases(&core).await;
            let shares = per_owner(&l);
            (shares.len() == REPLICAS
                && l.len() == HOSTS
                && shares.values().all(|n| *n <= HOSTS.div_ceil(REPLICAS)))
            .then_some(())
        },
    )
    .await;
    // Every host polled by then or within the next interval(s).
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS as u64)).await;

    // SIGKILL the first replica. Its replica id is `<hostname>-<pid>-<random>`.
    let victim_pid = procs[0].0.id();
    let before = leases(&core).await;
    let victim = before
        .iter()
        .map(|(o, _)| o.clone())
        .find(|o| o.contains(&format!("-{victim_pid}-")))
        .expect("the first replica holds leases");
    let victim_hosts: HashSet<String> = before
        .iter()
        .filter(|(o, _)| *o == victim)
        .map(|(_, h)| h.clone())
        .collect();
    assert!(!victim_hosts.is_empty());
    procs[0].0.kill().unwrap(); // SIGKILL
    procs[0].0.wait().unwrap();
    let killed = now_ms();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = now_ms();

    // The survivors hold every host now; the dead replica holds none.
    let after = leases(&core).await;
    assert_eq!(after.len(), HOSTS, "every host leased after the kill");
    assert!(
        after.iter().all(|(o, _)| *o != victim),
        "the killed replica still holds leases"
    );
    drop(procs); // SIGKILL the others too: the window to judge is [started, end]

    let by_host = polls(&core, end).await;
    assert_eq!(by_host.len(), HOSTS, "every host polled");
    // Taken over within the lease period, plus one refresh (lease/3) and one poll
    // interval, plus 4 s for a pass on a loaded machine (2 shared cores, debug build).
    let pickup = LEASE_SECS * 1000 + LEASE_SECS * 1000 / 3 + INTERVAL_MS + 4_000;
    let window = (end - started) as f64;
    for (host, ats) in &by_host {
        assert!(
            ats.iter().any(|at| *at > started && *at < killed),
            "{host} was not polled while three replicas ran"
        );
        assert!(
            ats.iter().any(|at| *at >= killed + pickup && *at <= end),
            "{host} was not polled again after the kill ({ats:?}, killed at {killed})"
        );
        if victim_hosts.contains(host) {
            let last_before = ats.iter().filter(|at| **at < killed).max().copied();
            let first_after = ats.iter().find(|at| **at >= killed).copied();
            let (Some(b), Some(a)) = (last_before, first_after) else {
                panic!("{host} (the killed replica's) lacks polls around the kill: {ats:?}");
            };
            assert!(
                a - killed <= pickup,
                "{host} taken over {} ms after the kill (limit {pickup}): {ats:?}",
                a - killed
            );
            assert!(a - b <= pickup + INTERVAL_MS, "{host}: {ats:?}");
        }
        for w in ats.windows(2) {
            let gap = w[1] - w[0];
            // Poll slots are claimed ≥ 9/10 interval apart; the sample time adds the
            // agent's answer time, which varies, so a gap below a quarter interval
            // can only be a second replica polling in the same interval.
            assert!(
                gap >= INTERVAL_MS / 4,
                "{host} polled twice within {gap} ms: {ats:?}"
            );
            assert!(
                gap <= pickup + INTERVAL_MS,
                "{host} left unpolled for {gap} ms: {ats:?}"
            );
        }
        // And in total at most one poll per 9/10 interval (two replicas polling a
        // host would double this, whatever the gaps look like).
        let bound = (window / (0.9 * INTERVAL_MS as f64)).floor() as usize + 1;
        assert!(
            ats.len() <= bound,
            "{host} polled {} times in {window} ms (at most {bound}): {ats:?}",
            ats.len()
        );
    }
    drop(agents);
}
