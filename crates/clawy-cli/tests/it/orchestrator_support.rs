//! Shared pieces of the orchestrator tests with REAL agents and real TCG guests: a
//! host namespace with an uplink into a private "internet" namespace, the real agent
//! inside it, and a stable loopback address for it (a small proxy), so the host URL
//! registered in the database survives agent restarts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_core::config::ServerConfig;
use clawy_core::hosts::RegisterHost;
use clawy_core::plans::PlanSpec;
use clawy_core::{Core, SecretString, User};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::db::TestDatabase;
use clawy_testkit::netns::Netns;
use clawy_testkit::pve_sim::{PveSimOptions, TestPveSim};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_clawy");
pub const PASSWORD: &str = "Quartz-lantern-47-orbit!";

/// The orchestrator tests boot guests; one at a time keeps TCG fast on small machines.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback port whose target can be switched (agent restarted on a new port).
pub struct StableProxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl StableProxy {
    pub async fn start(target: u16) -> StableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let t = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        StableProxy { port, target, task }
    }

    pub fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for StableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn port_of(base_url: &str) -> u16 {
    base_url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One hypervisor host: namespace + uplink + real agent + stable URL; on the
/// `proxmox` driver also the simulated PVE node (`pve-sim`, a simulator: its VMs
/// are real TCG guests) the agent drives. Field order is drop order.
pub struct AgentHost {
    pub agent: TestAgent,
    pub sim: Option<TestPveSim>,
    _secrets: Option<tempfile::TempDir>,
    pub proxy: StableProxy,
    pub ns: Netns,
    pub _inet: Netns,
}

impl AgentHost {
    /// `subnet3` like `10.81.1` (the /24), ssh ports `ports`, extra agent TOML;
    /// the `qemu` driver.
    pub async fn start(prefix: &str, subnet3: &str, ports: &str, extra_toml: &str) -> AgentHost {
        Self::start_on(prefix, subnet3, ports, extra_toml, None).await
    }

    /// The same on the `proxmox` driver against `pve-sim` in the host's
    /// namespace, VMIDs from `vmid_range`.
    pub async fn start_proxmox(
        prefix: &str,
        subnet3: &str,
        ports: &str,
        extra_toml: &str,
        vmid_range: &str,
    ) -> AgentHost {
        Self::start_on(prefix, subnet3, ports, extra_toml, Some(vmid_range)).await
    }

    async fn start_on(
        prefix: &str,
        subnet3: &str,
        ports: &str,
        extra_toml: &str,
        proxmox_vmids: Option<&str>,
    ) -> AgentHost {
        let image = clawy_testkit::guest::test_guest_image().unwrap();
        let ns = Netns::new(prefix).unwrap();
        let inet = Netns::new(&format!("{prefix}n")).unwrap();
        Netns::veth_pair(
            &ns,
            "up0",
            "203.0.113.1/24",
            &inet,
            "peer0",
            "203.0.113.2/24",
        )
        .unwrap();
        let mut opts = AgentOptions {
            images_dir: Some(image.parent().unwrap().to_path_buf()),
            extra_toml: extra_toml.to_string(),
            network_toml: Some(format!(
                "subnet = \"{subnet3}.0/24\"\nuplink = \"up0\"\nssh_port_range = \"{ports}\"\n"
            )),
            stop_timeout_secs: 3,
            ..AgentOptions::default()
        };
        let (mut sim, mut secrets) = (None, None);
        if let Some(vmids) = proxmox_vmids {
            let s = TestPveSim::start(
                &clawy_testkit::pve_sim::bin().unwrap(),
                PveSimOptions {
                    allowed_bridges: vec!["clawybr0".into()],
                    auth_failure_delay_ms: 100,
                    templates: vec![(9000, image.clone(), None)],
                    ..Default::default()
                },
                Some(&ns),
            )
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let secret = s.write_token_secret(dir.path()).unwrap();
            opts.driver_toml = s.agent_driver_toml(&secret, &image_name(), vmids);
            sim = Some(s);
            secrets = Some(dir);
        }
        let agent = TestAgent::start(Path::new(BIN), opts, Some(&ns))
            .await
            .unwrap();
        let proxy = StableProxy::start(port_of(&agent.base_url)).await;
        AgentHost {
            agent,
            sim,
            _secrets: secrets,
            proxy,
            ns,
            _inet: inet,
        }
    }

    /// The agent's stable URL (through the proxy).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.proxy.port)
    }

    pub fn client(&self) -> AgentClient {
        AgentClient::new(&self.url(), &self.agent.fingerprint, &self.agent.token).unwrap()
    }

    /// `kill -9` the agent (its VMs keep running).
    pub fn kill(&mut self) {
        self.agent.kill_agent();
    }

    /// Starts the agent again on the same state dir; the stable URL follows it.
    pub async fn restart(&mut self) {
        self.agent.restart(Some(&self.ns)).await.unwrap();
        self.proxy.retarget(port_of(&self.agent.base_url));
    }

    /// Registers this agent as a host and reads its info (capacity, network).
    pub async fn register(&self, core: &Core, name: &str, region: &str, site: &str) -> String {
        let host = core
            .hosts()
            .register(
                &Actor::system(),
                RegisterHost {
                    name: name.into(),
                    url: self.url(),
                    fingerprint: self.agent.fingerprint.clone(),
                    token: SecretString::from(self.agent.token.clone()),
                    region: region.into(),
                    site: site.into(),
                    enabled: true,
                },
            )
            .await
            .unwrap();
        let info = self.client().host().await.unwrap();
        core.hosts().update_info(&host.id, &info).await.unwrap();
        host.id
    }
}

/// The test guest image's file name (the `base_image` instances boot from).
pub fn image_name() -> String {
    clawy_testkit::guest::test_guest_image()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// Config for the test's control plane: the guest image, a roomy quota.
pub fn control_config(db: &TestDatabase) -> ServerConfig {
    let mut c = ServerConfig::for_tests(&db.data_dir(), db.url());
    c.base_image = image_name();
    c.instance_quota = 20;
    c
}

/// A plan small enough for TCG guests side by side.
pub async fn tiny_plan(core: &Core) {
    core.plans()
        .create(
            &Actor::system(),
            PlanSpec {
                name: "tiny".into(),
                vcpus: 1,
                memory_mib: 256,
                disk_gib: 1,
            },
        )
        .await
        .unwrap();
}

pub async fn user(core: &Core, email: &str) -> User {
    core.accounts()
        .create_user(
            email,
            &SecretString::from(PASSWORD.to_string()),
            false,
            &Actor::system(),
        )
        .await
        .unwrap()
}

/// A manage-tier API key of `user`.
pub async fn manage_key(core: &Core, user: &User) -> String {
    core.api_keys()
        .create(
            &user.id,
            "orchestrator-test",
            Tier::Manage,
            None,
            None,
            &Actor::system(),
        )
        .await
        .unwrap()
        .key
        .expose()
        .to_string()
}

/// Polls `check` until it returns `Some` (bounded).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
