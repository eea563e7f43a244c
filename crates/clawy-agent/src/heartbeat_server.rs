//! The heartbeat receiver (ACCESS-1, ACCESS-2): plain HTTP on the bridge's gateway
//! address (`[network] heartbeat_port`), reachable from the VMs' bridge only (the
//! agent's nftables input chain admits that port from the bridge; nothing outside
//! the host routes to the bridge address). The decision is [`crate::heartbeat`];
//! this module keeps the per-VM token hashes on disk, the latest heartbeat and the
//! refusal counters in memory, and starts the delivery (DATA-5) when a guest first
//! reports its configuration applied.
//!
//! State on disk: `<state_dir>/heartbeat/<vm id>.json` (0600, dir 0700) holding the
//! VM's address, the SHA-256 of its token (never the token) and whether its secrets
//! were delivered. The token itself exists only in the seed the guest reads.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use crate::heartbeat::{
    Heartbeat, MAX_BODY, ReceivedHeartbeat, Refusal, RefusalCounts, Registry, new_token, token_hash,
};

/// The path the baked reporter posts to (CONTRACT.md).
pub const PATH: &str = "/v1/heartbeat";

/// A request must arrive whole within this (a guest holding connections open
/// costs nothing beyond it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    ip: Ipv4Addr,
    token_sha256: String,
    #[serde(default)]
    secrets_delivered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("heartbeat state {0}: {1}")]
    Io(String, std::io::Error),
}

#[derive(Default)]
struct HubState {
    registry: Registry,
    records: HashMap<String, Record>,
    latest: HashMap<String, (Instant, String, Heartbeat)>,
    refusals: RefusalCounts,
}

/// Tokens, latest heartbeats and refusal counts of this agent's VMs.
pub struct Hub {
    dir: PathBuf,
    state: Mutex<HubState>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("dir", &self.dir).finish()
    }
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |e| HubError::Io(p.display().to_string(), e)
}

impl Hub {
    /// Opens `<state_dir>/heartbeat`, loading the records of earlier runs (a file
    /// that does not parse is skipped with a warning: that VM re-registers on its
    /// next ensure with secrets).
    pub fn open(state_dir: &Path) -> Result<Hub, HubError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = state_dir.join("heartbeat");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        let mut st = HubState::default();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = e.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| crate::spec::VmId::parse(n).ok())
            else {
                continue;
            };
            let rec = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            let Some(rec) = rec else {
                tracing::warn!(file = %path.display(), "unreadable heartbeat record skipped");
                continue;
            };
            let Some(hash) = hash_of(&rec.token_sha256) else {
                continue;
            };
            st.registry.register(rec.ip, id.as_str(), hash);
            st.records.insert(id.to_string(), rec);
        }
        Ok(Hub {
            dir,
            state: Mutex::new(st),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A poisoned lock only means a panic elsewhere; the maps stay consistent
        // (every change is one insert or remove).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, id: &str, rec: &Record) -> Result<(), HubError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join(format!("{id}.json"));
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        let body = serde_json::to_vec(rec).unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Whether the VM has a token (issued by an earlier seed).
    pub fn has(&self, id: &str) -> bool {
        self.lock().records.contains_key(id)
    }

    /// A fresh token for the VM's next seed; only its hash is kept. A new token
    /// starts a new delivery (the seed it goes into may carry secrets).
    pub fn issue(&self, id: &str, ip: Ipv4Addr) -> Result<String, HubError> {
        let token = new_token();
        let hash = token_hash(&token);
        let rec = Record {
            ip,
            token_sha256: hex::encode(hash),
            secrets_delivered: false,
        };
        self.write(id, &rec)?;
        let mut st = self.lock();
        st.registry.forget(id);
        st.registry.register(ip, id, hash);
        st.records.insert(id.to_string(), rec);
        Ok(token)
    }

    /// The VM's address changed (a new spec): its token stays, bound to the new one.
    pub fn rebind(&self, id: &str, ip: Ipv4Addr) -> Result<(), HubError> {
        let rec = {
            let st = self.lock();
            match st.records.get(id) {
                Some(r) if r.ip != ip => Record {
                    ip,
                    token_sha256: r.token_sha256.clone(),
                    secrets_delivered: r.secrets_delivered,
                },
                _ => return Ok(()),
            }
        };
        self.write(id, &rec)?;
        let mut st = self.lock();
        if let Some(hash) = hash_of(&rec.token_sha256) {
            st.registry.forget(id);
            st.registry.register(ip, id, hash);
        }
        st.records.insert(id.to_string(), rec);
        Ok(())
    }

    /// The VM is gone: its record, token hash and heartbeat go too.
    pub fn forget(&self, id: &str) {
        let path = self.dir.join(format!("{id}.json"));
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(vm = %id, error = %e, "removing the heartbeat record failed");
            }
        }
        let mut st = self.lock();
        st.registry.forget(id);
        st.records.remove(id);
        st.latest.remove(id);
    }

    /// The whole decision for one request; refusals are counted and logged (the
    /// source and reason, never the token or body; at counts 1, 2, 4, 8, … so a
    /// guest cannot flood the log).
    pub fn accept(
        &self,
        source: Ipv4Addr,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(String, Heartbeat), Refusal> {
        let mut st = self.lock();
        match st.registry.accept(source, authorization, body) {
            Ok((id, hb)) => {
                let received =
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                st.latest
                    .insert(id.clone(), (Instant::now(), received, hb.clone()));
                Ok((id, hb))
            }
            Err(r) => {
                let n = st.refusals.record(r);
                if n.is_power_of_two() {
                    tracing::warn!(%source, reason = r.key(), count = n, "heartbeat refused");
                }
                Err(r)
            }
        }
    }

    pub fn latest(&self, id: &str) -> Option<ReceivedHeartbeat> {
        let st = self.lock();
        st.latest
            .get(id)
            .map(|(at, received, hb)| ReceivedHeartbeat {
                received_at: received.clone(),
                age_secs: at.elapsed().as_secs(),
                facts: hb.clone(),
            })
    }

    pub fn delivered(&self, id: &str) -> bool {
        self.lock()
            .records
            .get(id)
            .is_some_and(|r| r.secrets_delivered)
    }

    /// DATA-5: every copy of the seed with secrets is gone; survives restarts.
    pub fn mark_delivered(&self, id: &str) -> Result<(), HubError> {
        self.set_delivered(id, true)
    }

    /// DATA-5: a new seed with secrets was written for the VM: it must be
    /// destroyed again (the guest's marker stays, so its next heartbeat does it).
    pub fn reset_delivery(&self, id: &str) -> Result<(), HubError> {
        self.set_delivered(id, false)
    }

    fn set_delivered(&self, id: &str, delivered: bool) -> Result<(), HubError> {
        let rec = {
            let st = self.lock();
            let Some(r) = st.records.get(id) else {
                return Ok(());
            };
            Record {
                ip: r.ip,
                token_sha256: r.token_sha256.clone(),
                secrets_delivered: delivered,
            }
        };
        self.write(id, &rec)?;
        self.lock().records.insert(id.to_string(), rec);
        Ok(())
    }

    /// Refusals since the agent started, per reason (HostInfo).
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        self.lock()
            .refusals
            .0
            .iter()
            .map(|(r, n)| (r.key().to_string(), *n))
            .collect()
    }
}

fn hash_of(hex_hash: &str) -> Option<[u8; 32]> {
    hex::decode(hex_hash).ok()?.try_into().ok()
}

/// What the receiver calls when a guest first reports its configuration applied.
#[async_trait::async_trait]
pub trait Deliverer: Send + Sync + 'static {
    async fn deliver(&self, id: &str);
}

#[derive(Clone)]
struct Receiver {
    hub: Arc<Hub>,
    deliverer: Arc<dyn Deliverer>,
}

/// The receiver's routes: `POST /v1/heartbeat` and nothing else.
pub fn router(hub: Arc<Hub>, deliverer: Arc<dyn Deliverer>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(64))
        .with_state(Receiver { hub, deliverer })
}

async fn receive(
    State(r): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let source = match peer.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // One byte over the limit is enough to know it is too large.
    let bytes = match axum::body::to_bytes(body, MAX_BODY + 1).await {
        Ok(b) => b,
        Err(_) => {
            let too_big = vec![0u8; MAX_BODY + 1];
            return refusal(r.hub.accept(source, auth, &too_big).err());
        }
    };
    match r.hub.accept(source, auth, &bytes) {
        Ok((id, hb)) => {
            if hb.config_applied && !r.hub.delivered(&id) {
                // The guest gets its answer now; the seed goes in the background
                // (the VM's lock may be held by another operation).
                let d = r.deliverer.clone();
                tokio::spawn(async move { d.deliver(&id).await });
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refusal(Some(e)),
    }
}

fn refusal(r: Option<Refusal>) -> Response {
    let r = r.unwrap_or(Refusal::TooLarge);
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(serde_json::json!({"error": r.key(), "message": r.to_string()})),
    )
        .into_response()
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// Serves the receiver on `listener` until the task is dropped. HTTP/1 only, with
/// half-closed connections allowed: a sender that shuts its write side after the
/// request (busybox `nc` in the stand-in does) still gets its answer, where the
/// default would drop the connection on that EOF before the handler answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    deliverer: Arc<dyn Deliverer>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let app = router(hub, deliverer);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc);
            // Bounded whatever the peer does.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn access_2_records_keep_only_the_hash_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        let token = {
            let hub = Hub::open(dir.path()).unwrap();
            let t = hub.issue("vm-a", ip).unwrap();
            hub.mark_delivered("vm-a").unwrap();
            t
        };
        let on_disk = std::fs::read_to_string(dir.path().join("heartbeat/vm-a.json")).unwrap();
        assert!(!on_disk.contains(&token), "{on_disk}");
        let hub = Hub::open(dir.path()).unwrap();
        assert!(hub.has("vm-a") && hub.delivered("vm-a"));
        let err = hub.accept(ip, Some("Bearer nope"), b"{}").unwrap_err();
        assert_eq!(err, Refusal::BadToken);
        assert_eq!(hub.refusals()["bad_token"], 1);
        hub.forget("vm-a");
        assert!(!dir.path().join("heartbeat/vm-a.json").exists());
        assert_eq!(
            hub.accept(ip, Some(&format!("Bearer {token}")), b"{}")
                .unwrap_err(),
            Refusal::UnknownSource
        );
    }
}
