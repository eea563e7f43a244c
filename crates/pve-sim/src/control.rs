//! The control listener (tests only): plain HTTP on a loopback address with a
//! bearer token, exposing the fault knobs and a view of the node's state to tests
//! that run `pve-sim` as a separate process (e.g. inside a network namespace).
//!
//! | request | effect |
//! |---|---|
//! | `GET /state` | every VM: config, pending, lock, running pid |
//! | `GET /cloudinit/{vmid}` | the cloud-init files a start would write now |
//! | `GET /requests` | every API request seen: method, path, parameter names, status, 400 `errors` |
//! | `POST /faults/clone-failure {"count":1,"message":"…"}` | next clones fail |
//! | `POST /faults/task-duration {"type":"qmclone","ms":2000}` | slow tasks |
//! | `POST /faults/task-warnings {"type":"qmstart","count":2}` | `WARNINGS: 2` |
//! | `POST /faults/lock {"vmid":100,"lock":"backup"}` (`null` unlocks) | `lock:` key |
//! | `POST /faults/hold-config-lock {"vmid":100,"ms":15000}` | flock held |
//! | `POST /faults/vanish-task {"upid":"…"}` or `{"type":"qmstart","count":1}` | lost tasks |
//! | `POST /faults/restart {"downtime_ms":500}` | node restart |
//! | `POST /faults/kill-vm {"vmid":100}` | QEMU crash |
//! | `POST /templates {"vmid":9000,"image":"…","bridge":"vmbr0"}` | a template |
//! | `POST /vms/foreign {"vmid":150,"template":9000,"name":"x","tags":"a;b","start":false}` | someone else's VM |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::ApiServer;
use crate::api;
use crate::http::auth::Caller;
use crate::node::Node;
use crate::node::tasks::{Upid, read_status};

pub struct ControlServer {
    pub addr: SocketAddr,
    pub token: String,
    pub join: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    pub async fn start(
        addr: SocketAddr,
        token: Option<String>,
        api: Arc<ApiServer>,
    ) -> anyhow::Result<ControlServer> {
        if !addr.ip().is_loopback() {
            anyhow::bail!("control_listen must be a loopback address, not {addr}");
        }
        let token = token.unwrap_or_else(|| {
            let mut b = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
            hex::encode(b)
        });
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let tok = token.clone();
        let join = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let api = api.clone();
                let tok = tok.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        let tok = tok.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(api, &tok, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(ControlServer { addr, token, join })
    }
}

fn reply(status: u16, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(api: Arc<ApiServer>, token: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
    if !ok {
        return reply(401, json!({"error": "bad control token"}));
    }
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(413, json!({"error": "body too large"})),
    };
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return reply(400, json!({"error": e.to_string()})),
        }
    };
    match route(&api, &method, &path, &v).await {
        Ok(v) => reply(200, v),
        Err(e) => reply(400, json!({"error": e})),
    }
}

fn u32_of(v: &Value, k: &str) -> Result<u32, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("missing or invalid '{k}'"))
}

async fn route(api: &Arc<ApiServer>, method: &str, path: &str, v: &Value) -> Result<Value, String> {
    let node = &api.node;
    match (method, path) {
        ("GET", "/state") => Ok(state(node)),
        ("GET", "/requests") => Ok(json!(node.requests())),
        ("GET", p) if p.starts_with("/cloudinit/") => {
            let vmid: u32 = p["/cloudinit/".len()..]
                .parse()
                .map_err(|_| "bad vmid".to_string())?;
            let files = api::cloudinit_preview(node, vmid)?;
            let m: Map<String, Value> = files
                .into_iter()
                .map(|(k, d)| (k, json!(String::from_utf8_lossy(&d))))
                .collect();
            Ok(Value::Object(m))
        }
        ("POST", "/faults/clone-failure") => {
            let count = u32_of(v, "count").unwrap_or(1);
            let msg = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("simulated storage error");
            node.faults.fail_next_clones(count, msg);
            Ok(json!({}))
        }
        ("POST", "/faults/task-duration") => {
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or("missing 'type'")?;
            let ms = v.get("ms").and_then(Value::as_u64).ok_or("missing 'ms'")?;
            node.faults.set_task_duration(ty, Duration::from_millis(ms));
            Ok(json!({}))
        }
        ("POST", "/faults/task-warnings") => {
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or("missing 'type'")?;
            node.tasks.set_warnings(ty, u32_of(v, "count").unwrap_or(1));
            Ok(json!({}))
        }
        ("POST", "/faults/lock") => {
            let vmid = u32_of(v, "vmid")?;
            let lock = v.get("lock").and_then(Value::as_str);
            node.set_config_lock(vmid, lock).map_err(|e| e.message())?;
            Ok(json!({}))
        }
        ("POST", "/faults/hold-config-lock") => {
            let vmid = u32_of(v, "vmid")?;
            let ms = v.get("ms").and_then(Value::as_u64).ok_or("missing 'ms'")?;
            node.hold_config_lock(vmid, Duration::from_millis(ms))
                .await?;
            Ok(json!({}))
        }
        ("POST", "/faults/vanish-task") => {
            if let Some(upid) = v.get("upid").and_then(Value::as_str) {
                Ok(json!({"vanished": node.tasks.vanish(upid)}))
            } else {
                let ty = v
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or("missing 'upid' or 'type'")?;
                node.tasks.vanish_next(ty, u32_of(v, "count").unwrap_or(1));
                Ok(json!({}))
            }
        }
        ("POST", "/faults/restart") => {
            let ms = v.get("downtime_ms").and_then(Value::as_u64).unwrap_or(0);
            // Answer first: the restart takes this listener's sibling down.
            let api = api.clone();
            tokio::spawn(async move {
                let _ = api.restart(Duration::from_millis(ms)).await;
            });
            Ok(json!({}))
        }
        ("POST", "/faults/kill-vm") => {
            let vmid = u32_of(v, "vmid")?;
            match node.running_pid(vmid) {
                Some(pid) => {
                    crate::node::qemu::kill(pid, rustix::process::Signal::KILL);
                    Ok(json!({"killed": true}))
                }
                None => Ok(json!({"killed": false})),
            }
        }
        ("POST", "/templates") => {
            let t: crate::config::TemplateConfig =
                serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            node.create_template(&t)
                .await
                .map_err(|e| e.trim_end().to_string())?;
            Ok(json!({}))
        }
        ("POST", "/vms/foreign") => {
            let vmid = u32_of(v, "vmid")?;
            let template = u32_of(v, "template")?;
            let name = v.get("name").and_then(Value::as_str).unwrap_or("foreign");
            let tags = v.get("tags").and_then(Value::as_str);
            let start = v.get("start").and_then(Value::as_bool).unwrap_or(false);
            create_foreign_vm(node, vmid, template, name, tags, start).await?;
            Ok(json!({}))
        }
        _ => Err(format!("no such control request: {method} {path}")),
    }
}

fn state(node: &Node) -> Value {
    let mut vms = Vec::new();
    for vmid in node.vmids() {
        let conf = node.load_config(vmid).ok();
        vms.push(json!({
            "vmid": vmid,
            "pid": node.running_pid(vmid),
            "config": conf.as_ref().map(|c| json!(c.main)),
            "pending": conf.as_ref().map(|c| json!(c.pending)),
            "lock": conf.as_ref().and_then(|c| c.lock().map(String::from)),
        }));
    }
    json!({ "node": node.node(), "vms": vms })
}

/// Run one API call as root@pam (what an operator's `qm` would do) and wait for
/// its task.
async fn call_as_root(
    node: &Arc<Node>,
    method: &str,
    template: &str,
    params: Value,
) -> Result<(), String> {
    let schema = crate::schema::schema().map_err(|e| e.to_string())?;
    let ep = schema
        .endpoint(method, template)
        .ok_or_else(|| format!("no endpoint {method} {template}"))?;
    let mut p = params.as_object().cloned().unwrap_or_default();
    p.insert("node".into(), json!(node.node()));
    let p = schema.validate(ep, &p).map_err(|e| format!("{e:?}"))?;
    let r = api::dispatch(node, &Caller::root(), ep, &p)
        .await
        .map_err(|e| e.message())?;
    if let Some(upid) = r.data.as_str() {
        while node.tasks.is_running(upid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let u = Upid::decode(upid).ok_or("bad upid")?;
        let st = read_status(&u.log_path(node.tasks.dir()));
        if st != "OK" {
            return Err(st);
        }
    }
    Ok(())
}

pub async fn create_foreign_vm(
    node: &Arc<Node>,
    vmid: u32,
    template: u32,
    name: &str,
    tags: Option<&str>,
    start: bool,
) -> Result<(), String> {
    call_as_root(
        node,
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        json!({"vmid": template.to_string(), "newid": vmid.to_string(), "name": name}),
    )
    .await?;
    if let Some(t) = tags {
        call_as_root(
            node,
            "PUT",
            "/nodes/{node}/qemu/{vmid}/config",
            json!({"vmid": vmid.to_string(), "tags": t}),
        )
        .await?;
    }
    if start {
        call_as_root(
            node,
            "POST",
            "/nodes/{node}/qemu/{vmid}/status/start",
            json!({"vmid": vmid.to_string()}),
        )
        .await?;
    }
    Ok(())
}
