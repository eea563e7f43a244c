//! The heartbeat receiver and the secrets' delivery through the real agent with
//! real TCG stand-in guests (ACCESS-2, DATA-5). Topology as in `agent_network`:
//! the agent in a host namespace with its bridge; guests send heartbeats with the
//! token from their seed (guest/test-image/init, like the real image's reporter).

use std::path::Path;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_proto::agent::{GuestSecrets, ModelKey, ModelProvider, VmSpec};
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;

use crate::agent_network::{read_probe, wait_http};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const SUBNET: &str = "10.77.6";
const GW: &str = "10.77.6.1";
const PORT: u16 = 8790;

const TELEGRAM: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ";
const MODEL_KEY: &str = "sk-ant-api03-hbtestabcdefghijklmnopqrstuvwxyz0123";
const GATEWAY_TOKEN: &str = "gwtok_hbtest_0123456789abcdefghijklmnopq";

fn spec(id: &str, ip: &str, mac: &str, image: &str, user_data: Option<String>) -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        base_image: image.into(),
        mac: mac.into(),
        private_ip: ip.into(),
        hostname: id.into(),
        ssh_authorized_keys: vec![],
        user_data,
        port_forwards: vec![],
        public_hostname: None,
    }
}

fn secrets() -> GuestSecrets {
    GuestSecrets {
        gateway_token: GATEWAY_TOKEN.into(),
        telegram_bot_token: Some(TELEGRAM.into()),
        model_key: Some(ModelKey {
            provider: ModelProvider::Anthropic,
            key: MODEL_KEY.into(),
        }),
    }
}

const BODY: &str = r#"{"v":1,"image":"clawy-test-guest","boot_id":"unknown","booted_at":"2026-11-30T20:00:00Z","sent_at":"2026-11-30T20:01:30Z","config_applied":false,"cloud_init":"done","services":{"openclaw_gateway":{"state":"active","ready":true},"sshd":{"state":"active"},"ufw":{"state":"unknown","default_incoming":"allow"},"fail2ban":{"state":"unknown","jails":[]}}}"#;

/// The heartbeat token in a VM's seed ISO (read as root, before delivery).
fn token_in_seed(state_dir: &Path, id: &str) -> String {
    let iso = state_dir.join(format!("vms/{id}/seed.iso"));
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-x", "/user-data", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    let ud = String::from_utf8(out.stdout).unwrap();
    let mut lines = ud.lines();
    while let Some(l) = lines.next() {
        if l == "  - path: /etc/clawy/heartbeat.json" {
            let content = lines
                .find_map(|l| l.strip_prefix("    content: "))
                .unwrap()
                .trim_matches('"');
            use base64::Engine as _;
            let json = base64::engine::general_purpose::STANDARD
                .decode(content)
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["agent_address"], GW);
            assert_eq!(v["agent_port"], PORT);
            return v["token"].as_str().unwrap().to_string();
        }
    }
    panic!("no heartbeat config in {id}'s seed:\n{ud}");
}

/// The probe guest B runs: heartbeats it should not be able to get accepted.
fn refusal_script(other_token: &str) -> String {
    let extra = BODY.replacen("\"v\":1,", "\"v\":1,\"processes\":[\"x\"],", 1);
    format!(
        r#"#!/bin/sh
while [ ! -s /run/clawy/token ]; do sleep 1; done
post() {{
  printf 'POST /v1/heartbeat HTTP/1.0\r\nHost: {GW}\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$1" "${{#2}}" "$2" | timeout 10 nc -w 5 {GW} {PORT} | head -n1 | cut -d' ' -f2
}}
me=$(cat /run/clawy/token)
# The first connection may race the guest's network coming up: retried.
for i in 1 2 3 4 5 6 7 8 9 10; do v=$(post "$me" '{BODY}'); [ -n "$v" ] && break; sleep 1; done
echo "valid=$v"
echo "extra_field=$(post "$me" '{extra}')"
echo "wrong_token=$(post wrong-token-0123456789abcdef '{BODY}')"
echo "other_vms_token=$(post '{other_token}' '{BODY}')"
"#
    )
}

/// The forms a secret takes in files: itself, and its base64 at each of the three
/// alignments (the seed writes every file's content base64-encoded), without the
/// edge characters that depend on the neighbouring bytes.
fn forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut out = vec![secret.to_string()];
    for k in 0..3 {
        let mut bytes = vec![b'x'; k];
        bytes.extend_from_slice(secret.as_bytes());
        let enc = base64::engine::general_purpose::STANDARD.encode(&bytes);
        out.push(enc[4..enc.len() - 4].to_string());
    }
    out
}

/// Every file under `dir` holding `secret` in any of its [`forms`].
fn files_containing(dir: &Path, secret: &str) -> Vec<String> {
    let mut cmd = std::process::Command::new("grep");
    cmd.args(["-r", "-l", "-a", "-F"]);
    for f in forms(secret) {
        cmd.arg("-e").arg(f);
    }
    let out = cmd.arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn access_2_data_5_heartbeats_are_checked_and_delivery_destroys_the_seed() {
    let image = clawy_testkit::guest::test_guest_image().unwrap();
    let images_dir = image.parent().unwrap().to_path_buf();
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let host = Netns::new("hbhost").unwrap();
    let inet = Netns::new("hbinet").unwrap();
    Netns::veth_pair(
        &host,
        "up0",
        "203.0.113.1/24",
        &inet,
        "wan0",
        "203.0.113.2/24",
    )
    .unwrap();
    let opts = AgentOptions {
        images_dir: Some(images_dir),
        network_toml: Some(format!(
            "subnet = \"{SUBNET}.0/24\"\nuplink = \"up0\"\nssh_port_range = \"22300-22399\"\n"
        )),
        extra_toml: "max_vcpus = 4\n".into(),
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(BIN), opts, Some(&host))
        .await
        .unwrap();
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let state = agent.state_dir();

    // A: the owner's secrets in its seed. B: probes the receiver with A's token.
    let (a_ip, b_ip) = (format!("{SUBNET}.10"), format!("{SUBNET}.11"));
    let a = spec("hb-a", &a_ip, "52:54:00:77:06:0a", &image_name, None);
    c.ensure_vm_with_secrets("hb-a", &a, Some(&secrets()))
        .await
        .unwrap();
    let a_token = token_in_seed(&state, "hb-a");
    // The check below finds the secrets where they are (base64 in the seed).
    for secret in [TELEGRAM, MODEL_KEY, GATEWAY_TOKEN] {
        assert_eq!(
            files_containing(&state, secret),
            [state.join("vms/hb-a/seed.iso").display().to_string()]
        );
    }
    let b = spec(
        "hb-b",
        &b_ip,
        "52:54:00:77:06:0b",
        &image_name,
        Some(refusal_script(&a_token)),
    );
    c.ensure_vm("hb-b", &b).await.unwrap();
    // ACCESS-2: the token is kept hashed only.
    assert!(files_containing(&state.join("heartbeat"), &a_token).is_empty());
    c.start_vm("hb-a").await.unwrap();
    c.start_vm("hb-b").await.unwrap();
    wait_http(&host, &b_ip).await;

    // ACCESS-2: B's own heartbeat is accepted; an extra field, a wrong token and
    // another VM's token (bound to that VM's address) are refused.
    let p = read_probe(&host, &b_ip, "probe.txt").await;
    assert_eq!(p["valid"], "204", "{p:?}");
    assert_eq!(p["extra_field"], "422", "{p:?}");
    assert_eq!(p["wrong_token"], "401", "{p:?}");
    assert_eq!(p["other_vms_token"], "401", "{p:?}");
    // A's valid token from an address that is no VM's (the host's own bridge
    // address): refused as an unknown source.
    let tmp = tempfile::tempdir().unwrap();
    let body_file = tmp.path().join("hb-body.json");
    std::fs::write(&body_file, BODY).unwrap();
    let out = host
        .output(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
            "-H",
            &format!("Authorization: Bearer {a_token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body_file.display()),
            &format!("http://{GW}:{PORT}/v1/heartbeat"),
        ])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    // From outside the bridge (the uplink side) the receiver is not reachable.
    let out = inet
        .output(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "3",
            &format!("http://203.0.113.1:{PORT}/v1/heartbeat"),
        ])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");

    // Refusals are counted (HostInfo) and recorded in the agent's log.
    let info = c.host().await.unwrap();
    let r = &info.heartbeat_refusals;
    assert!(r.get("malformed").copied().unwrap_or(0) >= 1, "{r:?}");
    assert!(r.get("bad_token").copied().unwrap_or(0) >= 2, "{r:?}");
    assert!(r.get("unknown_source").copied().unwrap_or(0) >= 1, "{r:?}");
    assert!(agent.log().contains("heartbeat refused"), "{}", agent.log());

    // DATA-5: A's stand-in reports its configuration applied; the agent destroys
    // the seed with the secrets and says so in VmStatus, with the heartbeat.
    let deadline = Instant::now() + Duration::from_secs(240);
    let vm = loop {
        let vm = c.get_vm("hb-a").await.unwrap();
        if vm.secrets_delivered {
            break vm;
        }
        assert!(Instant::now() < deadline, "never delivered: {vm:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let hb = vm.heartbeat.expect("the latest heartbeat");
    assert!(hb.facts.config_applied);
    assert_eq!(hb.facts.image, "clawy-test-guest");
    assert!(hb.age_secs < 60);
    // The seed left for later boots is secret-free, with the same instance id.
    let seed = std::fs::read(state.join("vms/hb-a/seed.iso")).unwrap();
    assert!(seed.windows(14).any(|w| w == b"instance-id: h"));
    assert!(!state.join("vms/hb-a/seed").exists());
    for secret in [TELEGRAM, MODEL_KEY, GATEWAY_TOKEN] {
        let hits = files_containing(&state, secret);
        assert!(hits.is_empty(), "{secret} still in {hits:?}");
        let log = agent.log();
        assert!(
            forms(secret).iter().all(|f| !log.contains(f.as_str())),
            "{secret} in the agent log"
        );
    }
    // A's heartbeat token is gone from A's files too (B's script holds a copy).
    assert!(files_containing(&state.join("vms/hb-a"), &a_token).is_empty());
    assert!(files_containing(&state.join("heartbeat"), &a_token).is_empty());
    // The guest keeps heartbeating with its token after the seed is gone.
    let first = c
        .get_vm("hb-a")
        .await
        .unwrap()
        .heartbeat
        .unwrap()
        .received_at;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = c
            .get_vm("hb-a")
            .await
            .unwrap()
            .heartbeat
            .unwrap()
            .received_at;
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat after delivery");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Delete forgets the VM's token record.
    c.delete_vm("hb-a").await.unwrap();
    c.delete_vm("hb-b").await.unwrap();
    assert!(!state.join("heartbeat/hb-a.json").exists());
}
