//! `clawy admin …` and `clawy server` as real processes on one data directory.

use clawy_testkit::db::TestDatabase;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLAWY: &str = env!("CARGO_BIN_EXE_clawy");

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

/// Runs `clawy admin --config CFG ARGS…` with `stdin`.
fn admin(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(CLAWY)
        .arg("admin")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CLAWY_DATABASE_URL")
        .env_remove("CLAWY_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading stdin (e.g. a config error): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
