//! Runs `clawy up` the way the README tells people to try it: inside a network
//! namespace (`ip netns exec NS clawy up`), reached from the test through the
//! testkit's loopback forwarder. Dropping `Up` kills it and the namespace (with the
//! agent and every QEMU inside).

use clawy_testkit::netns::{Netns, PortForwarder};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli_support::{CLAWY, Cli, admin, text};

#[derive(Default)]
pub struct UpOptions {
    /// `CLAWY_OPERATOR_PASSWORD`; `None` = let `clawy up` generate and print one.
    pub operator_password: Option<String>,
    /// Extra `KEY=value` environment for `clawy up`.
    pub env: Vec<(String, String)>,
    /// Let `clawy up` choose its guest itself (`--guest auto`) from this image
    /// cache (`CLAWY_GUEST_IMAGE_CACHE`); `None`: the stand-in via `CLAWY_GUEST_IMAGE`.
    pub guest_cache: Option<PathBuf>,
}

pub struct Up {
    child: Option<tokio::process::Child>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    forwarder: Option<PortForwarder>,
    pub base: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    // Declared last: dropped after the child (fields drop in order).
    pub ns: Netns,
    _dir: tempfile::TempDir,
}

impl Up {
    /// A fresh namespace and data dir, then `clawy up` in it.
    pub async fn start(opts: UpOptions) -> Up {
        let dir = tempfile::Builder::new()
            .prefix("clawy-up-")
            .tempdir()
            .unwrap();
        let ns = Netns::new("up").unwrap();
        // As `ip netns add` leaves it: loopback down. `clawy up` must cope (the README
        // tells people to run it in a fresh namespace).
        ns.exec(&["ip", "link", "set", "lo", "down"]).unwrap();
        let mut up = Up {
            child: None,
            stdout: Arc::new(Mutex::new(Vec::new())),
            forwarder: None,
            base: String::new(),
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("up.log"),
            ns,
            _dir: dir,
        };
        up.launch(&opts).await;
        up
    }

    /// Starts (or restarts) `clawy up` on the same namespace and data dir.
    pub async fn launch(&mut self, opts: &UpOptions) {
        self.stdout.lock().unwrap().clear();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = self.ns.tokio_command(CLAWY);
        cmd.arg("up")
            .env_remove("CLAWY_DATABASE_URL")
            .env_remove("CLAWY_CONFIG")
            .env_remove("CLAWY_BASE_URL")
            .env("CLAWY_DATA_DIR", &self.data_dir)
            .env("CLAWY_LISTEN", "127.0.0.1:8080")
            .env("CLAWY_UP_ACCELERATOR", "tcg")
            .env("CLAWY_BCRYPT_COST", "4")
            .env("CLAWY_INSECURE_TEST_MODE", "true")
            .env("CLAWY_METRICS_INTERVAL_SECS", "2")
            .env("CLAWY_RECONCILE_INTERVAL_SECS", "5")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        match &opts.guest_cache {
            Some(cache) => cmd
                .env_remove("CLAWY_GUEST_IMAGE")
                .env("CLAWY_GUEST_IMAGE_CACHE", cache),
            None => {
                let image = clawy_testkit::guest::test_guest_image()
                    .unwrap_or_else(|e| panic!("the test guest image: {e:#}"));
                cmd.env("CLAWY_GUEST_IMAGE", image)
            }
        };
        match &opts.operator_password {
            Some(p) => cmd.env("CLAWY_OPERATOR_PASSWORD", p),
            None => cmd.env_remove("CLAWY_OPERATOR_PASSWORD"),
        };
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let lines = self.stdout.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                lines.lock().unwrap().push(l);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if self.stdout_text().contains("dashboard:") {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("clawy up exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "clawy up did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.forwarder.is_none() {
            let fwd = self.ns.forward_tcp("127.0.0.1:8080").await.unwrap();
            self.base = format!("http://{}", fwd.local_addr());
            self.forwarder = Some(fwd);
        }
        // The dashboard answers through the forwarder.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz through the forwarder"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value after `label:` on `clawy up`'s summary.
    pub fn summary(&self, label: &str) -> Option<String> {
        let key = format!("{label}:");
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.trim().strip_prefix(&key).map(|v| v.trim().to_string()))
    }

    /// SIGTERM (like Ctrl-C) and wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().unwrap();
        // `ip netns exec` execs clawy, so this pid is clawy itself.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("clawy up did not stop within 30 s of SIGTERM")
            .unwrap()
    }

    /// kill -9: no shutdown at all (the agent child is left running).
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let _ = child.wait().await;
    }

    /// `clawy agent … run` processes in the namespace.
    pub fn agent_count(&self) -> usize {
        self.ns
            .pids()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("agent\0--config") && c.ends_with("run\0")
                    })
                    .unwrap_or(false)
            })
            .count()
    }

    /// `clawy admin …` on `clawy up`'s data dir (the SQLite file is shared).
    pub fn admin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let cfg = self.data_dir.join("admin.toml");
        std::fs::write(
            &cfg,
            format!("data_dir = \"{}\"\n", self.data_dir.display()),
        )
        .unwrap();
        admin(&cfg, args, stdin)
    }

    /// A user with an API key of `tier`, and a CLI pointed at this platform with it.
    pub fn user_cli(&self, email: &str, tier: &str) -> Cli {
        let out = self.admin(&["create-user", email], "Quartz-lantern-47-orbit!\n");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = self.admin(&["create-api-key", email, "--tier", tier], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        Cli::with_key(&self.base, text(&out.stdout).trim())
    }

    /// QEMU processes running in the namespace (one per live VM).
    pub fn qemu_count(&self) -> usize {
        self.ns
            .pids()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
                    .unwrap_or(false)
            })
            .count()
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- clawy up stdout ---\n{}\n--- log ---\n{}",
                self.stdout_text(),
                self.log()
            );
        }
        // The final secrets scan reads clawy up's log (not its stdout, which shows the
        // operator's password once, by design).
        if let Some(dir) = clawy_testkit::secrets::artifacts_subdir("logs") {
            let _ = std::fs::copy(
                &self.log_path,
                dir.join(clawy_testkit::secrets::artifact_name("-up.log")),
            );
        }
        // The namespace's drop kills clawy, its agent and QEMU.
    }
}

/// Logs in through the dashboard's form (CSRF cookie + token), as a browser would.
/// Returns the status of the POST and whether a session cookie was set.
pub async fn web_login(base: &str, email: &str, password: &str) -> (u16, bool) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let cookies: Vec<String> = page
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or("").to_string())
        .collect();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("login form has a csrf_token")
        .to_string();
    let resp = http
        .post(format!("{base}/login"))
        .header(reqwest::header::COOKIE, cookies.join("; "))
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let session = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.contains("session") && !c.contains("Max-Age=0"));
    (resp.status().as_u16(), session)
}
