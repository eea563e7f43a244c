//! A real authoritative DNS server for RFC 2136 tests: Debian's `knot` (knotd
//! 3.2) started by the test on a free loopback port from one generated config,
//! with one zone that accepts TSIG-signed (hmac-sha256) dynamic updates.
//! `zonefile-sync: 0` writes every update to the zone file at once, so a
//! restarted server keeps them (with `-1` updates were lost on restart).

use anyhow::{Context, bail};
use base64::Engine as _;
use rand::RngCore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

#[derive(Debug)]
pub struct Knot {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    zone: String,
    key_name: String,
    secret_b64: String,
}

fn free_udp_tcp_port() -> anyhow::Result<u16> {
    // knot listens on both UDP and TCP: find a port free for both.
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free UDP+TCP port on 127.0.0.1")
}

impl Knot {
    /// Starts knotd serving `zone` (e.g. `claws.test`) and waits (≤ 10 s) until
    /// it answers the zone's SOA.
    pub async fn start(zone: &str) -> anyhow::Result<Knot> {
        let dir = tempfile::Builder::new().prefix("clawy-knot-").tempdir()?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let mut knot = Knot {
            child: None,
            port: free_udp_tcp_port()?,
            zone: zone.trim_end_matches('.').to_owned(),
            key_name: "clawy-test-key".to_owned(),
            secret_b64: base64::engine::general_purpose::STANDARD.encode(secret),
            dir,
        };
        crate::secrets::register(&knot.secret_b64);
        knot.write_files()?;
        knot.launch().await?;
        Ok(knot)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The TSIG secret, base64 as in knot's config.
    pub fn secret_b64(&self) -> &str {
        &self.secret_b64
    }

    pub fn secret(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.secret_b64)
            .unwrap_or_default()
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("knot.conf")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    fn write_files(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        for sub in ["run", "db", "zones"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let conf = format!(
            r#"server:
    rundir: "{run}"
    listen: 127.0.0.1@{port}
database:
    storage: "{db}"
key:
  - id: {key}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: clawy-update
    key: {key}
    action: update
template:
  - id: default
    storage: "{zones}"
    file: "%s.zone"
    zonefile-sync: 0
    acl: clawy-update
zone:
  - domain: {zone}
log:
  - target: stderr
    any: info
"#,
            run = d.join("run").display(),
            db = d.join("db").display(),
            zones = d.join("zones").display(),
            port = self.port,
            key = self.key_name,
            secret = self.secret_b64,
            zone = self.zone,
        );
        std::fs::write(self.conf_path(), conf)?;
        let zonefile = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n",
            zone = self.zone
        );
        std::fs::write(
            d.join("zones").join(format!("{}.zone", self.zone)),
            zonefile,
        )?;
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("knot.log"))?;
        let child = Command::new(knotd()?)
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting knotd (install knot)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("knotd exited with {status}: {}", self.log());
                }
            }
            if let Ok(out) = self.kdig(&self.zone.clone(), "SOA") {
                if !out.is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("knotd did not answer within 10 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kdig +short` answers for `name` (records of other types come back empty).
    pub fn kdig(&self, name: &str, rtype: &str) -> anyhow::Result<Vec<String>> {
        let out: Output = Command::new("kdig")
            .arg(format!("@{}", self.addr().ip()))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+short", "+timeout=1", "+retry=0"])
            .arg(name)
            .arg(rtype)
            .output()
            .context("running kdig (install knot-dnsutils)")?;
        if !out.status.success() {
            bail!("kdig failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(";;") {
            bail!("kdig: {text}");
        }
        Ok(text
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Kills knotd (SIGKILL: the harshest stop) and starts it again on the same
    /// port from the same files.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The zone file as knot last wrote it.
    pub fn zone_file(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("zones")
                .join(format!("{}.zone", self.zone)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn knotd() -> anyhow::Result<&'static Path> {
    for p in ["/usr/sbin/knotd", "/usr/bin/knotd"] {
        if Path::new(p).exists() {
            return Ok(Path::new(p));
        }
    }
    bail!("knotd not found (install knot)")
}
