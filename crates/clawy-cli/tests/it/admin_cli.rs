//! `clawy admin …` and `clawy server` as real processes on one data directory.

use crate::cli_support::{CLAWY, admin, output_with_stdin, text};
use clawy_testkit::db::TestDatabase;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the server process even when the test fails.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, db: &TestDatabase, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("clawy.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\n\
         data_dir = \"{}\"\n\
         database_url = \"{}\"\n\
         bcrypt_cost = 4\n\
         insecure_test_mode = true\n{extra}",
        db.data_dir().display(),
        db.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn admin_create_user_and_key_then_key_works_against_server() {
    let db = TestDatabase::new().await.unwrap();
    let port = free_port();
    let cfg = write_config(db.temp_dir(), &db, port, "");

    // AUTH-1: the signup policy applies to the CLI too.
    let out = admin(
        &cfg,
        &["create-user", "ops@example.test", "--operator"],
        "password123\n",
    );
    assert!(!out.status.success(), "weak password accepted");
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("password"), "{err}");
    assert!(
        !err.contains("password123"),
        "the password is not echoed: {err}"
    );

    let password = "Quartz-lantern-47-orbit!";
    let out = admin(
        &cfg,
        &["create-user", "ops@example.test", "--operator"],
        &format!("{password}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created operator ops@example.test"));
    assert!(!text(&out.stdout).contains(password) && !text(&out.stderr).contains(password));

    // Same email again: a clear refusal.
    let out = admin(
        &cfg,
        &["create-user", "ops@example.test"],
        &format!("{password}\n"),
    );
    assert!(!out.status.success());

    let out = admin(
        &cfg,
        &[
            "create-api-key",
            "ops@example.test",
            "--tier",
            "read",
            "--name",
            "ci",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("clawy_r_"), "{key}");
    assert!(text(&out.stderr).contains("shown only now"));

    let out = admin(
        &cfg,
        &["create-api-key", "nobody@example.test", "--tier", "read"],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nobody@example.test"));

    let out = admin(
        &cfg,
        &["create-api-key", "ops@example.test", "--tier", "root"],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("root"), "{}", text(&out.stderr));

    // The server on the same config accepts the key.
    let server = ServerProcess(
        Command::new(CLAWY)
            .arg("server")
            .arg("--config")
            .arg(&cfg)
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = client
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["email"], "ops@example.test");
    assert_eq!(me["is_operator"], true);
    assert_eq!(me["tier"], "read");
    drop(server);
}

#[tokio::test]
async fn unknown_config_key_is_refused_by_name() {
    let db = TestDatabase::new().await.unwrap();
    let cfg = write_config(db.temp_dir(), &db, free_port(), "listne = \"0.0.0.0:1\"\n");
    let out = admin(
        &cfg,
        &["create-user", "a@example.test"],
        "Quartz-lantern-47-orbit!\n",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("listne"), "{err}");

    let out = Command::new(CLAWY)
        .arg("server")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("listne"));
}

/// The command between backticks in an operator-facing message.
fn shown_command(message: &str) -> String {
    let mut parts = message.split('`');
    parts.next();
    parts
        .next()
        .unwrap_or_else(|| panic!("no `command` in: {message}"))
        .to_string()
}

/// Runs a displayed `clawy …` command through a shell as the operator would type
/// it (the config found through `CLAWY_CONFIG`, the `clawy` binary on `PATH`).
fn run_shown(config: &Path, command: &str, stdin: &str) -> Output {
    assert!(command.starts_with("clawy admin "), "{command}");
    let bin_dir = Path::new(CLAWY).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = output_with_stdin(
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PATH", path)
            .env("CLAWY_CONFIG", config)
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_DATA_DIR"),
        stdin,
    );
    assert!(
        out.status.success(),
        "`{command}` failed: {}",
        text(&out.stderr)
    );
    out
}

/// The hints an operator is shown when DNS publication cannot proceed (no TSIG
/// key; a host without a public address) work when run as shown, with only the
/// placeholders filled in: afterwards the instance's record is in the real DNS
/// server (knot) and the TSIG secret never appears in the command's output.
#[tokio::test]
async fn access_1_dns_hints_work_as_shown_and_publish_the_record() {
    use clawy_core::instances::{CreateInstance, InstanceState};
    use clawy_core::{Actor, ClientInfo, Core, SecretString};
    use clawy_orchestrator::clients::AgentClients;
    use clawy_orchestrator::dns_sync::DnsSync;
    use clawy_orchestrator::{JobRunner, RunnerConfig};
    use clawy_testkit::fake_agent::FakeAgent;
    use clawy_testkit::knot::Knot;
    use std::sync::Arc;

    let knot = Knot::start("claws.test").await.unwrap();
    let db = TestDatabase::new().await.unwrap();
    let cfg = write_config(
        db.temp_dir(),
        &db,
        free_port(),
        &format!(
            "instances_domain = \"claws.test\"\ndns_server = \"{}\"\ndns_zone = \"{}\"\ndns_timeout_secs = 2\n",
            knot.addr(),
            knot.zone()
        ),
    );
    let config = clawy_core::ServerConfig::load(Some(&cfg)).unwrap();
    let core = Arc::new(Core::open(config).await.unwrap());
    let clients = Arc::new(AgentClients::new(core.clone(), Duration::from_secs(5)));
    let agent = FakeAgent::start(
        "DE-fra1",
        clawy_proto::agent::Resources {
            vcpus: 16,
            memory_mib: 64 * 1024,
            disk_gib: 512,
        },
        "10.91.1",
        [22000, 22999],
    )
    .await
    .unwrap();
    let host = core
        .hosts()
        .register(
            &Actor::system(),
            clawy_core::hosts::RegisterHost {
                name: "fra1".into(),
                url: agent.base_url.clone(),
                fingerprint: agent.fingerprint.clone(),
                token: SecretString::from(agent.token.clone()),
                region: "DE".into(),
                site: "lab1".into(),
                enabled: true,
            },
        )
        .await
        .unwrap();
    let info = clients
        .for_host(&host.id)
        .await
        .unwrap()
        .host()
        .await
        .unwrap();
    core.hosts().update_info(&host.id, &info).await.unwrap();
    let user = core
        .accounts()
        .signup(
            "owner@example.test",
            &SecretString::from("Quartz-lantern-47-orbit!".to_string()),
            &Actor::anonymous(ClientInfo::new("192.0.2.1".parse().unwrap(), None)),
        )
        .await
        .unwrap();
    let inst = core
        .instances()
        .create(
            &Actor::system(),
            &user.id,
            CreateInstance {
                name: "alpha".into(),
                ..CreateInstance::default()
            },
        )
        .await
        .unwrap();
    let runner = JobRunner::new(
        core.clone(),
        clients.clone(),
        RunnerConfig {
            workers: 1,
            worker_prefix: "t".into(),
            idle_poll: Duration::from_millis(20),
            state_poll: Duration::from_millis(20),
            watch_health: Duration::from_secs(5),
            ..RunnerConfig::default()
        },
    );
    let mut n = 0;
    while runner.run_one("w").await.unwrap().is_some() {
        n += 1;
        assert!(n < 100, "jobs never drain");
    }
    let got = core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running);
    let hostname = got.hostname.clone().unwrap();

    // 1. No TSIG key: the pass is blocked and says what to run.
    let sync = DnsSync::new(core.clone());
    let blocked = sync
        .pass(false)
        .await
        .blocked
        .expect("blocked without a key");
    let cmd = shown_command(&blocked);
    assert!(cmd.contains("<name>"), "{cmd}");
    let out = run_shown(
        &cfg,
        &cmd.replace("<name>", knot.key_name()),
        &format!("{}\n", knot.secret_b64()),
    );
    assert!(!text(&out.stdout).contains(knot.secret_b64()));
    assert!(!text(&out.stderr).contains(knot.secret_b64()));

    // 2. The key works; the host has no public address: the instance's DNS error
    // (shown to operators) says what to run.
    let r = sync.pass(false).await;
    assert_eq!(r.blocked, None, "{r:?}");
    let got = core.instances().get(&user.id, &inst.id).await.unwrap();
    let error = got
        .dns
        .error
        .clone()
        .expect("an operator-visible DNS error");
    let cmd = shown_command(&error);
    assert!(cmd.contains('…'), "{cmd}");
    run_shown(&cfg, &cmd.replace('…', "192.0.2.10"), "");

    // 3. Now the record is published.
    let r = sync.pass(false).await;
    assert_eq!(r.blocked, None, "{r:?}");
    assert_eq!(
        knot.kdig(&hostname, "A").unwrap(),
        ["192.0.2.10"],
        "{}",
        knot.log()
    );
    let got = core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.dns.state.as_deref(), Some("published"));
    assert_eq!(got.dns.error, None);
}
