//! A real Caddy (Debian's `caddy`, 2.6.2) for edge tests: its own temporary HOME,
//! XDG directories and storage, the admin API only on a unix socket, listeners on
//! loopback ports the test chooses. It starts from a bootstrap config (admin +
//! storage, no apps), like Debian's `caddy.service` starting from its Caddyfile;
//! the agent's edge code then pushes the real config through the admin API.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// `Host` header the bootstrap config allows on the admin socket.
pub const ADMIN_ORIGIN: &str = "caddy-admin";

#[derive(Debug)]
pub struct Caddy {
    child: Option<Child>,
    dir: TempDir,
    /// The network namespace Caddy runs in (`None`: the test's own).
    netns: Option<String>,
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

impl Caddy {
    /// Starts Caddy and waits (at most 15 s) for its admin socket.
    pub async fn start() -> anyhow::Result<Caddy> {
        Self::start_inner(None).await
    }

    /// Starts Caddy inside `netns` (beside an agent and its VMs there); its admin
    /// socket and storage stay reachable through the filesystem.
    pub async fn start_in(netns: &crate::netns::Netns) -> anyhow::Result<Caddy> {
        Self::start_inner(Some(netns.name().to_string())).await
    }

    async fn start_inner(netns: Option<String>) -> anyhow::Result<Caddy> {
        which("caddy").context("caddy is not installed (scripts/install-deps.sh)")?;
        let dir = tempfile::Builder::new().prefix("clawy-caddy-").tempdir()?;
        for d in ["home", "data", "config", "storage"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        let mut caddy = Caddy {
            child: None,
            dir,
            netns,
        };
        caddy.launch().await?;
        Ok(caddy)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// `file_system` storage root (certificates, the local CA).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The internal issuer's root certificate (exists once Caddy issued one).
    pub fn root_ca(&self) -> PathBuf {
        self.storage().join("pki/authorities/local/root.crt")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("caddy.log")
    }

    /// Caddy's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the Caddy process in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let sock = self.admin_socket();
        let _ = std::fs::remove_file(&sock);
        let bootstrap = serde_json::json!({
            "admin": {"listen": format!("unix/{}", sock.display()), "origins": [ADMIN_ORIGIN]},
            "storage": {"module": "file_system", "root": self.storage()},
        });
        let cfg = self.dir.path().join("bootstrap.json");
        std::fs::write(&cfg, serde_json::to_vec(&bootstrap)?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs Caddy: the child's pid is Caddy's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "caddy"]);
                c
            }
            None => Command::new("caddy"),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting caddy")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("caddy exited with {status}: {}", self.log());
                }
            }
            if self.admin_get("/config/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "caddy's admin socket did not answer within 15 s: {}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A blocking admin request with a raw HTTP/1.1 exchange (test helper; the
    /// product's client is `clawy_agent::edge::admin`). Returns (status, body).
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        let mut s = std::os::unix::net::UnixStream::connect(self.admin_socket())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {ADMIN_ORIGIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status from caddy")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.admin_request("GET", path, b"")
    }

    /// Stops Caddy the way `systemctl restart caddy` would, then starts it again
    /// from the bootstrap config: the pushed edge config is gone afterwards.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// Asks Caddy to stop (admin `/stop`), kills it after 5 s.
    pub fn stop(&mut self) {
        let _ = self.admin_request("POST", "/stop", b"");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(prog: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(prog);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{prog} not found")
}
