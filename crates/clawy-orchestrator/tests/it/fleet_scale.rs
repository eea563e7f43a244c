//! Scale smoke test: the SQL statements of one reconcile pass and of one
//! poll pass must not grow with the number of instances per host. A per-instance
//! query (N+1) makes the count grow by (hosts × added instances per host) and fails
//! here on any machine, however fast; timing is not asserted.
//!
//! Statements are counted from sqlx's own per-statement log event (target
//! `sqlx::query`, emitted once for every statement on both backends, including
//! BEGIN/COMMIT). SQLite runs statements on its own worker threads, so only a
//! process-wide subscriber sees them all; to keep the count free of the other tests
//! of this binary, the counting runs in a child process that runs this one test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clawy_orchestrator::Poller;
use clawy_proto::agent::{PortForward, Protocol, VmSpec, VmState};
use clawy_testkit::fake_agent::FakeAgent;
use tracing_subscriber::layer::SubscriberExt;

use crate::common::*;

const CHILD_ENV: &str = "CLAWY_FLEET_COUNT_CHILD";
const HOSTS: usize = 20;
const FEW: usize = 5;
const MANY: usize = 40;

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct CountStatements;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountStatements {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.target() == "sqlx::query" {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.target() == "sqlx::query"
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Statements run by `f`.
async fn count<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = STATEMENTS.load(Ordering::SeqCst);
    let out = f.await;
    (out, STATEMENTS.load(Ordering::SeqCst) - before)
}

#[tokio::test]
async fn fleet_scale_statements_per_pass_do_not_grow_with_instances_per_host() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "fleet_scale::counted_fleet",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the counted fleet failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the counted fleet did not run:\n{text}"
    );
}

pub struct Fleet {
    pub agents: Vec<FakeAgent>,
    pub hosts: Vec<String>,
    pub owner: clawy_core::User,
    pub next: usize,
}

impl Fleet {
    /// `hosts` fake agents registered as hosts in DE, no instances yet.
    pub async fn start(f: &Fixture, hosts: usize) -> Fleet {
        let mut fleet = Fleet {
            agents: Vec::new(),
            hosts: Vec::new(),
            owner: f.user("fleet@example.com").await,
            next: 0,
        };
        for h in 0..hosts {
            let agent = fake(
                &format!("DE-s{h}"),
                &format!("10.{}.{}", 100 + h / 256, h % 256),
            )
            .await;
            fleet
                .hosts
                .push(f.host(&format!("s{h}"), &agent, "DE").await);
            fleet.agents.push(agent);
        }
        fleet
    }

    /// Adds `per_host` running instances (inserted directly, valid allocation) to
    /// every host, and the matching VM to its fake agent.
    pub async fn add(&mut self, f: &Fixture, per_host: usize) {
        let plan = f.core.plans().get("small").await.unwrap();
        let now = f.core.now_ms();
        let mut tx = f.core.store().pool().begin().await.unwrap();
        for _ in 0..per_host {
            let slot = self.next;
            self.next += 1;
            for (h, host) in self.hosts.iter().enumerate() {
                let id = uuid::Uuid::new_v4().to_string();
                let ip = format!("10.{}.{}.{}", 100 + h / 256, h % 256, 2 + slot);
                let port = 22000 + slot as u16;
                let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", h >> 8, h & 0xff, slot);
                sqlx::query(
                    "INSERT INTO instances (id, owner_id, name, plan_id, plan_name, vcpus, memory_mib, disk_gib, \
                     region, host_id, private_ip, mac, ssh_port, base_image, state, error_reason, desired_power, \
                     created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'DE', $9, $10, $11, \
                     $12, 'test', 'running', NULL, 'running', $13, $13, NULL)",
                )
                .bind(&id)
                .bind(&self.owner.id)
                .bind(format!("i{h}-{slot}"))
                .bind(&plan.id)
                .bind(&plan.name)
                .bind(i64::from(plan.vcpus))
                .bind(plan.memory_mib as i64)
                .bind(plan.disk_gib as i64)
                .bind(host)
                .bind(&ip)
                .bind(&mac)
                .bind(i64::from(port))
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                self.agents[h].insert_vm(
                    &id,
                    VmSpec {
                        vcpus: plan.vcpus,
                        memory_mib: plan.memory_mib,
                        disk_gib: plan.disk_gib,
                        base_image: "test".into(),
                        mac,
                        private_ip: ip,
                        hostname: format!("i{h}-{slot}"),
                        ssh_authorized_keys: vec![],
                        user_data: None,
                        port_forwards: vec![PortForward {
                            protocol: Protocol::Tcp,
                            host_port: port,
                            guest_port: 22,
                        }],
                        public_hostname: None,
                    },
                    VmState::Running,
                );
            }
        }
        tx.commit().await.unwrap();
    }
}

/// (statements of one reconcile pass, statements of one poll pass) at the fleet's
/// current size; checks that both passes saw every instance and repaired nothing.
async fn measure(f: &Fixture, poller: &Poller, instances: usize) -> (u64, u64) {
    let reconciler = f.reconciler();
    let (r, reconcile) = count(reconciler.reconcile_once()).await;
    let r = r.unwrap();
    assert_eq!(
        (r.hosts, r.vms_seen, r.hosts_unreachable),
        (HOSTS, instances, 0)
    );
    assert_eq!(
        r.starts_enqueued + r.stops_enqueued + r.forwards_reapplied + r.vanished,
        0,
        "{r:?}"
    );
    f.clock.advance(Duration::from_secs(30));
    let (p, poll) = count(poller.poll_once()).await;
    assert_eq!(p.unwrap().samples, instances);
    (reconcile, poll)
}

#[tokio::test]
#[ignore = "run by fleet_scale_statements_per_pass_do_not_grow_with_instances_per_host in a child process"]
async fn counted_fleet() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountStatements))
        .unwrap();
    let f = Fixture::new().await;
    let mut fleet = Fleet::start(&f, HOSTS).await;
    fleet.add(&f, FEW).await;
    let poller = Poller::new(f.core.clone(), f.clients.clone(), 8);
    // Warm-up: the first poll of a database starts the rollup watermark.
    poller.poll_once().await.unwrap();
    let few = measure(&f, &poller, HOSTS * FEW).await;
    fleet.add(&f, MANY - FEW).await;
    let many = measure(&f, &poller, HOSTS * MANY).await;
    println!(
        "statements per pass, {HOSTS} hosts: {FEW} instances/host: reconcile {}, poll {}; \
         {MANY} instances/host: reconcile {}, poll {}",
        few.0, few.1, many.0, many.1
    );
    assert_eq!(
        few.0, many.0,
        "reconcile statements grew with instances per host (N+1)"
    );
    assert_eq!(
        few.1, many.1,
        "poll statements grew with instances per host (N+1)"
    );
    // And they are a small constant per host (today: reconcile 1, poll 5-6).
    assert!(many.0 <= 3 * HOSTS as u64 + 10, "reconcile: {}", many.0);
    assert!(many.1 <= 8 * HOSTS as u64 + 10, "poll: {}", many.1);
}
