//! Throwaway network namespaces for network tests (DESIGN.md's test-environment
//! rules): every interface, bridge, tap and nftables table a test makes lives in a
//! namespace created here and deleted on drop, so nothing in the machine's own
//! namespace ever changes and no packet leaves the test's namespaces.

use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A network namespace named `clawy-t-<prefix>-<random>`, with `lo` up. Dropping it
/// kills every process still inside and deletes the namespace (and with it all its
/// interfaces).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let suffix: u32 = rand::thread_rng().r#gen();
        let name = format!("clawy-t-{prefix}-{suffix:08x}");
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating netns {name}"))?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// The tokio flavour of `command`, killed when dropped.
    pub fn tokio_command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c.kill_on_drop(true);
        c
    }

    /// Runs `argv` inside the namespace; fails (with stderr) unless it exits 0.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<String> {
        let (program, args) = argv.split_first().context("empty command")?;
        run(self.command(program).args(args))
    }

    /// Runs `argv` inside the namespace and returns its output whatever the status.
    pub fn output(&self, argv: &[&str]) -> anyhow::Result<Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// A veth pair between two test namespaces (never the root namespace): `if_a`
    /// with `addr_a` (CIDR) in `a`, `if_b` with `addr_b` in `b`, both up.
    pub fn veth_pair(
        a: &Netns,
        if_a: &str,
        addr_a: &str,
        b: &Netns,
        if_b: &str,
        addr_b: &str,
    ) -> anyhow::Result<()> {
        // Created inside `a` with the peer placed straight into `b`: the pair never
        // exists in the root namespace, not even for a moment.
        a.exec(&[
            "ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", &b.name,
        ])?;
        a.exec(&["ip", "addr", "add", addr_a, "dev", if_a])?;
        a.exec(&["ip", "link", "set", if_a, "up"])?;
        b.exec(&["ip", "addr", "add", addr_b, "dev", if_b])?;
        b.exec(&["ip", "link", "set", if_b, "up"])?;
        Ok(())
    }

    /// Lets the test process (root namespace) reach `target` (e.g. `127.0.0.1:8443`)
    /// inside this namespace WITHOUT adding any interface to the root namespace: a
    /// listener on the root's 127.0.0.1 pipes each connection through
    /// `ip netns exec <ns> socat - TCP:<target>`. Stops when the forwarder drops.
    pub async fn forward_tcp(&self, target: &str) -> anyhow::Result<PortForwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local_port = listener.local_addr()?.port();
        let ns = self.name.clone();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let ns = ns.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let child = tokio::process::Command::new("ip")
                        .args(["netns", "exec", &ns, "socat", "-", &format!("TCP:{target}")])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .kill_on_drop(true)
                        .spawn();
                    let Ok(mut child) = child else { return };
                    let (Some(mut stdin), Some(mut stdout)) =
                        (child.stdin.take(), child.stdout.take())
                    else {
                        return;
                    };
                    let (mut rd, mut wr) = conn.split();
                    // Each direction on its own, and the child's stdin is dropped
                    // (closed) at the client's EOF: socat then half-closes too.
                    let up = async move {
                        let _ = tokio::io::copy(&mut rd, &mut stdin).await;
                        drop(stdin);
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut stdout, &mut wr).await;
                        let _ = wr.shutdown().await;
                    };
                    tokio::join!(up, down);
                    let _ = child.kill().await;
                });
            }
        });
        Ok(PortForwarder { local_port, task })
    }

    /// PIDs of processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what is left inside (QEMU, listeners, agents), then delete the
        // namespace, which removes its interfaces and nftables tables with it.
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A root-namespace loopback port leading into a namespace (see `Netns::forward_tcp`).
#[derive(Debug)]
pub struct PortForwarder {
    local_port: u16,
    task: JoinHandle<()>,
}

impl PortForwarder {
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// `127.0.0.1:<port>` in the root namespace.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.local_port))
    }
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    fn link_names(ns: Option<&Netns>) -> String {
        match ns {
            Some(ns) => ns.exec(&["ip", "-o", "link", "show"]).unwrap(),
            None => run(Command::new("ip").args(["-o", "link", "show"])).unwrap(),
        }
    }

    #[test]
    fn netns_veth_between_namespaces_and_cleanup() {
        let root_before = link_names(None);
        let name;
        let mut sleeper;
        {
            let a = Netns::new("kit").unwrap();
            let b = Netns::new("kit").unwrap();
            name = a.name().to_owned();
            Netns::veth_pair(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
            a.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.2"])
                .unwrap();
            assert!(link_names(Some(&b)).contains("vb"));
            // Nothing of it is visible in the root namespace.
            assert_eq!(link_names(None), root_before);
            // A process left running is killed on drop.
            sleeper = a.command("sleep").arg("600").spawn().unwrap();
            // `ip netns exec` enters the namespace a moment after the spawn returns.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while a.pids().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(!a.pids().is_empty());
        }
        // Killed by the drop: wait returns promptly.
        assert!(!sleeper.wait().unwrap().success());
        let list = run(Command::new("ip").args(["netns", "list"])).unwrap();
        assert!(!list.contains(&name), "{list}");
    }

    #[tokio::test]
    async fn netns_forwarder_reaches_listener_inside() {
        let ns = Netns::new("fwd").unwrap();
        // A one-shot echo server inside the namespace, on its own loopback.
        let mut server = ns
            .tokio_command("socat")
            .args(["TCP-LISTEN:7777,bind=127.0.0.1,reuseaddr", "EXEC:cat"])
            .spawn()
            .unwrap();
        let fwd = ns.forward_tcp("127.0.0.1:7777").await.unwrap();
        let mut got = Vec::new();
        for _ in 0..50 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(fwd.local_addr()).await {
                s.write_all(b"ping\n").await.unwrap();
                s.shutdown().await.unwrap();
                got.clear();
                let _ = s.read_to_end(&mut got).await;
                if got == b"ping\n" {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(got, b"ping\n");
        let _ = server.kill().await;
    }
}
