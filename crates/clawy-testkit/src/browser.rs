//! Headless Chromium for browser tests: starts `chromedriver` on a free loopback port
//! with a throw-away profile and hands back a `fantoccini` client. Everything started
//! here runs in its own process group, which is killed when [`Browser`] is dropped, so a
//! failing test leaves no Chromium behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver + Chromium session.
pub struct Browser {
    pub client: fantoccini::Client,
    /// chromedriver's port on 127.0.0.1 (for Chrome DevTools commands).
    port: u16,
    driver: Option<Child>,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: `<workspace>/artifacts/browser/` (gitignored).
pub fn artifacts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/browser")
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium window of 1440×900.
    pub async fn start() -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: Drop kills chromedriver and the Chromium it started.
            .process_group(0)
            .kill_on_drop(true);
        let driver = cmd
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;

        let status_url = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(&status_url).send().await {
                if r.status().is_success() {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut browser_guard = DriverGuard(Some(driver));
        if !ready {
            bail!("chromedriver did not become ready on port {port}");
        }

        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--window-size=1440,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("opening a WebDriver session in Chromium")?;

        let driver = browser_guard.0.take().context("driver handle")?;
        Ok(Browser {
            client,
            port,
            driver: Some(driver),
            _profile: profile,
        })
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(
        &self,
        cmd: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let sid = self
            .client
            .session_id()
            .await?
            .context("no WebDriver session")?;
        let url = format!(
            "http://127.0.0.1:{}/session/{sid}/goog/cdp/execute",
            self.port
        );
        let resp = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "cmd": cmd, "params": params }))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("CDP {cmd} failed ({status}): {body}");
        }
        Ok(body)
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light again).
    pub async fn emulate_dark_mode(&self, dark: bool) -> anyhow::Result<()> {
        let value = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            serde_json::json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG of the current viewport as `artifacts/browser/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Saves a full-page PNG at `width`: the window is resized to the width first, then
    /// stretched to the document's height at that width.
    pub async fn screenshot_full(&self, name: &str, width: u32) -> anyhow::Result<PathBuf> {
        self.client.set_window_size(width, 900).await?;
        let h = self
            .client
            // The window's own chrome (outer − inner) comes on top of the document.
            .execute(
                "return document.documentElement.scrollHeight + (window.outerHeight - window.innerHeight)",
                vec![],
            )
            .await?
            .as_u64()
            .unwrap_or(900)
            .clamp(300, 8000) as u32;
        self.client.set_window_size(width, h).await?;
        let path = self.screenshot(name).await?;
        Ok(path)
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let client = self.client.clone();
        let closed = client.close().await;
        if let Some(mut driver) = self.driver.take() {
            kill_group(&driver);
            let _ = driver.wait().await;
        }
        closed?;
        Ok(())
    }
}

fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        // Negative pid = the whole process group we created for chromedriver.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            kill_group(c);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = &self.driver {
            kill_group(c);
        }
    }
}
