use std::sync::Arc;
use std::time::Duration;

use clawy_core::config::ServerConfig;
use clawy_core::hosts::RegisterHost;
use clawy_core::instances::{CreateInstance, Instance};
use clawy_core::{Actor, ClientInfo, Core, ManualClock, SecretString, User};
use clawy_orchestrator::clients::AgentClients;
use clawy_orchestrator::{JobRunner, Reconciler, RunnerConfig};
use clawy_proto::agent::Resources;
use clawy_testkit::db::TestDatabase;
use clawy_testkit::fake_agent::FakeAgent;

pub const GOOD_PW: &str = "Tundra-Velvet-Quasar-4812";

pub struct Fixture {
    pub core: Arc<Core>,
    pub clock: ManualClock,
    #[allow(dead_code)] // keeps the database alive for the test
    pub db: TestDatabase,
    pub clients: Arc<AgentClients>,
}

pub fn runner_config(prefix: &str) -> RunnerConfig {
    RunnerConfig {
        workers: 1,
        worker_prefix: prefix.to_string(),
        lease: Duration::from_secs(60),
        idle_poll: Duration::from_millis(20),
        wait_running: Duration::from_secs(5),
        state_poll: Duration::from_millis(20),
        watch_health: Duration::from_secs(5),
        busy_backoff: Duration::from_secs(5),
    }
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = TestDatabase::new().await.unwrap();
        let config = ServerConfig::for_tests(&db.data_dir(), db.url());
        Self::with_config(db, config).await
    }

    pub async fn with_config(db: TestDatabase, config: ServerConfig) -> Fixture {
        let clock = ManualClock::new("2026-03-01T12:00:00Z".parse().unwrap());
        let core = Arc::new(
            Core::open_with_clock(config, Arc::new(clock.clone()))
                .await
                .unwrap(),
        );
        let clients = Arc::new(AgentClients::new(core.clone(), Duration::from_secs(5)));
        Fixture {
            core,
            clock,
            db,
            clients,
        }
    }

    pub fn runner(&self, prefix: &str) -> JobRunner {
        JobRunner::new(
            self.core.clone(),
            self.clients.clone(),
            runner_config(prefix),
        )
    }

    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(self.core.clone(), self.clients.clone(), 8)
    }

    pub async fn user(&self, email: &str) -> User {
        clawy_testkit::secrets::register(GOOD_PW);
        self.core
            .accounts()
            .signup(
                email,
                &SecretString::from(GOOD_PW.to_string()),
                &Actor::anonymous(ClientInfo::new("192.0.2.1".parse().unwrap(), None)),
            )
            .await
            .unwrap()
    }

    /// Registers the fake agent as a host in `region` and reads its info.
    pub async fn host(&self, name: &str, agent: &FakeAgent, region: &str) -> String {
        let host = self
            .core
            .hosts()
            .register(
                &Actor::system(),
                RegisterHost {
                    name: name.into(),
                    url: agent.base_url.clone(),
                    fingerprint: agent.fingerprint.clone(),
                    token: SecretString::from(agent.token.clone()),
                    region: region.into(),
                    site: "lab1".into(),
                    enabled: true,
                },
            )
            .await
            .unwrap();
        let client = self.clients.for_host(&host.id).await.unwrap();
        let info = client.host().await.unwrap();
        self.core
            .hosts()
            .update_info(&host.id, &info)
            .await
            .unwrap();
        host.id
    }

    pub async fn create(&self, user: &User, name: &str) -> Instance {
        self.core
            .instances()
            .create(
                &Actor::system(),
                &user.id,
                CreateInstance {
                    name: name.into(),
                    ..CreateInstance::default()
                },
            )
            .await
            .unwrap()
    }

    /// Runs jobs until none is runnable (bounded).
    pub async fn drain(&self, runner: &JobRunner) -> usize {
        let mut n = 0;
        while runner.run_one("w").await.unwrap().is_some() {
            n += 1;
            assert!(n < 100, "jobs never drain");
        }
        n
    }

    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(self.core.store().pool())
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    }
}

pub fn big() -> Resources {
    Resources {
        vcpus: 64,
        memory_mib: 256 * 1024,
        disk_gib: 4096,
    }
}

pub async fn fake(location: &str, subnet: &str) -> FakeAgent {
    FakeAgent::start(location, big(), subnet, [22000, 22999])
        .await
        .unwrap()
}
