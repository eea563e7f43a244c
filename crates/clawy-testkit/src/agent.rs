//! Starts the real agent binary for tests (`clawy-agent`, or `clawy` with its `agent`
//! subcommand): a fresh state dir, a config
//! file, a token made with `clawy agent token create`, and the certificate
//! fingerprint and address the agent prints at start-up. With a network namespace
//! the agent runs inside it (bridge, taps and nftables stay there) and the test
//! reaches its API through a root-namespace loopback forwarder.
//!
//! Dropping a `TestAgent` kills the agent and every QEMU process of its VMs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::netns::{Netns, PortForwarder};

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Directory holding base images (`images_dir`).
    pub images_dir: Option<PathBuf>,
    /// Extra top-level TOML lines (e.g. `max_vcpus = 2`).
    pub extra_toml: String,
    /// A `[network]` section body; `None` = no network (no interface is touched).
    pub network_toml: Option<String>,
    /// The `[driver]` sections (`[driver]`, `[driver.qemu]` or
    /// `[driver.proxmox]`); the default is the qemu driver with TCG.
    pub driver_toml: String,
    pub stop_timeout_secs: u64,
}

/// `[driver]` for the qemu driver with TCG plus `extra` lines in `[driver.qemu]`
/// (e.g. `pin_cpus = true`).
pub fn qemu_driver_toml(extra: &str) -> String {
    format!("[driver]\nkind = \"qemu\"\n[driver.qemu]\naccelerator = \"tcg\"\n{extra}\n")
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            images_dir: None,
            extra_toml: String::new(),
            network_toml: None,
            driver_toml: qemu_driver_toml(""),
            stop_timeout_secs: 3,
        }
    }
}

pub struct TestAgent {
    bin: PathBuf,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    netns: Option<String>,
    child: Option<Child>,
    forwarder: Option<PortForwarder>,
    /// `https://127.0.0.1:<port>` reachable from the test process.
    pub base_url: String,
    /// `AA:BB:…` SHA-256 of the agent's certificate, as printed at start-up.
    pub fingerprint: String,
    /// A live bearer token (created before the first start).
    pub token: String,
    /// Everything the agent wrote to stderr so far goes here.
    pub log_path: PathBuf,
}

impl TestAgent {
    /// Write a config, create a token, start the agent (inside `netns` if given)
    /// and wait until it listens.
    pub async fn start(
        bin: &Path,
        opts: AgentOptions,
        netns: Option<&Netns>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("clawy-agent-").tempdir()?;
        let state_dir = dir.path().join("state");
        let images_dir = opts
            .images_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("images"));
        std::fs::create_dir_all(&images_dir)?;
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nimages_dir = \"{}\"\nlocation = \"TEST-lab1\"\nstop_timeout_secs = {}\n{}\n",
            state_dir.display(),
            images_dir.display(),
            opts.stop_timeout_secs,
            opts.extra_toml
        );
        if let Some(net) = &opts.network_toml {
            toml.push_str("\n[network]\n");
            toml.push_str(net);
            toml.push('\n');
        }
        toml.push('\n');
        toml.push_str(&opts.driver_toml);
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, toml)?;
        let log_path = dir.path().join("agent.log");
        let mut agent = TestAgent {
            bin: bin.to_path_buf(),
            config_path,
            netns: netns.map(|n| n.name().to_string()),
            child: None,
            forwarder: None,
            base_url: String::new(),
            fingerprint: String::new(),
            token: String::new(),
            log_path,
            dir,
        };
        let out = agent.cli(&["token", "create", "--name", "test"])?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        agent.token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        crate::secrets::register(&agent.token);
        agent.launch(netns).await?;
        Ok(agent)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The agent command: `clawy-agent`, or `clawy agent` when `bin` is the
    /// all-in-one `clawy` binary. `prefix` runs it through another program (`ip netns
    /// exec NS`).
    fn agent_command(&self, prefix: &[&str]) -> Command {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        if self.bin.file_name().is_some_and(|n| n == "clawy") {
            cmd.arg("agent");
        }
        cmd
    }

    fn netns_prefix(&self) -> Vec<&str> {
        match &self.netns {
            Some(ns) => vec!["ip", "netns", "exec", ns],
            None => Vec::new(),
        }
    }

    /// Run `<agent> --config <cfg> <args…>` (outside any namespace: token and
    /// fingerprint commands touch only files).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_cli(&[], args)
    }

    /// Run `<agent> --config <cfg> <args…>` inside the agent's namespace.
    pub fn cli_in_netns(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_cli(&self.netns_prefix(), args)
    }

    fn run_cli(&self, prefix: &[&str], args: &[&str]) -> anyhow::Result<Output> {
        self.agent_command(prefix)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running the agent")
    }

    async fn launch(&mut self, netns: Option<&Netns>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = self.agent_command(&self.netns_prefix());
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("CLAWY_LOG", "info,clawy_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().context("spawning the agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!("agent did not start in time; log:\n{}", self.log());
            }
            let line = match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(c) = self.child.as_mut() {
                        if let Some(status) = c.try_wait()? {
                            bail!("agent exited ({status}); log:\n{}", self.log());
                        }
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("agent closed stdout; log:\n{}", self.log())
                }
            };
            if let Some(fp) = line.strip_prefix("agent certificate fingerprint (SHA-256): ") {
                self.fingerprint = fp.trim().to_string();
            } else if let Some(a) = line.strip_prefix("listening on https://") {
                addr = Some(a.trim().to_string());
            }
        }
        let addr = addr.context("no address")?;
        match netns {
            Some(ns) => {
                let fwd = ns.forward_tcp(&addr).await?;
                self.base_url = format!("https://{}", fwd.local_addr());
                self.forwarder = Some(fwd);
            }
            None => self.base_url = format!("https://{addr}"),
        }
        Ok(())
    }

    /// The agent process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9` the agent (VMs keep running).
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.forwarder = None;
    }

    /// Kill the agent and start it again on the same state dir.
    pub async fn restart(&mut self, netns: Option<&Netns>) -> anyhow::Result<()> {
        self.kill_agent();
        self.launch(netns).await
    }

    /// PIDs of QEMU processes of this agent's VMs (matched by their QMP socket path).
    pub fn qemu_pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.state_dir().join("vms")) else {
            return out;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let Some(id) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let sock = dir.join("qmp.sock").display().to_string();
            let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&sock))
                .unwrap_or(false);
            if alive {
                out.push((id, pid));
            }
        }
        out
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill_agent();
        for (_, pid) in self.qemu_pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The final secrets scan reads the agent's log too (its tokens, the VMs'
        // secrets in seeds must never appear there).
        if let Some(dir) = crate::secrets::artifacts_subdir("logs") {
            let _ = std::fs::copy(
                &self.log_path,
                dir.join(crate::secrets::artifact_name("-agent.log")),
            );
        }
    }
}
