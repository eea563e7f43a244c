//! Starts the `pve-sim` binary (the Proxmox VE simulator, test-only) for a test:
//! a fresh state dir, a config with API tokens, optional templates, inside a test
//! network namespace when given (then VMs' taps join bridges there and the test
//! reaches the API and the control listener through root-namespace loopback
//! forwarders). Dropping it kills the simulator; the namespace's drop kills VMs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::netns::{Netns, PortForwarder};

/// One API token of the simulated node.
#[derive(Debug, Clone)]
pub struct SimToken {
    /// `user@realm!tokenid`
    pub id: String,
    pub secret: String,
    /// PVE privilege names; `*` = all.
    pub privileges: Vec<String>,
}

impl SimToken {
    /// `Authorization` header value.
    pub fn header(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret)
    }
}

#[derive(Debug, Clone)]
pub struct PveSimOptions {
    pub node: String,
    pub tokens: Vec<SimToken>,
    pub allowed_bridges: Vec<String>,
    /// The 401 delay (PVE: 3000 ms).
    pub auth_failure_delay_ms: u64,
    /// Templates to create at start: (vmid, image, bridge).
    pub templates: Vec<(u32, PathBuf, Option<String>)>,
    /// Extra top-level TOML lines.
    pub extra_toml: String,
}

impl Default for PveSimOptions {
    fn default() -> Self {
        PveSimOptions {
            node: "pve".into(),
            tokens: vec![SimToken {
                id: "clawy@pve!agent".into(),
                secret: uuid::Uuid::new_v4().to_string(),
                privileges: vec!["*".into()],
            }],
            allowed_bridges: vec!["vmbr0".into()],
            auth_failure_delay_ms: 3000,
            templates: Vec::new(),
            extra_toml: String::new(),
        }
    }
}

pub struct TestPveSim {
    bin: PathBuf,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    netns: Option<String>,
    child: Option<Child>,
    fwd_api: Option<PortForwarder>,
    fwd_control: Option<PortForwarder>,
    /// `127.0.0.1:<port>` of the API where the simulator runs (inside the netns).
    pub listen: String,
    /// `https://127.0.0.1:<port>/api2/json` reachable from the test process.
    pub base_url: String,
    /// `http://127.0.0.1:<port>` of the control listener, from the test process.
    pub control_url: String,
    pub control_token: String,
    pub fingerprint: String,
    pub ca_pem: String,
    pub tokens: Vec<SimToken>,
    pub node: String,
    pub log_path: PathBuf,
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl TestPveSim {
    pub async fn start(
        bin: &Path,
        opts: PveSimOptions,
        netns: Option<&Netns>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("pve-sim-").tempdir()?;
        let state = dir.path().join("state");
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\nnode = {}\nstate_dir = {}\naccelerator = \"tcg\"\nauth_failure_delay_ms = {}\nallowed_bridges = [{}]\n{}\n",
            toml_str(&opts.node),
            toml_str(&state.display().to_string()),
            opts.auth_failure_delay_ms,
            opts.allowed_bridges
                .iter()
                .map(|b| toml_str(b))
                .collect::<Vec<_>>()
                .join(", "),
            opts.extra_toml,
        );
        for t in &opts.tokens {
            toml.push_str(&format!(
                "\n[[tokens]]\nid = {}\nsecret = {}\nprivileges = [{}]\n",
                toml_str(&t.id),
                toml_str(&t.secret),
                t.privileges
                    .iter()
                    .map(|p| toml_str(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (vmid, image, bridge) in &opts.templates {
            toml.push_str(&format!(
                "\n[[templates]]\nvmid = {vmid}\nimage = {}\n",
                toml_str(&image.display().to_string())
            ));
            if let Some(b) = bridge {
                toml.push_str(&format!("bridge = {}\n", toml_str(b)));
            }
        }
        let config_path = dir.path().join("sim.toml");
        std::fs::write(&config_path, toml)?;
        let mut sim = TestPveSim {
            bin: bin.to_path_buf(),
            log_path: dir.path().join("pve-sim.log"),
            dir,
            config_path,
            netns: netns.map(|n| n.name().to_string()),
            child: None,
            fwd_api: None,
            fwd_control: None,
            listen: String::new(),
            base_url: String::new(),
            control_url: String::new(),
            control_token: String::new(),
            fingerprint: String::new(),
            ca_pem: String::new(),
            tokens: opts.tokens,
            node: opts.node,
        };
        sim.launch(netns).await?;
        Ok(sim)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn snippets_dir(&self) -> PathBuf {
        self.state_dir().join("snippets")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Writes the first API token's secret to a 0600 file in `dir` (as an
    /// operator would for the agent's `token_secret_file`) and returns its path.
    pub fn write_token_secret(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let token = self.tokens.first().context("the simulator has no token")?;
        let path = dir.join("pve-token");
        std::fs::write(&path, &token.secret)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// The agent's `[driver]` sections for the `proxmox` driver on this simulated
    /// node: its first token, its certificate pinned by fingerprint, `image_name`
    /// served by template 9000, VMIDs from `vmid_range`, snippets in its storage.
    pub fn agent_driver_toml(
        &self,
        token_secret_file: &Path,
        image_name: &str,
        vmid_range: &str,
    ) -> String {
        let token_id = self
            .tokens
            .first()
            .map(|t| t.id.as_str())
            .unwrap_or_default();
        format!(
            "[driver]\nkind = \"proxmox\"\n[driver.proxmox]\napi_url = {api}\nnode = {node}\n\
             token_id = {tid}\ntoken_secret_file = {secret}\nfingerprint = {fp}\n\
             vmid_range = {range}\ntemplates = {{ {img} = 9000 }}\nsnippets_dir = {snip}\n",
            api = toml_str(&format!("https://{}/api2/json", self.listen)),
            node = toml_str(&self.node),
            tid = toml_str(token_id),
            secret = toml_str(&token_secret_file.display().to_string()),
            fp = toml_str(&self.fingerprint),
            range = toml_str(vmid_range),
            img = toml_str(image_name),
            snip = toml_str(&self.snippets_dir().display().to_string()),
        )
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        }
    }

    async fn launch(&mut self, netns: Option<&Netns>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut child = self
            .command()
            .arg("--config")
            .arg(&self.config_path)
            .env("PVE_SIM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning pve-sim")?;
        let stdout = child.stdout.take().context("pve-sim stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let info: Value = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!("pve-sim did not start; log:\n{}", self.log());
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        break v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(c) = self.child.as_mut() {
                        if let Some(st) = c.try_wait()? {
                            bail!("pve-sim exited ({st}); log:\n{}", self.log());
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("pve-sim closed stdout; log:\n{}", self.log());
                }
            }
        };
        let s = |k: &str| {
            info.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        self.listen = s("listen");
        self.fingerprint = s("fingerprint");
        self.control_token = s("control_token");
        self.ca_pem = std::fs::read_to_string(s("ca")).context("reading the CA")?;
        let control = s("control");
        // Later restarts keep the same ports.
        let cfg = std::fs::read_to_string(&self.config_path)?
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = {}", toml_str(&self.listen)),
                1,
            )
            .replacen(
                "control_listen = \"127.0.0.1:0\"",
                &format!(
                    "control_listen = {}\ncontrol_token = {}",
                    toml_str(&control),
                    toml_str(&self.control_token)
                ),
                1,
            );
        std::fs::write(&self.config_path, cfg)?;
        match netns {
            Some(ns) => {
                if self.fwd_api.is_none() {
                    self.fwd_api = Some(ns.forward_tcp(&self.listen).await?);
                    self.fwd_control = Some(ns.forward_tcp(&control).await?);
                }
                let api = self
                    .fwd_api
                    .as_ref()
                    .map(|f| f.local_addr())
                    .context("forwarder")?;
                let ctl = self
                    .fwd_control
                    .as_ref()
                    .map(|f| f.local_addr())
                    .context("forwarder")?;
                self.base_url = format!("https://{api}/api2/json");
                self.control_url = format!("http://{ctl}");
            }
            None => {
                self.base_url = format!("https://{}/api2/json", self.listen);
                self.control_url = format!("http://{control}");
            }
        }
        Ok(())
    }

    /// Kill the simulator process (VMs keep running, as after a daemon crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start the process again on the same ports and state.
    pub async fn restart_process(&mut self, netns: Option<&Netns>) -> anyhow::Result<()> {
        self.kill();
        self.launch(netns).await
    }

    /// A control-listener request (fault knobs, state).
    pub async fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.control_url);
        let mut req = match method {
            "GET" => client.get(&url),
            _ => client.post(&url),
        };
        req = req.bearer_auth(&self.control_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("control {method} {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// A reqwest client that trusts only the simulator's CA.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .build()?)
    }
}

/// The `pve-sim` binary beside the running test's (`target/<profile>/pve-sim`),
/// built on demand: a test of another package has no `CARGO_BIN_EXE_pve-sim`.
pub fn bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target/<profile> directory")?;
    let bin = profile_dir.join("pve-sim");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "pve-sim", "--bin", "pve-sim"])
            .status()?;
        if !st.success() {
            bail!("building pve-sim failed: {st}");
        }
    }
    Ok(bin)
}

impl Drop for TestPveSim {
    fn drop(&mut self) {
        self.kill();
    }
}
