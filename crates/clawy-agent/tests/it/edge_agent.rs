//! The edge as the real agent runs it (`[edge]` in its config) beside a real
//! Caddy 2.6.2 (internal issuer) and a real TCG guest, everything inside one
//! throwaway network namespace: the agent's `ask` endpoint and DNS responder on
//! the namespace's loopback, Caddy on its :443, the guest on the agent's bridge.
//! Checks run with `curl` inside the namespace, exactly as an operator would:
//! `curl --resolve <host>:443:127.0.0.1 --cacert <caddy root>`.
//! One guest boot for every assertion (TCG boots are slow on a shared machine).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{VmSpec, VmState};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::caddy::Caddy;
use clawy_testkit::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const APEX: &str = "claws.test";
const HOST: &str = "web-1a2b3c4d.claws.test";
const ASK: &str = "127.0.0.1:7611";

/// `curl` inside `ns` against the edge on the namespace's 127.0.0.1:443, trusting
/// only `root` (or nothing checked with `root = None`). Returns curl's exit code,
/// the HTTP status it printed last and the body.
fn curl(ns: &Netns, host: &str, root: Option<&Path>, path: &str) -> (i32, String, String) {
    let resolve = format!("{host}:443:127.0.0.1");
    let url = format!("https://{host}{path}");
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code}",
    ];
    let root_s;
    match root {
        Some(r) => {
            root_s = r.display().to_string();
            argv.extend(["--cacert", &root_s]);
        }
        None => argv.push("-k"),
    }
    argv.push(&url);
    let out = ns.output(&argv).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        out.status.code().unwrap_or(-1),
        code.to_string(),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The `ask` answer for `domain`, asked inside the namespace as Caddy asks.
fn ask(ns: &Netns, domain: &str) -> String {
    ns.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{ASK}/ask?domain={domain}"),
    ])
    .unwrap()
    .trim()
    .to_string()
}

fn stored_cert_dirs(storage: &Path, host: &str) -> Vec<PathBuf> {
    let Ok(issuers) = std::fs::read_dir(storage.join("certificates")) else {
        return vec![];
    };
    issuers
        .flatten()
        .map(|i| i.path().join(host))
        .filter(|p| p.exists())
        .collect()
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_1_net_4_real_agent_edge_serves_a_tcg_guest_and_forgets_it() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let images_dir = image.parent().unwrap().to_path_buf();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();

    let ns = Netns::new("edge").unwrap();
    let inet = Netns::new("edgenet").unwrap();
    Netns::veth_pair(
        &ns,
        "up0",
        "203.0.113.1/24",
        &inet,
        "peer0",
        "203.0.113.2/24",
    )
    .unwrap();
    let mut caddy = Caddy::start_in(&ns).await.unwrap();
    let edge_toml = format!(
        "[edge]\ninstances_apex = \"{APEX}\"\nhttps_listen = [\"127.0.0.1:443\"]\n\
         agent_http = \"{ASK}\"\nagent_dns = \"127.0.0.1:7653\"\n\
         admin_socket = \"{}\"\nstorage_root = \"{}\"\nissuer = \"internal\"\n\
         check_interval_secs = 1\n",
        caddy.admin_socket().display(),
        caddy.storage().display()
    );
    let opts = AgentOptions {
        images_dir: Some(images_dir),
        network_toml: Some(
            "subnet = \"10.77.1.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22000-22099\"\n"
                .into(),
        ),
        extra_toml: edge_toml,
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, Some(&ns))
        .await
        .unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();

    // The agent loaded the edge config into Caddy at its start and says so.
    let info = c.host().await.unwrap();
    let edge = info.edge.clone().expect("HostInfo reports the edge");
    assert_eq!(edge.instances_apex, APEX);
    assert!(edge.working, "{edge:?}\n{}", agent.log());
    let (_, running) = caddy
        .admin_get("/config/apps/http/servers/clawy_edge")
        .unwrap();
    assert!(running.contains("claws.test"), "{running}");

    // A hostname under another apex is refused before anything is created.
    let mut spec = VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image_name,
        mac: "52:54:00:77:01:0a".into(),
        private_ip: "10.77.1.10".into(),
        hostname: "edge-a".into(),
        ssh_authorized_keys: vec![],
        user_data: None,
        port_forwards: vec![],
        public_hostname: Some("web-1a2b3c4d.elsewhere.test".into()),
    };
    let err = c.ensure_vm("edge-a", &spec).await.unwrap_err().to_string();
    assert!(
        err.contains("422") && err.contains("edge apex `claws.test`"),
        "{err}"
    );
    assert!(c.list_vms().await.unwrap().vms.is_empty());

    // Defined: `ask` approves it (a certificate may be issued), the page says stopped.
    spec.public_hostname = Some(HOST.into());
    let (_, created) = c.ensure_vm("edge-a", &spec).await.unwrap();
    assert!(created);
    assert_eq!(ask(&ns, HOST), "200");
    assert_eq!(ask(&ns, "nope.claws.test"), "403");
    let (rc, code, body) = curl(&ns, HOST, None, "/");
    assert_eq!((rc, code.as_str()), (0, "503"), "{body}");
    assert!(body.contains("stopped"), "{body}");
    let root = caddy.root_ca();
    wait_for("Caddy's root CA", 20, || root.exists().then_some(())).await;

    // Running: the guest's own page, over TLS with a certificate for HOST that
    // only Caddy's root vouches for (curl checks the name: no -k).
    let vm = c.start_vm("edge-a").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let body = {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (rc, code, body) = curl(&ns, HOST, Some(&root), "/");
            if rc == 0 && code == "200" {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "guest never served through the edge: rc {rc} code {code} {body}\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    assert!(body.contains("clawy test guest edge-a"), "{body}");
    assert!(!stored_cert_dirs(&caddy.storage(), HOST).is_empty());

    // Refusals: a random name, no SNI (an IP), another apex: no certificate.
    let (rc, _, out) = curl(&ns, "random-name.claws.test", None, "/");
    assert_ne!(rc, 0, "random name got a TLS session: {out}");
    let (rc, _, out) = curl(&ns, "127.0.0.1", None, "/");
    assert_ne!(rc, 0, "no SNI got a TLS session: {out}");
    let (rc, _, out) = curl(&ns, "web-1a2b3c4d.elsewhere.test", None, "/");
    assert_ne!(rc, 0, "another apex got a TLS session: {out}");

    // Caddy restarts from its bootstrap (no edge config): the agent's periodic
    // check puts the config back and the instance is served again.
    caddy.restart().await.unwrap();
    let body = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (rc, code, body) = curl(&ns, HOST, Some(&root), "/");
            if rc == 0 && code == "200" {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "edge not back after a Caddy restart: {rc} {code} {body}\n{}",
                caddy.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    assert!(body.contains("clawy test guest edge-a"));
    assert!(c.host().await.unwrap().edge.unwrap().working);

    // Stopped: the branded "stopped" page, over TLS.
    let vm = c.stop_vm("edge-a").await.unwrap();
    assert_eq!(vm.state, VmState::Stopped);
    let (rc, code, body) = curl(&ns, HOST, Some(&root), "/");
    assert_eq!((rc, code.as_str()), (0, "503"), "{body}");
    assert!(body.contains("This instance is stopped"), "{body}");

    // Deleted: `ask` refuses, the certificate is gone from storage and a fresh
    // handshake fails.
    c.delete_vm("edge-a").await.unwrap();
    assert_eq!(ask(&ns, HOST), "403");
    assert!(stored_cert_dirs(&caddy.storage(), HOST).is_empty());
    let (rc, _, out) = curl(&ns, HOST, None, "/");
    assert_ne!(rc, 0, "deleted instance still has TLS: {out}");

    // Caddy down: HostInfo says the edge is not working, and why.
    caddy.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    let edge = loop {
        let e = c.host().await.unwrap().edge.unwrap();
        if !e.working {
            break e;
        }
        assert!(Instant::now() < deadline, "edge still reported working");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let why = edge.error.unwrap_or_default();
    assert!(why.contains("admin.sock"), "names the admin socket: {why}");
}
