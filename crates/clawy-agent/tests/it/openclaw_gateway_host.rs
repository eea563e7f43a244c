//! The real OpenClaw gateway (the image's pinned node + OpenClaw, from the build's
//! host copy) run on the host with exactly what a guest gets: the config and `.env`
//! the seed generator writes (`clawy_agent::cloudinit`) and the command,
//! environment and umask of the image's `openclaw-gateway.service`, as an
//! unprivileged user, inside a network namespace this test creates; the "edge" is a
//! second namespace on a veth, like the host's bridge address in front of a VM.
//! Under TCG the gateway cannot get ready inside a VM (docs/BENCHMARKS.md), so this
//! is where its behaviour with our settings is proven:
//!
//! - it starts; `/healthz` and `/readyz` answer 200 from the edge's side;
//! - a WebSocket `connect` without the token and with a wrong token is refused,
//!   with the token it is accepted (`hello-ok`);
//! - the Telegram bot token is where OpenClaw reads it (`channels.status`: token
//!   source `config`, available) and the model key too (`models status`: the
//!   provider's key from the environment, i.e. `~/.openclaw/.env`);
//! - `openclaw security audit --json` reports no critical finding for the config;
//! - nothing the gateway writes is readable by group or others (`UMask=0077`).
//!
//! Skips (passes with a message) only when the host copy is absent because the
//! image cannot be built.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use clawy_proto::agent::{GATEWAY_PORT, GuestSecrets, ModelKey, ModelProvider};
use clawy_testkit::guest::repo_root;
use clawy_testkit::netns::Netns;

const GATEWAY_IP: &str = "10.77.9.2";
const EDGE_IP: &str = "10.77.9.1";
/// The unprivileged user the gateway runs as here (the image's `openclaw` user does
/// not exist on the host): `nobody`.
const UID: u32 = 65534;
/// What the edge (Caddy's reverse_proxy) adds to every request: the client's address.
const CLIENT_HEADER: &str = "X-Forwarded-For: 198.51.100.7";
const TOKEN: &str = "gw_HostTest_0123456789abcdefghijklmnopqr";
const BOT: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1";
const MODEL_KEY: &str = "sk-ant-api03-HostGatewayTestModelKey0123456789";

/// A minimal WebSocket client of the gateway protocol (node's built-in WebSocket):
/// waits for `connect.challenge`, sends `connect` (with `auth.token` when given) and
/// prints `accepted` or `refused` plus the server's frames, one JSON per line.
const WS_CLIENT: &str = r#"
const [url, token] = process.argv.slice(2);
const out = (o) => console.log(JSON.stringify(o));
// As the edge sends it: the client's address in X-Forwarded-For (the gateway trusts
// the edge as its proxy and refuses the edge's requests without one).
const ws = new WebSocket(url, {headers: {"X-Forwarded-For": "198.51.100.7"}});
const timer = setTimeout(() => { out({result: "timeout"}); process.exit(3); }, 90000);
const done = () => { clearTimeout(timer); setTimeout(() => process.exit(0), 100); };
ws.onmessage = (ev) => {
  const m = JSON.parse(String(ev.data));
  out({frame: m});
  if (m.type === "event" && m.event === "connect.challenge") {
    const params = {minProtocol: 4, maxProtocol: 4,
      client: {id: "cli", version: "0.0.0", platform: "linux", mode: "cli"},
      role: "operator", scopes: ["operator.read"], caps: [], commands: [], permissions: {}};
    if (token) params.auth = {token};
    ws.send(JSON.stringify({type: "req", id: "c1", method: "connect", params}));
  } else if (m.type === "res" && m.id === "c1") {
    out({result: m.ok ? "accepted" : "refused"});
    ws.close(); done();
  }
};
ws.onclose = (ev) => { out({closed: ev.code, reason: ev.reason}); done(); };
ws.onerror = (e) => out({error: String(e.message || e)});
"#;

/// What the image's unit runs: `ExecStart`, `Environment` and `UMask`, with the
/// image's paths mapped onto the host copy.
struct Unit {
    exec: Vec<String>,
    env: Vec<(String, String)>,
    umask: String,
}

fn unit(host_dir: &Path) -> Unit {
    let path =
        repo_root().join("guest/openclaw-image/rootfs/etc/systemd/system/openclaw-gateway.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let value = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= missing from {}", path.display()))
            .trim()
            .to_string()
    };
    let map = |arg: &str| -> String {
        arg.replace("/opt/clawy/node/", &format!("{}/node/", host_dir.display()))
            .replace(
                "/opt/clawy/openclaw/",
                &format!("{}/openclaw/", host_dir.display()),
            )
    };
    let exec: Vec<String> = value("ExecStart").split_whitespace().map(map).collect();
    // The unit must run the tree the image ships; the host copy mirrors it.
    assert!(
        exec[0].starts_with(&host_dir.display().to_string()) && Path::new(&exec[0]).is_file(),
        "ExecStart's program is not in the host copy: {exec:?}"
    );
    assert!(Path::new(&exec[1]).is_file(), "{exec:?}");
    let env = value("Environment")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(value("User"), "openclaw");
    Unit {
        exec,
        env,
        umask: value("UMask"),
    }
}

/// `argv` as the gateway's user with the gateway's environment (HOME → `home`),
/// inside `ns`.
fn as_gateway(
    ns: &Netns,
    home: &Path,
    unit: &Unit,
    umask: &str,
    argv: &[String],
) -> tokio::process::Command {
    let mut c = ns.tokio_command("setpriv");
    c.args([
        "--reuid",
        &UID.to_string(),
        "--regid",
        &UID.to_string(),
        "--clear-groups",
        "--",
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
    ]);
    for (k, v) in &unit.env {
        let v = if k == "HOME" {
            home.display().to_string()
        } else {
            v.clone()
        };
        c.arg(format!("{k}={v}"));
    }
    // sh only to apply the unit's umask before exec'ing the program.
    c.args(["sh", "-c", &format!("umask {umask} && exec \"$@\""), "sh"]);
    c.args(argv);
    c
}

async fn output(mut c: tokio::process::Command) -> Output {
    c.stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(240), c.output())
        .await
        .expect("command timed out")
        .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn wait_http_200(edge: &Netns, path: &str, within: Duration, log: &Path) -> Duration {
    let t0 = Instant::now();
    let url = format!("http://{GATEWAY_IP}:{GATEWAY_PORT}{path}");
    loop {
        let o = edge
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
                CLIENT_HEADER,
                &url,
            ])
            .unwrap();
        if String::from_utf8_lossy(&o.stdout) == "200" {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{path} never answered 200; gateway log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs the WebSocket client from `ns` against `url`; returns the result and the
/// refusal's error code, if any.
fn ws_connect(
    ns: &Netns,
    node: &Path,
    script: &Path,
    url: &str,
    token: Option<&str>,
) -> (String, String) {
    let mut argv = vec![
        "timeout",
        "120",
        node.to_str().unwrap(),
        script.to_str().unwrap(),
        url,
    ];
    if let Some(t) = token {
        argv.push(t);
    }
    let o = ns.output(&argv).unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let result = lines
        .iter()
        .find_map(|v| v["result"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no result from the WebSocket client: {}", show(&o)));
    let code = lines
        .iter()
        .find_map(|v| {
            v["frame"]["error"]["details"]["code"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    eprintln!("ws connect token={:?}: {result} {code}", token.map(|_| "…"));
    (result, code)
}

#[tokio::test]
async fn openclaw_gateway_runs_on_the_host_with_the_generated_config_and_unit_settings() {
    let image = match clawy_testkit::openclaw_image::openclaw_image() {
        Ok(i) if i.host_openclaw().is_file() => i,
        Ok(i) => {
            eprintln!(
                "SKIPPED: no host copy of OpenClaw at {} (scripts/build-guest-image.sh leaves it)",
                i.host_openclaw().display()
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: the guest image and its host copy of OpenClaw could not be built: {e:#}"
            );
            return;
        }
    };
    let unit = unit(&image.host_dir);
    let node = image.host_node();

    // The gateway's home, as the image has it: 0700, owned by the gateway's user,
    // with the seed's two files (0600).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    let oc = home.join(".openclaw");
    std::fs::create_dir_all(&oc).unwrap();
    let secrets = GuestSecrets {
        gateway_token: TOKEN.into(),
        telegram_bot_token: Some(BOT.into()),
        model_key: Some(ModelKey {
            provider: ModelProvider::Anthropic,
            key: MODEL_KEY.into(),
        }),
    };
    let edge_ip: std::net::Ipv4Addr = EDGE_IP.parse().unwrap();
    std::fs::write(
        oc.join("openclaw.json"),
        clawy_agent::cloudinit::openclaw_config(&secrets, edge_ip, Some("anna.claws.test")),
    )
    .unwrap();
    std::fs::write(
        oc.join(".env"),
        clawy_agent::cloudinit::openclaw_env(&secrets).unwrap(),
    )
    .unwrap();
    for (p, mode) in [
        (&home, 0o700),
        (&oc, 0o700),
        (&oc.join("openclaw.json"), 0o600),
        (&oc.join(".env"), 0o600),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(p, Some(UID), Some(UID)).unwrap();
    }
    let script = dir.path().join("ws-connect.mjs");
    std::fs::write(&script, WS_CLIENT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();

    let host = Netns::new("gwhost").unwrap();
    let edge = Netns::new("gwedge").unwrap();
    Netns::veth_pair(
        &host,
        "eth0",
        &format!("{GATEWAY_IP}/24"),
        &edge,
        "br0",
        &format!("{EDGE_IP}/24"),
    )
    .unwrap();

    let log = dir.path().join("gateway.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut cmd = as_gateway(&host, &home, &unit, &unit.umask, &unit.exec);
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    let t0 = Instant::now();
    let mut gateway = cmd.spawn().unwrap();

    wait_http_200(&edge, "/healthz", Duration::from_secs(300), &log).await;
    eprintln!("gateway: /healthz 200 after {:.1?}", t0.elapsed());
    wait_http_200(&edge, "/readyz", Duration::from_secs(300), &log).await;
    eprintln!("gateway: /readyz 200 after {:.1?}", t0.elapsed());
    assert!(gateway.try_wait().unwrap().is_none(), "the gateway exited");
    // The edge is the one trusted proxy: its own requests must say whose they are.
    let o = edge
        .output(&[
            "curl",
            "-s",
            "-m",
            "10",
            &format!("http://{GATEWAY_IP}:{GATEWAY_PORT}/readyz"),
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("proxy_attribution_required"),
        "{}",
        show(&o)
    );
    // `bind: lan`: it listens on every address, so the edge reaches it (UFW in the
    // guest narrows that to the edge's address; the boot test proves that part).
    let ss = host.exec(&["ss", "-ltnH"]).unwrap();
    assert!(ss.contains(&format!("0.0.0.0:{GATEWAY_PORT} ")), "{ss}");

    // WebSocket from the edge's side: no token, a wrong token, the token.
    let url = format!("ws://{GATEWAY_IP}:{GATEWAY_PORT}");
    let (r, code) = ws_connect(&edge, &node, &script, &url, None);
    assert_eq!(r, "refused", "a connect without the token was accepted");
    assert!(!code.is_empty(), "refused without a reason code");
    let wrong = "gw_WrongToken_0123456789abcdefghijklmnopq";
    let (r, code) = ws_connect(&edge, &node, &script, &url, Some(wrong));
    assert_eq!(
        (r.as_str(), code.as_str()),
        ("refused", "AUTH_TOKEN_MISMATCH")
    );
    let (r, _) = ws_connect(&edge, &node, &script, &url, Some(TOKEN));
    assert_eq!(r, "accepted", "the gateway token was refused");

    // Telegram: the running gateway reads the bot token from the config file. The
    // CLI connects over loopback (local device pairing), with its own empty home.
    let client_home = dir.path().join("client");
    std::fs::create_dir_all(&client_home).unwrap();
    let mut c = host.tokio_command("env");
    c.args(["-i", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", client_home.display()))
        .arg(image.host_openclaw())
        .args([
            "gateway",
            "call",
            "channels.status",
            "--json",
            "--token",
            TOKEN,
        ])
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{GATEWAY_PORT}"));
    let o = output(c).await;
    assert!(o.status.success(), "channels.status: {}", show(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tg = &st["channelAccounts"]["telegram"][0];
    assert_eq!(st["channels"]["telegram"]["configured"], true, "{st}");
    assert_eq!(tg["tokenSource"], "config", "{st}");
    assert_eq!(tg["tokenStatus"], "available", "{st}");

    // The model key: OpenClaw finds it as the provider's environment variable,
    // which only `~/.openclaw/.env` sets here (`env -i`).
    let argv: Vec<String> = [
        image.host_openclaw().display().to_string(),
        "models".into(),
        "status".into(),
        "--json".into(),
    ]
    .to_vec();
    let o = output(as_gateway(&host, &home, &unit, &unit.umask, &argv)).await;
    assert!(o.status.success(), "models status: {}", show(&o));
    let ms: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let anthropic = ms["auth"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "anthropic")
        .unwrap_or_else(|| panic!("no anthropic auth: {ms}"));
    assert_eq!(anthropic["effective"]["kind"], "env", "{anthropic}");
    assert_eq!(
        anthropic["env"]["source"], "env: ANTHROPIC_API_KEY",
        "{anthropic}"
    );
    let shown = anthropic["env"]["value"].as_str().unwrap();
    assert!(
        shown.ends_with(&MODEL_KEY[MODEL_KEY.len() - 8..]) && !shown.contains(MODEL_KEY),
        "not our key, or shown unmasked: {shown}"
    );

    // OpenClaw's own audit of the config: nothing critical.
    let argv: Vec<String> = [
        image.host_openclaw().display().to_string(),
        "security".into(),
        "audit".into(),
        "--json".into(),
    ]
    .to_vec();
    let o = output(as_gateway(&host, &home, &unit, &unit.umask, &argv)).await;
    assert!(o.status.success(), "security audit: {}", show(&o));
    let audit: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = audit["findings"].as_array().unwrap();
    for f in findings {
        eprintln!("audit: {} {} {}", f["severity"], f["checkId"], f["title"]);
    }
    assert_eq!(audit["summary"]["critical"], 0, "{audit:#}");
    assert!(
        findings.iter().all(|f| f["severity"] != "critical"),
        "{audit:#}"
    );

    // UMask=0077: nothing under the gateway's home is readable by others.
    let mut stack: Vec<PathBuf> = vec![home.clone()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        assert_eq!(
            m.mode() & 0o077,
            0,
            "{} is {:o}",
            p.display(),
            m.mode() & 0o777
        );
        files += 1;
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(files > 4, "the gateway wrote nothing under its home");
    assert!(gateway.try_wait().unwrap().is_none(), "the gateway exited");
    let _ = gateway.kill().await;
    drop(host);
    drop(edge);
}
