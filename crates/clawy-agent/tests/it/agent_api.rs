//! The agent's API through the real binary: TLS and pinning (DATA-3), tokens,
//! spec validation, capacity (ISO-2), the route allow-list (ACCESS-2) and
//! idempotency. No VM boots here; VMs are defined on a tiny blank base image.

use std::path::Path;
use std::process::Command;

use clawy_agent_client::{AgentClient, ClientError};
use clawy_proto::agent::{ErrorCode, PortForward, Protocol, VmSpec, VmState};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6 test@clawy";

/// A 64 MiB blank qcow2 as base image: enough to define VMs without booting them.
fn blank_images() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.path().join("blank.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

fn spec(n: u8) -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: "blank.qcow2".into(),
        mac: format!("52:54:00:00:00:{n:02x}"),
        private_ip: format!("10.42.7.{}", 10 + n),
        hostname: format!("vm-{n}"),
        ssh_authorized_keys: vec![KEY.into()],
        user_data: None,
        port_forwards: vec![PortForward {
            protocol: Protocol::Tcp,
            host_port: 22000 + u16::from(n),
            guest_port: 22,
        }],
        public_hostname: None,
    }
}

async fn start(images: &Path, extra: &str) -> TestAgent {
    let opts = AgentOptions {
        images_dir: Some(images.to_path_buf()),
        extra_toml: extra.into(),
        ..AgentOptions::default()
    };
    TestAgent::start(Path::new(BIN), opts, None).await.unwrap()
}

fn client(agent: &TestAgent, token: &str) -> AgentClient {
    AgentClient::new(&agent.base_url, &agent.fingerprint, token).unwrap()
}

fn assert_api_err(
    r: Result<impl std::fmt::Debug, ClientError>,
    status: u16,
    code: ErrorCode,
) -> Option<String> {
    match r {
        Err(ClientError::Api {
            status: s,
            code: c,
            field,
            message,
        }) => {
            assert_eq!((s, c), (status, code), "{message}");
            field
        }
        other => panic!("expected {status} {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn data_3_tokens_missing_wrong_revoked_are_401() {
    let images = blank_images();
    let agent = start(images.path(), "").await;
    let good = client(&agent, &agent.token);
    good.host().await.unwrap();

    // Missing Authorization header (raw client, certificate not checked here).
    let raw = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = raw
        .get(format!("{}/v1/host", agent.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    // Unknown routes answer 401 too without a token: nothing is revealed.
    let r = raw
        .get(format!("{}/v1/nope", agent.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_api_err(
        client(&agent, "").host().await,
        401,
        ErrorCode::Unauthorized,
    );
    assert_api_err(
        client(&agent, "clawyagt_wrong").host().await,
        401,
        ErrorCode::Unauthorized,
    );
    // The real token with its last character changed (to something it is not).
    let (head, last) = agent.token.split_at(agent.token.len() - 1);
    let almost = format!("{head}{}", if last == "0" { "1" } else { "0" });
    assert_ne!(almost, agent.token);
    assert_api_err(
        client(&agent, &almost).host().await,
        401,
        ErrorCode::Unauthorized,
    );

    // Rotation: a second token works alongside; revoking the first takes effect
    // without a restart.
    let out = agent.cli(&["token", "create", "--name", "second"]).unwrap();
    assert!(out.status.success());
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    client(&agent, &second).host().await.unwrap();
    let list = agent.cli(&["token", "list"]).unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("test") && list.contains("second"));
    assert!(
        !list.contains(&agent.token) && !list.contains(&second),
        "token list leaks tokens"
    );
    let stored = std::fs::read_to_string(agent.state_dir().join("tokens.json")).unwrap();
    assert!(
        !stored.contains(&agent.token) && !stored.contains(&second),
        "tokens stored in plaintext"
    );
    assert!(
        agent
            .cli(&["token", "revoke", "test"])
            .unwrap()
            .status
            .success()
    );
    assert_api_err(good.host().await, 401, ErrorCode::Unauthorized);
    client(&agent, &second).host().await.unwrap();
    // The agent's log never contains a token.
    let log = agent.log();
    assert!(!log.contains(&agent.token) && !log.contains(&second));
}

#[tokio::test]
async fn data_3_plain_http_refused() {
    let images = blank_images();
    let agent = start(images.path(), "").await;
    let addr = agent.base_url.trim_start_matches("https://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /v1/host HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plaintext HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let http = reqwest::Client::new()
        .get(format!("http://{addr}/v1/host"))
        .bearer_auth(&agent.token)
        .send()
        .await;
    assert!(http.is_err(), "plain HTTP request succeeded: {http:?}");
}

#[tokio::test]
async fn data_3_client_pins_the_fingerprint() {
    let images = blank_images();
    let agent = start(images.path(), "").await;
    // The CLI prints the same fingerprint the agent printed at start-up.
    let out = agent.cli(&["fingerprint"]).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        agent.fingerprint
    );
    client(&agent, &agent.token).host().await.unwrap();
    // Flip one byte of the fingerprint: the client refuses before sending anything.
    let mut wrong = agent.fingerprint.clone();
    let flipped = if wrong.starts_with('0') { "1" } else { "0" };
    wrong.replace_range(0..1, flipped);
    let c = AgentClient::new(&agent.base_url, &wrong, &agent.token).unwrap();
    match c.host().await {
        Err(ClientError::PinMismatch) => {}
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    // Another agent's certificate (a second state dir) is refused as well.
    let other = start(images.path(), "").await;
    assert_ne!(other.fingerprint, agent.fingerprint);
    let c = AgentClient::new(&other.base_url, &agent.fingerprint, &other.token).unwrap();
    assert!(matches!(c.host().await, Err(ClientError::PinMismatch)));
}

#[tokio::test]
async fn invalid_spec_is_422_naming_the_field() {
    let images = blank_images();
    // With a host network so addresses are checked against the real subnet; the
    // agent runs in its own namespace and creates its bridge there.
    let ns = Netns::new("api").unwrap();
    let inet = Netns::new("apinet").unwrap();
    Netns::veth_pair(
        &ns,
        "up0",
        "203.0.113.1/24",
        &inet,
        "peer0",
        "203.0.113.2/24",
    )
    .unwrap();
    let opts = AgentOptions {
        images_dir: Some(images.path().to_path_buf()),
        network_toml: Some(
            "subnet = \"10.42.7.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22000-22099\"\n"
                .into(),
        ),
        extra_toml: "max_vcpus = 16\nmax_memory_mib = 8192\nmax_disk_gib = 100\n".into(),
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, Some(&ns))
        .await
        .unwrap();
    let c = client(&agent, &agent.token);
    c.ensure_vm("vm-ok", &spec(1)).await.unwrap();

    type Mutation = fn(&mut VmSpec);
    let cases: Vec<(Mutation, &str)> = vec![
        (|s| s.vcpus = 0, "vcpus"),
        (|s| s.memory_mib = 0, "memory_mib"),
        (|s| s.disk_gib = 0, "disk_gib"),
        (|s| s.mac = "52:54:00:zz:00:01".into(), "mac"),
        (|s| s.mac = "01:00:5e:00:00:01".into(), "mac"),
        (|s| s.private_ip = "10.42.8.20".into(), "private_ip"),
        (|s| s.private_ip = "10.42.7.1".into(), "private_ip"),
        (|s| s.private_ip = "999.1.1.1".into(), "private_ip"),
        (|s| s.base_image = "../blank.qcow2".into(), "base_image"),
        (|s| s.base_image = "/etc/passwd".into(), "base_image"),
        (|s| s.base_image = "a/b".into(), "base_image"),
        (|s| s.base_image = "..".into(), "base_image"),
        (|s| s.base_image = "missing.qcow2".into(), "base_image"),
        (|s| s.hostname = "bad\nhost: x".into(), "hostname"),
        (
            |s| s.ssh_authorized_keys = vec!["ssh-dss AAAAB3NzaC1kc3MAAACBAP".into()],
            "ssh_authorized_keys[0]",
        ),
        (
            |s| s.ssh_authorized_keys = vec![format!("{KEY}\nssh_pwauth: true")],
            "ssh_authorized_keys[0]",
        ),
        (|s| s.port_forwards[0].host_port = 80, "port_forwards[0]"),
    ];
    for (i, (mutate, field)) in cases.into_iter().enumerate() {
        let mut s = spec(2);
        mutate(&mut s);
        let got = assert_api_err(
            c.ensure_vm(&format!("vm-bad-{i}"), &s).await,
            422,
            ErrorCode::InvalidSpec,
        );
        assert_eq!(got.as_deref(), Some(field), "case {i}");
    }
    // Wrong JSON types and unknown fields name the field too.
    let raw = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut v = serde_json::to_value(spec(3)).unwrap();
    v["vcpus"] = serde_json::json!("two");
    let r = raw
        .put(format!("{}/v1/vms/vm-x", agent.base_url))
        .bearer_auth(&agent.token)
        .json(&v)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "vcpus", "{body}");
    let mut v = serde_json::to_value(spec(3)).unwrap();
    v["exec"] = serde_json::json!("id");
    let r = raw
        .put(format!("{}/v1/vms/vm-x", agent.base_url))
        .bearer_auth(&agent.token)
        .json(&v)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "exec", "{body}");
    // Oversized user data is named; a body over the limit is 413.
    let mut s = spec(3);
    s.user_data = Some("#!/bin/sh\n".to_string() + &"x".repeat(70 * 1024));
    let f = assert_api_err(c.ensure_vm("vm-x", &s).await, 422, ErrorCode::InvalidSpec);
    assert_eq!(f.as_deref(), Some("user_data"));
    s.user_data = Some("x".repeat(300 * 1024));
    assert_api_err(
        c.ensure_vm("vm-x", &s).await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    // A bad VM id.
    assert_api_err(
        c.ensure_vm("Bad_Id", &spec(4)).await,
        422,
        ErrorCode::InvalidSpec,
    );
    // Address and port conflicts with another VM are 409.
    let mut s = spec(5);
    s.private_ip = spec(1).private_ip;
    assert_api_err(c.ensure_vm("vm-dup", &s).await, 409, ErrorCode::Conflict);
    let mut s = spec(5);
    s.port_forwards = spec(1).port_forwards;
    assert_api_err(c.ensure_vm("vm-dup", &s).await, 409, ErrorCode::Conflict);
    // None of the refused specs left anything behind.
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.vms.len(), 1, "{vms:?}");
    drop(agent);
}

#[tokio::test]
async fn iso_2_capacity_is_never_overcommitted() {
    let images = blank_images();
    let agent = start(
        images.path(),
        "max_vcpus = 4\nmax_memory_mib = 1024\nmax_disk_gib = 10\n",
    )
    .await;
    let c = client(&agent, &agent.token);
    let mut a = spec(1);
    a.vcpus = 3;
    a.memory_mib = 512;
    a.disk_gib = 6;
    c.ensure_vm("vm-a", &a).await.unwrap();
    let host = c.host().await.unwrap();
    assert_eq!(host.allocated.vcpus, 3);
    assert_eq!(host.capacity.vcpus, 4);
    assert_eq!(host.location, "TEST-lab1");
    assert_eq!(host.driver, "qemu");
    assert_eq!(host.accelerator, "tcg");

    let mut b = spec(2);
    b.vcpus = 2;
    let f = assert_api_err(
        c.ensure_vm("vm-b", &b).await,
        409,
        ErrorCode::CapacityExceeded,
    );
    assert_eq!(f.as_deref(), Some("vcpus"));
    let mut b = spec(2);
    b.memory_mib = 768;
    let f = assert_api_err(
        c.ensure_vm("vm-b", &b).await,
        409,
        ErrorCode::CapacityExceeded,
    );
    assert_eq!(f.as_deref(), Some("memory_mib"));
    let mut b = spec(2);
    b.disk_gib = 5;
    let f = assert_api_err(
        c.ensure_vm("vm-b", &b).await,
        409,
        ErrorCode::CapacityExceeded,
    );
    assert_eq!(f.as_deref(), Some("disk_gib"));
    // What fits still fits, and a VM's own allocation is not counted twice.
    c.ensure_vm("vm-b", &spec(2)).await.unwrap();
    let mut a2 = a.clone();
    a2.disk_gib = 10;
    assert_api_err(
        c.ensure_vm("vm-a", &a2).await,
        409,
        ErrorCode::CapacityExceeded,
    );
    a2.disk_gib = 9;
    c.ensure_vm("vm-a", &a2).await.unwrap();
    assert_eq!(c.host().await.unwrap().allocated.disk_gib, 10);
    // Deleting frees the allocation.
    c.delete_vm("vm-a").await.unwrap();
    assert_eq!(c.host().await.unwrap().allocated.vcpus, 1);
}

/// ACCESS-2: the served routes are exactly the allow-list; nothing that reads
/// guest files, runs commands or opens a console answers.
#[tokio::test]
async fn access_2_route_enumeration() {
    let allowed = [
        ("GET", "/v1/host"),
        ("GET", "/v1/vms"),
        ("GET", "/v1/vms/{id}"),
        ("PUT", "/v1/vms/{id}"),
        ("DELETE", "/v1/vms/{id}"),
        ("POST", "/v1/vms/{id}/start"),
        ("POST", "/v1/vms/{id}/stop"),
        ("POST", "/v1/vms/{id}/reboot"),
        ("GET", "/v1/vms/{id}/probe"),
    ];
    for r in clawy_agent::api::ROUTES {
        assert!(
            allowed.contains(r),
            "route {r:?} is outside the ACCESS-2 allow-list"
        );
    }
    let images = blank_images();
    let agent = start(images.path(), "").await;
    let raw = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    let mut paths: Vec<String> = clawy_agent::api::ROUTES
        .iter()
        .map(|(_, p)| p.replace("{id}", "vm-x"))
        .collect();
    for bad in [
        "exec",
        "files",
        "file",
        "console",
        "serial",
        "guest-agent",
        "qga",
        "shell",
        "vnc",
        "ssh",
        "logs",
        "screenshot",
        "fs",
        "terminal",
    ] {
        paths.push(format!("/v1/vms/vm-x/{bad}"));
        paths.push(format!("/v1/{bad}"));
    }
    for path in &paths {
        for m in methods {
            let route = clawy_agent::api::ROUTES
                .iter()
                .find(|(rm, rp)| *rm == m && rp.replace("{id}", "vm-x") == *path);
            if route.is_some() && m != "GET" {
                continue; // mutating allowed routes are exercised elsewhere
            }
            let r = raw
                .request(m.parse().unwrap(), format!("{}{path}", agent.base_url))
                .bearer_auth(&agent.token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if route.is_some() {
                assert!(
                    !body.contains("no such route"),
                    "{m} {path} is in ROUTES but not served"
                );
            } else {
                assert!(
                    status == 405 || (status == 404 && body.contains("no such route")),
                    "{m} {path} answered {status}: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn idempotent_put_and_delete() {
    let images = blank_images();
    let agent = start(images.path(), "").await;
    let c = client(&agent, &agent.token);
    let (vm, created) = c.ensure_vm("vm-i", &spec(1)).await.unwrap();
    assert!(created);
    assert_eq!(vm.state, VmState::Defined);
    let dir = agent.state_dir().join("vms/vm-i");
    let stamp = |f: &str| std::fs::metadata(dir.join(f)).unwrap().modified().unwrap();
    let before = (
        stamp("overlay.qcow2"),
        stamp("seed.iso"),
        stamp("spec.json"),
    );
    let (vm2, created) = c.ensure_vm("vm-i", &spec(1)).await.unwrap();
    assert!(!created);
    assert_eq!(vm2.spec, vm.spec);
    assert_eq!(
        before,
        (
            stamp("overlay.qcow2"),
            stamp("seed.iso"),
            stamp("spec.json")
        )
    );
    // A changed spec (stopped VM) is applied: disk grows, seed is rebuilt.
    let mut bigger = spec(1);
    bigger.disk_gib = 2;
    c.ensure_vm("vm-i", &bigger).await.unwrap();
    assert_eq!(
        c.get_vm("vm-i").await.unwrap().disk_allocated_bytes,
        2 << 30
    );
    // Shrinking is refused.
    let f = assert_api_err(
        c.ensure_vm("vm-i", &spec(1)).await,
        422,
        ErrorCode::InvalidSpec,
    );
    assert_eq!(f.as_deref(), Some("disk_gib"));
    // Stop of a never-started VM is a no-op success; reboot needs a running VM.
    c.stop_vm("vm-i").await.unwrap();
    assert_api_err(c.reboot_vm("vm-i").await, 409, ErrorCode::Conflict);
    assert_api_err(c.get_vm("vm-none").await, 404, ErrorCode::NotFound);
    c.delete_vm("vm-i").await.unwrap();
    assert!(!dir.exists());
    // Deleting again (absent) is still a success.
    c.delete_vm("vm-i").await.unwrap();
    assert_api_err(c.get_vm("vm-i").await, 404, ErrorCode::NotFound);
}

#[test]
fn config_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\nlisten_adress = \"x\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&cfg)
        .arg("fingerprint")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_adress"), "{err}");
}

/// DATA-5: the owner's secrets travel beside the spec, reach the VM's seed (0600) and
/// nothing else of the agent: not spec.json, not the status, not the state dir in
/// plain text; a malformed secret is refused naming the field, not the value.
#[tokio::test]
async fn data5_secrets_go_into_the_seed_only() {
    use base64::Engine as _;
    use clawy_proto::agent::{GuestSecrets, ModelKey, ModelProvider};
    use std::os::unix::fs::PermissionsExt as _;
    let images = blank_images();
    let agent = start(images.path(), "").await;
    let c = client(&agent, &agent.token);
    let secrets = GuestSecrets {
        gateway_token: "GwTokenForData5Test_0123456789abcdefghij".into(),
        telegram_bot_token: Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ".into()),
        model_key: Some(ModelKey {
            provider: ModelProvider::Anthropic,
            key: "sk-ant-api03-Data5ModelKeyForTheAgentTest".into(),
        }),
    };
    let mut bad = secrets.clone();
    bad.telegram_bot_token = Some("123:not-a-bot-token".into());
    let r = c.ensure_vm_with_secrets("vm-s", &spec(3), Some(&bad)).await;
    match &r {
        Err(ClientError::Api { message, .. }) => assert!(!message.contains("not-a-bot")),
        other => panic!("{other:?}"),
    }
    let f = assert_api_err(r, 422, ErrorCode::InvalidSpec);
    assert_eq!(f.as_deref(), Some("secrets.telegram_bot_token"));

    let (vm, created) = c
        .ensure_vm_with_secrets("vm-s", &spec(3), Some(&secrets))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(vm.spec, spec(3), "the spec holds no secret");
    let dir = agent.state_dir().join("vms/vm-s");
    // Delivered: the seed holds the gateway config (base64 in user-data), 0600.
    let iso = std::fs::read(dir.join("seed.iso")).unwrap();
    let cfg =
        base64::engine::general_purpose::STANDARD.encode(clawy_agent::cloudinit::openclaw_config(
            &secrets,
            clawy_agent::cloudinit::default_gateway(&spec(3)).unwrap(),
            None,
        ));
    let hay = String::from_utf8_lossy(&iso);
    assert!(hay.contains(&cfg), "the seed carries the gateway config");
    assert_eq!(
        std::fs::metadata(dir.join("seed.iso"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Nowhere else in plain text: spec.json, the status, any file of the state dir.
    let plain = [
        secrets.gateway_token.as_str(),
        secrets.telegram_bot_token.as_deref().unwrap(),
        secrets.model_key.as_ref().unwrap().key.as_str(),
    ];
    let status = serde_json::to_string(&c.get_vm("vm-s").await.unwrap()).unwrap();
    for p in plain {
        assert!(!status.contains(p));
    }
    assert!(!dir.join("seed").exists(), "the rendered files are gone");
    let out = Command::new("grep")
        .args(["-rlF", "-e", plain[0], "-e", plain[1], "-e", plain[2]])
        .arg(agent.state_dir())
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A VM defined without secrets gets a seed without the gateway config (the
    // test host has room for one VM).
    c.delete_vm("vm-s").await.unwrap();
    c.ensure_vm("vm-t", &spec(4)).await.unwrap();
    let iso = std::fs::read(agent.state_dir().join("vms/vm-t/seed.iso")).unwrap();
    assert!(!String::from_utf8_lossy(&iso).contains("openclaw.json"));
    assert!(String::from_utf8_lossy(&iso).contains("50-clawy.conf"));
}
