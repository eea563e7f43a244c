//! Helpers for the API client command tests: a real `clawy server` process on a
//! fresh database, accounts and keys made with `clawy admin`, and a runner for
//! `clawy <command>` with its own config dir and environment.

use clawy_testkit::db::TestDatabase;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CLAWY: &str = env!("CARGO_BIN_EXE_clawy");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `clawy server` process; killed on drop (also when the test fails).
pub struct Server {
    child: Child,
    pub config: PathBuf,
    pub base: String,
    _db: TestDatabase,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start() -> Server {
        let db = TestDatabase::new().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = db.temp_dir().join("clawy.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\n\
                 bcrypt_cost = 4\ninsecure_test_mode = true\n",
                db.data_dir().display(),
                db.url()
            ),
        )
        .unwrap();
        let child = Command::new(CLAWY)
            .arg("server")
            .arg("--config")
            .arg(&config)
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(server_log())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            config,
            base: format!("http://127.0.0.1:{port}"),
            _db: db,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", server.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Creates an account with `clawy admin` and returns an API key of `tier` for it.
    pub fn user_with_key(&self, email: &str, tier: &str) -> String {
        let out = admin(
            &self.config,
            &["create-user", email],
            "Quartz-lantern-47-orbit!\n",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        clawy_testkit::secrets::register("Quartz-lantern-47-orbit!");
        self.key_for(email, tier)
    }

    pub fn key_for(&self, email: &str, tier: &str) -> String {
        let out = admin(&self.config, &["create-api-key", email, "--tier", tier], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let key = text(&out.stdout).trim().to_string();
        clawy_testkit::secrets::register(&key);
        key
    }
}

/// The server's log goes where the final secrets scan reads it
/// (`clawy_testkit::secrets`), or nowhere when the run collects no artifacts.
fn server_log() -> Stdio {
    clawy_testkit::secrets::artifacts_subdir("logs")
        .and_then(|dir| {
            std::fs::File::create(dir.join(clawy_testkit::secrets::artifact_name("-server.log")))
                .ok()
        })
        .map_or_else(Stdio::null, Stdio::from)
}

pub fn admin(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(CLAWY);
    cmd.arg("admin")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CLAWY_DATABASE_URL")
        .env_remove("CLAWY_DATA_DIR");
    output_with_stdin(&mut cmd, stdin)
}

/// Runs `cmd` with `stdin` written to it, collecting stdout and stderr.
pub fn output_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading stdin (e.g. a config error): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Runs `clawy` API client commands as a user would: its own `XDG_CONFIG_HOME`,
/// and only the `CLAWY_SERVER` / `CLAWY_API_KEY` this test sets.
pub struct Cli {
    pub config_home: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            config_home: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// A CLI pointed at `server` with `key` through the environment.
    pub fn with_key(server: &str, key: &str) -> Cli {
        let mut c = Cli::new();
        c.env.push(("CLAWY_SERVER".into(), server.into()));
        c.env.push(("CLAWY_API_KEY".into(), key.into()));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(CLAWY);
        cmd.args(args)
            .env_remove("CLAWY_SERVER")
            .env_remove("CLAWY_API_KEY")
            .env("XDG_CONFIG_HOME", self.config_home.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        output_with_stdin(&mut cmd, stdin)
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "clawy {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stderr),
            text(&out.stdout)
        );
        text(&out.stdout)
    }

    /// Runs with `--json` semantics: exit 0 and stdout parsed as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Runs and asserts the exit code; returns stderr.
    pub fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "clawy {args:?}: stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }
}
