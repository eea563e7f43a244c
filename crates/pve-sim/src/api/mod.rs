//! The served endpoints: each one does what the corresponding PVE handler does
//! (pve-manager's API2, qemu-server's API2/Qemu.pm), in the same order, with the
//! same messages, on top of [`crate::node::Node`].

mod cluster;
mod qemu;
mod tasks;

pub use qemu::{cloudinit_preview, unique_tags};

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::http::auth::Caller;
use crate::node::Node;
use crate::schema::{Endpoint, perl};

/// A successful answer: `{"data": …}` plus `total` when set.
pub struct Reply {
    pub data: Value,
    pub total: Option<u64>,
}

impl Reply {
    pub fn data(v: Value) -> Result<Reply, ApiError> {
        Ok(Reply {
            data: v,
            total: None,
        })
    }
}

/// Typed access to validated parameters.
pub struct Params<'a>(pub &'a Map<String, Value>);

impl Params<'_> {
    pub fn has(&self, k: &str) -> bool {
        self.0.get(k).is_some_and(|v| !v.is_null())
    }

    pub fn str(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_null()).map(perl::stringify)
    }

    pub fn flag(&self, k: &str) -> bool {
        perl::truthy(self.0.get(k))
    }

    /// A boolean that may be absent (`$param->{full} // …`).
    pub fn opt_flag(&self, k: &str) -> Option<bool> {
        self.has(k).then(|| self.flag(k))
    }

    pub fn u64(&self, k: &str) -> Option<u64> {
        self.str(k)
            .and_then(|s| s.trim().trim_start_matches('+').parse().ok())
    }

    pub fn vmid(&self, k: &str) -> Result<u32, ApiError> {
        self.u64(k)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ApiError::param(k, "value does not look like a valid VM ID"))
    }
}

/// Root-only parameters refused for anyone else (`Only root may use this option.`).
pub fn root_only(caller: &Caller, p: &Params<'_>, keys: &[&str]) -> Result<(), ApiError> {
    for k in keys {
        if p.flag(k) && caller.user != "root@pam" {
            return Err(ApiError::param(k, "Only root may use this option."));
        }
    }
    Ok(())
}

pub fn perm(caller: &Caller, path: &str, privs: &[&str]) -> Result<(), ApiError> {
    caller.check(path, privs).map_err(ApiError::Perm)
}

/// Run the handler of a matched, authorized and validated request.
pub async fn dispatch(
    node: &Arc<Node>,
    caller: &Caller,
    ep: &Endpoint,
    params: &Map<String, Value>,
) -> Result<Reply, ApiError> {
    let p = Params(params);
    match (ep.method.as_str(), ep.path.as_str()) {
        ("GET", "/version") => cluster::version(node),
        ("GET", "/cluster/nextid") => cluster::nextid(node, &p),
        ("GET", "/cluster/resources") => cluster::resources(node, caller, &p).await,
        ("GET", "/nodes") => cluster::nodes(node, caller),
        ("GET", "/nodes/{node}/status") => cluster::node_status(node),
        ("GET", "/nodes/{node}/qemu") => qemu::list(node, caller, &p).await,
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => qemu::clone(node, caller, &p).await,
        ("GET", "/nodes/{node}/qemu/{vmid}/config") => qemu::get_config(node, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/config") => {
            qemu::update_config(node, caller, &p, false).await
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/config") => {
            qemu::update_config(node, caller, &p, true).await
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => qemu::resize(node, caller, &p),
        ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => qemu::status_current(node, &p).await,
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => qemu::start(node, caller, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => qemu::stop(node, caller, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => qemu::shutdown(node, caller, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot") => qemu::reboot(node, caller, &p),
        ("DELETE", "/nodes/{node}/qemu/{vmid}") => qemu::destroy(node, caller, &p),
        ("GET", "/nodes/{node}/qemu/{vmid}/rrddata") => qemu::rrddata(node, &p),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => tasks::status(node, caller, &p),
        ("GET", "/nodes/{node}/tasks/{upid}/log") => tasks::log(node, caller, &p),
        (m, path) => Err(ApiError::Status(
            501,
            format!("Method '{m} {path}' not implemented"),
        )),
    }
}
