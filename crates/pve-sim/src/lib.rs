//! `pve-sim`: a Proxmox VE API simulator for tests and development — never for
//! production. It serves the subset of PVE's REST API that Clawy's `proxmox`
//! driver uses, with PVE's behaviour (UPID tasks, locks, error shapes, schema
//! validation) checked against PVE's published schema and source, and it boots
//! real QEMU guests for the VMs it "hosts".
//!
//! Start it in-process with [`SimHandle::start`], or run the `pve-sim` binary.
//! The schema subset and its validator are public ([`schema::validate_request`])
//! so a client's conformance test can check every request it sends.

pub mod api;
pub mod clock;
pub mod config;
pub mod control;
pub mod error;
pub mod faults;
pub mod http;
pub mod node;
pub mod schema;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use config::{SimConfig, TemplateConfig, TokenConfig};
pub use node::Node;

struct Serving {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// The HTTPS API listener, restartable (the node-restart fault knob).
pub struct ApiServer {
    node: Arc<Node>,
    addr: SocketAddr,
    identity: tls::Identity,
    serving: Mutex<Option<Serving>>,
}

impl ApiServer {
    fn serve(&self, listener: TcpListener) {
        let (tx, rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(self.identity.server.clone());
        let join = tokio::spawn(http::server::serve(
            listener,
            acceptor,
            self.node.clone(),
            rx,
        ));
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(Serving { stop: tx, join });
    }

    fn stop(&self) -> Option<Serving> {
        let s = self
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = &s {
            let _ = s.stop.send(true);
        }
        s
    }

    /// A node restart (pveproxy/pvedaemon): the API is gone for `downtime`,
    /// running tasks die mid-way (`unexpected status`), VMs keep running.
    pub async fn restart(&self, downtime: Duration) -> anyhow::Result<Vec<String>> {
        if let Some(s) = self.stop() {
            let _ = s.join.await;
        }
        let killed = self.node.restart();
        tokio::time::sleep(downtime).await;
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("re-binding {}", self.addr))?;
        self.serve(listener);
        Ok(killed)
    }
}

/// A running simulated node.
pub struct SimHandle {
    node: Arc<Node>,
    api: Arc<ApiServer>,
    background: Vec<tokio::task::JoinHandle<()>>,
    control: Option<control::ControlServer>,
    kill_vms_on_drop: bool,
}

impl SimHandle {
    /// Start the node: TLS identity, templates from the config, the HTTPS API and
    /// (if configured) the control listener.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
        Self::start_with_clock(cfg, Arc::new(clock::SystemClock::default())).await
    }

    pub async fn start_with_clock(
        cfg: SimConfig,
        clock: Arc<dyn clock::Clock>,
    ) -> anyhow::Result<SimHandle> {
        cfg.validate()?;
        let node = Node::new(cfg.clone(), clock)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let identity = tls::load_or_create(&cfg.state_dir, &cfg.node, &cfg.tls_names)
            .map_err(|e| anyhow::anyhow!("TLS identity: {e}"))?;
        for t in &cfg.templates {
            if !node.config_exists(t.vmid) {
                node.create_template(t)
                    .await
                    .map_err(|e| anyhow::anyhow!("template {}: {}", t.vmid, e.trim_end()))?;
            }
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let api = Arc::new(ApiServer {
            node: node.clone(),
            addr,
            identity,
            serving: Mutex::new(None),
        });
        api.serve(listener);
        let background = node.spawn_background();
        let control = match cfg.control_listen {
            Some(a) => Some(
                control::ControlServer::start(a, cfg.control_token.clone(), api.clone()).await?,
            ),
            None => None,
        };
        Ok(SimHandle {
            node,
            api,
            background,
            control,
            kill_vms_on_drop: true,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.api.addr
    }

    /// `https://127.0.0.1:PORT/api2/json`
    pub fn base_url(&self) -> String {
        format!("https://{}/api2/json", self.api.addr)
    }

    /// SHA-256 of the node certificate, `AA:BB:…`.
    pub fn fingerprint(&self) -> &str {
        &self.api.identity.fingerprint
    }

    /// The cluster CA (PEM) that signs the node certificate.
    pub fn ca_pem(&self) -> &str {
        &self.api.identity.ca_pem
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn node_name(&self) -> &str {
        self.node.node()
    }

    pub fn control(&self) -> Option<(SocketAddr, &str)> {
        self.control.as_ref().map(|c| (c.addr, c.token.as_str()))
    }

    /// Keep VMs running when the handle is dropped (like a daemon restart).
    pub fn keep_vms_on_drop(&mut self) {
        self.kill_vms_on_drop = false;
    }

    /// Every API request the node answered (parameter names only), so a
    /// client's conformance test can assert none failed verification.
    pub fn requests(&self) -> Vec<node::RequestRecord> {
        self.node.requests()
    }

    // ---- fault knobs -----------------------------------------------------

    pub fn faults(&self) -> &faults::Faults {
        &self.node.faults
    }

    pub fn fail_next_clones(&self, count: u32, message: &str) {
        self.node.faults.fail_next_clones(count, message);
    }

    pub fn set_task_duration(&self, ty: &str, d: Duration) {
        self.node.faults.set_task_duration(ty, d);
    }

    /// Write `lock: <lock>` into a VM's config (or remove it): `qm set --lock`.
    pub fn set_vm_lock(&self, vmid: u32, lock: Option<&str>) -> anyhow::Result<()> {
        self.node
            .set_config_lock(vmid, lock)
            .map_err(|e| anyhow::anyhow!(e.message()))
    }

    /// Hold a VM's config lock for `d`: others wait and fail with
    /// `can't lock file … - got timeout`.
    pub async fn hold_config_lock(&self, vmid: u32, d: Duration) -> anyhow::Result<()> {
        self.node
            .hold_config_lock(vmid, d)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Make a task disappear: its status answers 400 `no such task`.
    pub fn vanish_task(&self, upid: &str) -> bool {
        self.node.tasks.vanish(upid)
    }

    /// The next `count` tasks of `ty` vanish when they end.
    pub fn vanish_next_tasks(&self, ty: &str, count: u32) {
        self.node.tasks.vanish_next(ty, count);
    }

    /// Successful tasks of `ty` end with `count` warnings (`WARNINGS: N`).
    pub fn set_task_warnings(&self, ty: &str, count: u32) {
        self.node.tasks.set_warnings(ty, count);
    }

    /// Kill a VM's QEMU as a crash would.
    pub fn kill_vm(&self, vmid: u32) -> bool {
        match self.node.running_pid(vmid) {
            Some(pid) => {
                node::qemu::kill(pid, rustix::process::Signal::KILL);
                true
            }
            None => false,
        }
    }

    /// A node restart (pveproxy/pvedaemon): the API is gone for `downtime`,
    /// running tasks die mid-way (`unexpected status`), VMs keep running.
    pub async fn restart_node(&self, downtime: Duration) -> anyhow::Result<Vec<String>> {
        self.api.restart(downtime).await
    }

    /// Create a template VM from an image (an operator's `qm` job on real PVE).
    pub async fn create_template(&self, t: &TemplateConfig) -> anyhow::Result<()> {
        self.node
            .create_template(t)
            .await
            .map_err(|e| anyhow::anyhow!(e.trim_end().to_string()))
    }

    /// A VM that is not Clawy's (no Clawy tag): a linked clone of `template` made
    /// by someone else, optionally tagged and started.
    pub async fn create_foreign_vm(
        &self,
        vmid: u32,
        template: u32,
        name: &str,
        tags: Option<&str>,
        start: bool,
    ) -> anyhow::Result<()> {
        control::create_foreign_vm(&self.node, vmid, template, name, tags, start)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Wait until no task runs.
    pub async fn wait_tasks_idle(&self, timeout: Duration) -> bool {
        self.node.tasks.wait_idle(timeout).await
    }

    /// Kill every VM's QEMU (test cleanup).
    pub fn kill_all_vms(&self) {
        for vmid in self.node.vmids() {
            self.kill_vm(vmid);
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(s) = self.api.stop() {
            s.join.abort();
        }
        if let Some(c) = &self.control {
            c.join.abort();
        }
        for b in &self.background {
            b.abort();
        }
        self.node.restart();
        if self.kill_vms_on_drop {
            self.kill_all_vms();
        }
    }
}
