//! Connection handling and the request pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::auth::{self, Caller};
use super::decode;
use crate::api;
use crate::error::ApiError;
use crate::node::Node;
use crate::schema::{Route, schema};

/// pve-http-server's `$limit_max_post`.
const MAX_POST: usize = 64 * 1024;

pub type Resp = Response<Full<Bytes>>;

/// Accept TLS connections until `stop` turns true; then drop every connection.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let node = node.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| {
                        let node = node.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(node, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

fn base_response(
    status: u16,
    reason: Option<&str>,
    body: Bytes,
    content_type: Option<&str>,
) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(reason) = reason {
        // The reason phrase is the first line of the message (pve-http-server).
        let first = reason.split(['\n', '\r']).next().unwrap_or("");
        if !first.is_empty() {
            if let Ok(rp) = ReasonPhrase::try_from(first.as_bytes().to_vec()) {
                r.extensions_mut().insert(rp);
            }
        }
    }
    let h = r.headers_mut();
    h.insert("server", HeaderValue::from_static("pve-api-daemon/3.0"));
    h.insert("cache-control", HeaderValue::from_static("max-age=0"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    if let Some(ct) = content_type {
        if let Ok(v) = HeaderValue::from_str(ct) {
            h.insert("content-type", v);
        }
    }
    if status >= 400 {
        h.insert("connection", HeaderValue::from_static("close"));
    }
    r
}

/// `$self->error(...)`: the message is also the (non-JSON) body.
fn plain_error(status: u16, msg: &str) -> Resp {
    base_response(status, Some(msg), Bytes::from(msg.to_string()), None)
}

fn json_body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"{\"data\":null}".to_vec()))
}

const JSON_CT: &str = "application/json;charset=UTF-8";

/// The JSON formatter's shape for a failed call.
pub fn error_response(node: &Node, e: &ApiError) -> Resp {
    let mut body = Map::new();
    body.insert("data".into(), Value::Null);
    if let ApiError::Param(errors) = e {
        if !errors.is_empty() {
            body.insert("errors".into(), json!(errors));
        }
    }
    let msg = e.message();
    if node.cfg.error_message_in_body {
        body.insert("message".into(), json!(msg));
    }
    base_response(
        e.status(),
        Some(&msg),
        json_body(&Value::Object(body)),
        Some(JSON_CT),
    )
}

fn ok_response(reply: api::Reply) -> Resp {
    let mut body = Map::new();
    body.insert("data".into(), reply.data);
    if let Some(t) = reply.total.filter(|t| *t > 0) {
        body.insert("total".into(), json!(t));
    }
    base_response(200, None, json_body(&Value::Object(body)), Some(JSON_CT))
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let path = String::from_utf8_lossy(&decode::uri_unescape(raw_path.as_bytes())).into_owned();
    let Some(after) = path.strip_prefix("/api2/") else {
        return plain_error(404, "File not found");
    };
    let (format, rel) = match after.split_once('/') {
        Some((f, r)) if !f.is_empty() => (f.to_string(), format!("/{r}")),
        _ => return plain_error(501, "no such uri"),
    };
    let auth_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let caller = match auth::authenticate(auth_header.as_deref(), &node.cfg.tokens) {
        Ok(c) => c,
        Err(f) => {
            // PVE answers every unauthorized call only after ~3 s.
            let delay = Duration::from_millis(node.cfg.auth_failure_delay_ms);
            let left = delay.saturating_sub(started.elapsed());
            tokio::time::sleep(left).await;
            return base_response(401, Some(f.reason()), Bytes::new(), None);
        }
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let declared_len: usize = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if declared_len > 0 && method != "PUT" && method != "POST" {
        return plain_error(501, &format!("Unexpected content for method '{method}'"));
    }
    if declared_len > MAX_POST {
        return plain_error(501, "for data too large");
    }
    if declared_len > 0 {
        let ct = content_type
            .as_deref()
            .map(decode::media_type)
            .unwrap_or_default();
        if !(ct.is_empty() || ct == "application/x-www-form-urlencoded" || ct == "application/json")
        {
            let c = content_type.clone().unwrap_or_default();
            return plain_error(506, &format!("upload 'Content-Type '{c}' not implemented"));
        }
    }
    let body = match Limited::new(req.into_body(), MAX_POST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain_error(501, "for data too large"),
    };
    if format != "json" {
        return plain_error(501, &format!("no formatter for uri {rel}, {format}"));
    }
    let result = run(
        &node,
        &caller,
        &method,
        &rel,
        content_type.as_deref(),
        &body,
        &query,
    )
    .await;
    let mut params: Vec<String> =
        decode::extract_params(&method, content_type.as_deref(), &body, &query)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
    params.sort();
    node.record_request(crate::node::RequestRecord {
        method: method.clone(),
        path: rel.clone(),
        params,
        status: match &result {
            Ok(_) => 200,
            Err(e) => e.status(),
        },
        errors: match &result {
            Err(ApiError::Param(e)) => Some(e.clone()),
            _ => None,
        },
    });
    match result {
        Ok(reply) => ok_response(reply),
        Err(e) => error_response(&node, &e),
    }
}

/// rest_handler: route, path-parameter conflicts, permissions, node, validation,
/// then the handler.
async fn run(
    node: &Arc<Node>,
    caller: &Caller,
    method: &str,
    rel: &str,
    content_type: Option<&str>,
    body: &[u8],
    query: &str,
) -> Result<api::Reply, ApiError> {
    let params = decode::extract_params(method, content_type, body, query)
        .map_err(|e| ApiError::Fail(format!("{e}\n")))?;
    let schema = schema().map_err(|e| ApiError::Fail(e.to_string()))?;
    let (ep, uri) = match schema.route(method, rel) {
        Route::Found(ep, uri) => (ep, uri),
        Route::NotImplemented => {
            return Err(ApiError::Status(
                501,
                format!("Method '{method} {rel}' not implemented"),
            ));
        }
    };
    let merged = decode::merge_uri_params(&uri, params).map_err(ApiError::Param)?;
    if !crate::schema::perl::truthy(ep.info.get("allowtoken")) {
        return Err(ApiError::Perm(format!(
            "URI '{rel}' not available with API token, need proper ticket."
        )));
    }
    caller
        .check_api2_permissions(ep.permissions(), &merged)
        .map_err(ApiError::Perm)?;
    if ep.info.get("proxyto").and_then(Value::as_str) == Some("node") {
        let target = merged
            .get("node")
            .map(crate::schema::perl::stringify)
            .unwrap_or_default();
        if target != node.node() && target != "localhost" {
            return Err(ApiError::Fail(format!(
                "hostname lookup '{target}' failed - failed to get address info for: {target}: Name or service not known\n"
            )));
        }
    }
    let validated = schema.validate(ep, &merged).map_err(ApiError::Param)?;
    api::dispatch(node, caller, ep, &validated).await
}
