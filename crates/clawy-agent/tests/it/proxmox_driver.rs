//! The `proxmox` driver against `pve-sim` (the Proxmox VE simulator; Proxmox VE
//! itself cannot run here) in-process, through the executor: create (clone →
//! config → resize), idempotency, delete, and the faults that must converge —
//! a failed clone, a held lock, a lost task, an agent killed between clone and
//! config, a VMID taken meanwhile — with a foreign VM that is never touched.
//! Conformance: every request the driver sent validated against the checked-in
//! PVE schema (the simulator's request log shows no 400). The token holds exactly
//! the least-privilege role of docs/PROXMOX.md (no VM.GuestAgent.*).
//! Real guests on the proxmox driver: the lifecycle, network and egress suites
//! run one body on both drivers (`agent_lifecycle`, `agent_network`, `agent_egress`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawy_agent::config::{AgentConfig, DriverConfig, Env};
use clawy_agent::drivers::proxmox::ProxmoxDriver;
use clawy_agent::drivers::proxmox::config::TlsPin;
use clawy_agent::error::AgentError;
use clawy_agent::executor::{Executor, Outcome, VmAction};
use clawy_agent::spec::VmId;
use clawy_proto::agent::VmSpec;
use pve_sim::{SimConfig, SimHandle, TemplateConfig, TokenConfig};

const SECRET: &str = "0b7c8a4e-1111-2222-3333-444455556666";

/// The role docs/PROXMOX.md tells operators to create.
pub const LEAST_PRIVILEGES: &[&str] = &[
    "VM.Allocate",
    "VM.Clone",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Cloudinit",
    "VM.Config.Options",
    "VM.Config.HWType",
    "Datastore.AllocateSpace",
    "SDN.Use",
    "Sys.Audit",
];

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

struct Fx {
    sim: SimHandle,
    ex: Arc<Executor>,
    config: Arc<AgentConfig>,
    dir: tempfile::TempDir,
}

fn blank_image(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("blank.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&p)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    p
}

async fn start(extra: &str) -> Fx {
    start_with(extra, "200-209").await
}

async fn start_with(extra: &str, vmids: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::for_tests(&dir.path().join("sim"));
    cfg.auth_failure_delay_ms = 100;
    cfg.allowed_bridges = vec!["clawybr0".into()];
    cfg.snippets_dir = Some(dir.path().join("snippets"));
    cfg.tokens = vec![TokenConfig {
        id: "clawy@pve!agent".into(),
        secret: SECRET.into(),
        privileges: LEAST_PRIVILEGES.iter().map(|s| s.to_string()).collect(),
    }];
    cfg.templates = vec![TemplateConfig {
        vmid: 9000,
        image: blank_image(dir.path()),
        name: Some("clawy-guest".into()),
        bridge: None,
        memory: 128,
        cores: 1,
    }];
    let sim = SimHandle::start(cfg).await.unwrap();
    let secret = dir.path().join("pve-token");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(dir.path().join("snippets")).unwrap();
    let toml = format!(
        "state_dir = {state:?}\nmax_vcpus = 64\nmax_memory_mib = 16384\nmax_disk_gib = 200\n{extra}\n\
         [network]\nsubnet = \"10.66.0.0/24\"\nuplink = \"up0\"\n\
         [driver]\nkind = \"proxmox\"\n[driver.proxmox]\napi_url = \"{url}\"\nnode = \"pve\"\n\
         token_id = \"clawy@pve!agent\"\ntoken_secret_file = {secret:?}\nfingerprint = \"{fp}\"\n\
         vmid_range = \"{vmids}\"\ntemplates = {{ \"clawy-guest\" = 9000 }}\nsnippets_dir = {snip:?}\n",
        state = dir.path().join("state").display().to_string(),
        url = sim.base_url(),
        secret = secret.display().to_string(),
        fp = sim.fingerprint(),
        snip = dir.path().join("snippets").display().to_string(),
        vmids = vmids,
    );
    let config = Arc::new(AgentConfig::from_toml(&toml, &NoEnv).unwrap());
    let ex = Arc::new(executor(&config).await);
    Fx {
        sim,
        ex,
        config,
        dir,
    }
}

/// A fresh driver + executor over the same state dir: an agent restart.
async fn executor(config: &Arc<AgentConfig>) -> Executor {
    let DriverConfig::Proxmox(p) = &config.driver else {
        panic!("not proxmox")
    };
    let driver = ProxmoxDriver::new((**p).clone(), &config.state_dir, 5)
        .await
        .unwrap();
    // No host network here (no namespace): the guest tests cover taps.
    Executor::new(config.clone(), Arc::new(driver))
}

fn spec(n: u8) -> VmSpec {
    VmSpec {
        vcpus: 2,
        memory_mib: 512,
        disk_gib: 2,
        base_image: "clawy-guest".into(),
        mac: format!("52:54:00:66:00:{n:02x}"),
        private_ip: format!("10.66.0.{n}"),
        hostname: format!("vm-{n}"),
        ssh_authorized_keys: vec![],
        user_data: None,
        public_hostname: None,
        port_forwards: vec![],
    }
}

fn id(s: &str) -> VmId {
    VmId::parse(s).unwrap()
}

fn ensure(i: &str, s: VmSpec) -> VmAction {
    VmAction::Ensure {
        id: id(i),
        spec: Box::new(s),
        secrets: None,
    }
}

impl Fx {
    /// VMIDs the node holds, with their tags.
    fn vms(&self) -> Vec<(u32, String)> {
        let dir = self.sim.node().cfg.state_dir.join("qemu-server");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(vmid) = name.strip_suffix(".conf").and_then(|v| v.parse().ok()) else {
                continue;
            };
            let text = std::fs::read_to_string(e.path()).unwrap();
            let tags = text
                .lines()
                .find_map(|l| l.strip_prefix("tags: "))
                .unwrap_or("")
                .to_string();
            out.push((vmid, tags));
        }
        out.sort();
        out
    }

    fn clawy_vms(&self, i: &str) -> Vec<u32> {
        let tag = format!("clawy-id-{i}");
        self.vms()
            .into_iter()
            .filter(|(_, t)| t.split(';').any(|x| x == tag))
            .map(|(v, _)| v)
            .collect()
    }

    /// Conformance: the node answered no request of the driver with a 400 (the
    /// status of a task the node lost is PVE's own 400 `no such task`, not a
    /// schema failure).
    fn assert_conformant(&self) {
        for r in self.sim.requests() {
            if format!("{:?}", r.errors).contains("no such task") {
                continue;
            }
            assert!(
                r.status != 400 && r.errors.is_none(),
                "request failed PVE's schema: {} {} {:?} -> {} {:?}",
                r.method,
                r.path,
                r.params,
                r.status,
                r.errors
            );
        }
    }

    fn snippets(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("snippets"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }
}

/// DATA-3: the driver talks to the node only over the pinned certificate (the
/// verifier shared with the control plane's agent client): with another
/// fingerprint it refuses at start-up and the node receives no request, so the
/// API token never leaves the agent. The right pin works (the positive control).
#[tokio::test]
async fn data_3_proxmox_driver_refuses_a_node_whose_certificate_is_not_pinned() {
    let fx = start("").await;
    let DriverConfig::Proxmox(p) = &fx.config.driver else {
        panic!("not proxmox")
    };
    let before = fx.sim.requests().len();
    let mut wrong = (**p).clone();
    wrong.tls = TlsPin::Fingerprint([0xab; 32]);
    let state = fx.dir.path().join("state-wrong-pin");
    let Err(e) = ProxmoxDriver::new(wrong, &state, 5).await else {
        panic!("the driver accepted a node whose certificate is not pinned")
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(fx.sim.requests().len(), before);
    ProxmoxDriver::new((**p).clone(), &state, 5).await.unwrap();
    assert!(fx.sim.requests().len() > before);
}

#[tokio::test]
async fn proxmox_create_configures_resizes_and_deletes_without_a_trace() {
    let fx = start("").await;
    fx.sim
        .create_foreign_vm(200, 9000, "someone-else", None, false)
        .await
        .unwrap();
    let out = fx.ex.execute(ensure("vm-a", spec(10))).await.unwrap();
    assert!(matches!(out, Outcome::Created(_)), "{out:?}");
    let vmids = fx.clawy_vms("vm-a");
    // The foreign VM kept 200; ours took the next free id.
    assert_eq!(vmids, vec![201]);
    let conf =
        std::fs::read_to_string(fx.sim.node().cfg.state_dir.join("qemu-server/201.conf")).unwrap();
    for want in [
        "cores: 2",
        "sockets: 1",
        "memory: 512",
        "balloon: 0",
        "agent: 0",
        "onboot: 1",
        "cpu: host",
    ] {
        assert!(conf.contains(want), "{want} missing in\n{conf}");
    }
    assert!(
        conf.to_lowercase()
            .contains("virtio=52:54:00:66:00:0a,bridge=clawybr0"),
        "{conf}"
    );
    assert!(
        conf.contains("cicustom: user=local:snippets/clawy-vm-a-user.yaml"),
        "{conf}"
    );
    assert!(conf.contains("size=2G"), "disk grown to the spec: {conf}");
    let user =
        std::fs::read_to_string(fx.dir.path().join("snippets/clawy-vm-a-user.yaml")).unwrap();
    assert!(user.starts_with("#cloud-config\n"), "{user}");
    // Idempotent: the same spec again changes nothing.
    let before = fx.sim.requests().len();
    let out = fx.ex.execute(ensure("vm-a", spec(10))).await.unwrap();
    assert!(matches!(out, Outcome::Vm(_)), "{out:?}");
    assert!(
        fx.sim.requests()[before..]
            .iter()
            .all(|r| r.method == "GET"),
        "a repeated ensure wrote to PVE"
    );
    fx.ex
        .execute(VmAction::Delete { id: id("vm-a") })
        .await
        .unwrap();
    assert!(fx.clawy_vms("vm-a").is_empty());
    assert!(fx.snippets().is_empty(), "{:?}", fx.snippets());
    assert!(!fx.config.state_dir.join("proxmox/vm-a").exists());
    // The foreign VM is untouched.
    assert_eq!(fx.vms(), vec![(200, String::new()), (9000, String::new())]);
    fx.assert_conformant();
}

#[tokio::test]
async fn proxmox_faults_converge_to_exactly_one_vm_and_never_fail_on_a_lock() {
    let fx = start("").await;
    // A failed clone: the attempt fails, the retry converges.
    fx.sim.fail_next_clones(1, "storage 'local' is full");
    let err = fx.ex.execute(ensure("vm-f", spec(11))).await.unwrap_err();
    assert!(
        err.to_string().contains("storage") || matches!(err, AgentError::Internal(_)),
        "{err}"
    );
    fx.ex.execute(ensure("vm-f", spec(11))).await.unwrap();
    assert_eq!(fx.clawy_vms("vm-f").len(), 1);

    // A lock held on the VM: busy (retryable), never a failure.
    let vmid = fx.clawy_vms("vm-f")[0];
    fx.sim.set_vm_lock(vmid, Some("backup")).unwrap();
    let err = fx
        .ex
        .execute(VmAction::Start { id: id("vm-f") })
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Busy(_)), "{err}");
    let mut changed = spec(11);
    changed.memory_mib = 1024;
    let err = fx
        .ex
        .execute(ensure("vm-f", changed.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Busy(_)), "{err}");
    fx.sim.set_vm_lock(vmid, None).unwrap();
    fx.ex.execute(ensure("vm-f", changed)).await.unwrap();

    // Killed between clone and config: a slow clone, the agent "dies" while it
    // runs (its budget ends: busy), a new agent over the same state dir finishes
    // the job with the same VM.
    fx.sim
        .set_task_duration("qmclone", Duration::from_millis(1500));
    let short = Executor::new(fx.config.clone(), fx.ex.driver().clone())
        .with_budget(Duration::from_millis(300));
    let err = short.execute(ensure("vm-k", spec(12))).await.unwrap_err();
    assert!(matches!(err, AgentError::Busy(_)), "{err}");
    drop(short);
    let restarted = executor(&fx.config).await;
    restarted.execute(ensure("vm-k", spec(12))).await.unwrap();
    assert_eq!(fx.clawy_vms("vm-k").len(), 1);
    fx.sim.set_task_duration("qmclone", Duration::ZERO);

    // A lost task: the clone's UPID vanishes; PVE's state decides.
    fx.sim.vanish_next_tasks("qmclone", 1);
    let _ = fx.ex.execute(ensure("vm-l", spec(13))).await;
    fx.ex.execute(ensure("vm-l", spec(13))).await.unwrap();
    assert_eq!(fx.clawy_vms("vm-l").len(), 1);

    // A VMID taken meanwhile (nextid reserves nothing): another id is used.
    let next_free = (200..=209)
        .find(|v| !fx.vms().iter().any(|(x, _)| x == v))
        .unwrap();
    fx.sim
        .create_foreign_vm(next_free, 9000, "raced", None, false)
        .await
        .unwrap();
    fx.ex.execute(ensure("vm-r", spec(14))).await.unwrap();
    let r = fx.clawy_vms("vm-r");
    assert_eq!(r.len(), 1);
    assert_ne!(r[0], next_free);

    // No half-created VM anywhere: every VM in range is tagged, or the foreign one.
    for (vmid, tags) in fx.vms() {
        if vmid == 9000 || vmid == next_free {
            continue;
        }
        assert!(tags.contains("clawy-id-"), "untagged VM {vmid} left behind");
    }
    fx.assert_conformant();
}

/// Benchmark (docs/BENCHMARKS.md): 50 concurrent creates (clone + config +
/// resize, not started) against one simulated node whose clone tasks take 2 s
/// converge, no lock error reaches a caller, and the wall time stays within 3 ×
/// one create alone (a host-wide lock held during tasks would make it ~50 ×).
#[tokio::test]
#[ignore = "benchmark, run alone by scripts/bench-proxmox.sh (timing under a loaded test run is noise)"]
async fn bench_proxmox_50_concurrent_creates_with_2s_clones() {
    let fx = start_with("", "1000-1099").await;
    fx.sim.set_task_duration("qmclone", Duration::from_secs(2));
    let small = |n: u8| {
        let mut s = spec(n);
        s.vcpus = 1;
        s.memory_mib = 256;
        s
    };
    let t = std::time::Instant::now();
    fx.ex.execute(ensure("solo", small(2))).await.unwrap();
    let one = t.elapsed();
    let t = std::time::Instant::now();
    let tasks: Vec<_> = (0..50u8)
        .map(|n| {
            let ex = fx.ex.clone();
            tokio::spawn(async move {
                // A caller retries `busy` as the job runner does.
                loop {
                    match ex.execute(ensure(&format!("c-{n}"), small(10 + n))).await {
                        Err(AgentError::Busy(_)) => {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        r => return r,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let fifty = t.elapsed();
    for n in 0..50 {
        assert_eq!(fx.clawy_vms(&format!("c-{n}")).len(), 1);
    }
    println!(
        "BENCH proxmox concurrent creates: one create {:.2} s, 50 concurrent {:.2} s, ratio {:.2}",
        one.as_secs_f64(),
        fifty.as_secs_f64(),
        fifty.as_secs_f64() / one.as_secs_f64()
    );
    assert!(
        fifty <= one * 3,
        "50 creates took {fifty:?}, one took {one:?}"
    );
    fx.assert_conformant();
}
