//! An in-process FAKE host agent, for the fleet-scale benchmark and the
//! PostgreSQL two-runner tests ONLY (a fake that answers the agent API instantly, where
//! hundreds of real guests could not run on one machine). It speaks the real agent API shape over HTTPS with a
//! self-signed certificate (the agent's own TLS code), checks the bearer token, keeps
//! VMs in memory, and counts calls so tests can prove no job ran twice. It runs no
//! VM; nothing in the product uses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawy_proto::agent::{
    ErrorBody, ErrorCode, ErrorDetail, HealthProbe, HostInfo, HostNetwork, Resources, VmList,
    VmSpec, VmState, VmStatus,
};

/// Per-host call counters (ensure per VM id, starts, deletes, lists).
#[derive(Debug, Default, Clone)]
pub struct FakeCounters {
    pub ensure_calls: HashMap<String, u64>,
    pub creates: HashMap<String, u64>,
    pub starts: u64,
    pub deletes: u64,
    pub lists: u64,
    /// Ensure calls that carried the owner's secrets beside the spec (DATA-5), per
    /// VM. Like the real agent, the fake keeps them out of the spec and stores none.
    pub ensures_with_secrets: HashMap<String, u64>,
}

#[derive(Debug)]
struct FakeState {
    vms: HashMap<String, VmStatus>,
    counters: FakeCounters,
    info: HostInfo,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    /// Live tokens: several at once, as the real agent allows (rotation).
    tokens: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
}

/// One fake agent listening on `127.0.0.1:<port>`.
pub struct FakeAgent {
    pub base_url: String,
    pub fingerprint: String,
    pub token: String,
    state: Arc<Mutex<FakeState>>,
    tokens: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl FakeAgent {
    /// Starts a fake agent at `location` with `capacity` and a network
    /// (`subnet`, gateway `.1`, ssh ports `ports`).
    pub async fn start(
        location: &str,
        capacity: Resources,
        subnet_prefix: &str,
        ports: [u16; 2],
    ) -> anyhow::Result<FakeAgent> {
        let dir = tempfile::Builder::new()
            .prefix("clawy-fake-agent-")
            .tempdir()?;
        let identity = clawy_agent::tls::load_or_create(dir.path())?;
        let tls = clawy_agent::tls::server_config(&identity)?;
        let token = format!("fake-{}", uuid::Uuid::new_v4().simple());
        crate::secrets::register(&token);
        let info = HostInfo {
            hostname: format!("fake-{location}"),
            location: location.to_string(),
            driver: "fake".into(),
            accelerator: "none".into(),
            cpu_cores: capacity.vcpus,
            memory_mib: capacity.memory_mib,
            disk_gib: capacity.disk_gib,
            capacity,
            allocated: Resources {
                vcpus: 0,
                memory_mib: 0,
                disk_gib: 0,
            },
            vm_count: 0,
            agent_version: "fake".into(),
            network: Some(HostNetwork {
                subnet: format!("{subnet_prefix}.0/24"),
                gateway: format!("{subnet_prefix}.1"),
                ssh_port_range: ports,
            }),
            edge: None,
            heartbeat_refusals: Default::default(),
        };
        let state = Arc::new(Mutex::new(FakeState {
            vms: HashMap::new(),
            counters: FakeCounters::default(),
            info,
        }));
        let down = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(Mutex::new(vec![token.clone()]));
        let shared = Shared {
            state: state.clone(),
            tokens: tokens.clone(),
            down: down.clone(),
            busy: busy.clone(),
        };
        let app = Router::new()
            .route("/v1/host", get(host))
            .route("/v1/vms", get(list))
            .route("/v1/vms/{id}", get(get_vm).put(ensure).delete(delete))
            .route("/v1/vms/{id}/start", post(start))
            .route("/v1/vms/{id}/stop", post(stop))
            .route("/v1/vms/{id}/reboot", post(start))
            .route("/v1/vms/{id}/probe", get(probe))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                authorize,
            ))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = clawy_agent::server::serve_tls(listener, tls, app).await;
        });
        Ok(FakeAgent {
            base_url: format!("https://{addr}"),
            fingerprint: identity.fingerprint,
            token,
            state,
            tokens,
            down,
            busy,
            task,
            _dir: dir,
        })
    }

    /// Creates another live token (like `clawy agent token create`) and returns it.
    pub fn add_token(&self) -> String {
        let t = format!("fake-{}", uuid::Uuid::new_v4().simple());
        crate::secrets::register(&t);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.push(t.clone());
        }
        t
    }

    /// Revokes a token (like `clawy agent token revoke`): refused from now on.
    pub fn revoke_token(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|t| t != token);
        }
    }

    /// A copy of the counters so far.
    pub fn counters(&self) -> FakeCounters {
        self.state
            .lock()
            .map(|s| s.counters.clone())
            .unwrap_or_default()
    }

    /// Ids of the VMs this fake holds.
    pub fn vm_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.vms.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// While down, every request is answered 503 (the host looks unreachable).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// While busy, every request is answered the agent's retryable `busy` (503),
    /// as a host whose hypervisor holds a lock does.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// Changes a VM's state behind the control plane's back (a crash, a stop).
    pub fn set_vm_state(&self, id: &str, state: VmState) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(vm) = s.vms.get(id).cloned() {
                s.vms.insert(id.to_string(), status_of(id, vm.spec, state));
            }
        }
    }

    /// Removes a VM behind the control plane's back (it vanished).
    pub fn remove_vm(&self, id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.vms.remove(id);
        }
    }

    /// Replaces a VM's port forwards behind the control plane's back.
    pub fn set_port_forwards(&self, id: &str, forwards: Vec<clawy_proto::agent::PortForward>) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(vm) = s.vms.get_mut(id) {
                vm.spec.port_forwards = forwards;
            }
        }
    }

    /// What the real agent adds from the guest's heartbeat receiver: the latest
    /// heartbeat and whether the secrets were delivered (DATA-5).
    pub fn set_guest_report(
        &self,
        id: &str,
        heartbeat: Option<clawy_proto::heartbeat::ReceivedHeartbeat>,
        secrets_delivered: bool,
    ) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(vm) = s.vms.get_mut(id) {
                vm.heartbeat = heartbeat;
                vm.secrets_delivered = secrets_delivered;
            }
        }
    }

    /// The VM as the fake holds it.
    pub fn vm(&self, id: &str) -> Option<VmStatus> {
        self.state.lock().ok().and_then(|s| s.vms.get(id).cloned())
    }

    /// Put a VM straight into the fake (the benchmark's "already provisioned" fleet).
    pub fn insert_vm(&self, id: &str, spec: VmSpec, state: VmState) {
        if let Ok(mut s) = self.state.lock() {
            s.vms.insert(id.to_string(), status_of(id, spec, state));
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status_of(id: &str, spec: VmSpec, state: VmState) -> VmStatus {
    let running = state == VmState::Running;
    VmStatus {
        id: id.to_string(),
        state,
        disk_allocated_bytes: spec.disk_gib << 30,
        spec,
        uptime_secs: running.then_some(60),
        cpu_percent: running.then_some(1.5),
        memory_used_bytes: running.then_some(64 << 20),
        disk_used_bytes: Some(16 << 20),
        net_rx_bytes: running.then_some(1000),
        net_tx_bytes: running.then_some(2000),
        tap: None,
        health: running.then(|| HealthProbe {
            tcp_ok: true,
            http_status: Some(200),
            latency_ms: 1,
            checked_at: chrono::Utc::now().to_rfc3339(),
        }),
        heartbeat: None,
        secrets_delivered: false,
    }
}

fn api_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code,
                message: message.to_string(),
                field: None,
            },
        }),
    )
        .into_response()
}

/// Every request passes here first: a fake that is down answers 503, a wrong or
/// missing token 401, as the real agent would.
async fn authorize(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "fake agent is down",
        );
    }
    if shared.busy.load(Ordering::SeqCst) {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Busy,
            "busy: VM is locked (clone)",
        );
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let ok = shared
        .tokens
        .lock()
        .is_ok_and(|tokens| tokens.iter().any(|t| t.as_bytes() == presented.as_bytes()));
    if !ok {
        return api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong token",
        );
    }
    next.run(req).await
}

impl Shared {
    /// Runs `f` on the fake's state (a poisoned lock is a 500).
    fn with(&self, f: impl FnOnce(&mut FakeState) -> Response) -> Response {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(_) => api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "poisoned",
            ),
        }
    }
}

fn no_such_vm() -> Response {
    api_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such VM")
}

async fn host(State(shared): State<Shared>) -> Response {
    shared.with(|s| {
        let mut info = s.info.clone();
        info.vm_count = s.vms.len() as u64;
        Json(info).into_response()
    })
}

async fn list(State(shared): State<Shared>) -> Response {
    shared.with(|s| {
        s.counters.lists += 1;
        let vms = s.vms.values().cloned().collect();
        Json(VmList { vms }).into_response()
    })
}

async fn get_vm(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    shared.with(|s| match s.vms.get(&id) {
        Some(vm) => Json(vm.clone()).into_response(),
        None => no_such_vm(),
    })
}

async fn ensure(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Json(mut body): Json<serde_json::Value>,
) -> Response {
    // As the real agent: `secrets` travel beside the spec and are taken out first.
    let secrets = body
        .as_object_mut()
        .and_then(|o| o.remove("secrets"))
        .is_some_and(|v| serde_json::from_value::<clawy_proto::agent::GuestSecrets>(v).is_ok());
    let spec: VmSpec = match serde_json::from_value(body) {
        Ok(spec) => spec,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    };
    shared.with(|s| {
        *s.counters.ensure_calls.entry(id.clone()).or_default() += 1;
        if secrets {
            *s.counters
                .ensures_with_secrets
                .entry(id.clone())
                .or_default() += 1;
        }
        if let Some(vm) = s.vms.get_mut(&id) {
            vm.spec = spec;
            return (StatusCode::OK, Json(vm.clone())).into_response();
        }
        *s.counters.creates.entry(id.clone()).or_default() += 1;
        let vm = status_of(&id, spec, VmState::Defined);
        s.vms.insert(id, vm.clone());
        (StatusCode::CREATED, Json(vm)).into_response()
    })
}

fn set_state(shared: &Shared, id: &str, state: VmState) -> Response {
    shared.with(|s| {
        if state == VmState::Running {
            s.counters.starts += 1;
        }
        match s.vms.get(id).cloned() {
            Some(vm) => {
                let vm = status_of(id, vm.spec, state);
                s.vms.insert(id.to_string(), vm.clone());
                Json(vm).into_response()
            }
            None => no_such_vm(),
        }
    })
}

async fn start(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    set_state(&shared, &id, VmState::Running)
}

async fn stop(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    set_state(&shared, &id, VmState::Stopped)
}

async fn delete(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    shared.with(|s| {
        s.counters.deletes += 1;
        s.vms.remove(&id);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn probe(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    shared.with(|s| match s.vms.get(&id).and_then(|v| v.health.clone()) {
        Some(h) => Json(h).into_response(),
        None => api_error(StatusCode::CONFLICT, ErrorCode::Conflict, "not running"),
    })
}
