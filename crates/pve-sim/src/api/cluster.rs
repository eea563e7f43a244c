//! `/version`, `/cluster/nextid`, `/cluster/resources`, `/nodes`,
//! `/nodes/{node}/status` (pve-manager API2).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Params, Reply};
use crate::error::ApiError;
use crate::http::auth::Caller;
use crate::node::Node;

fn repoid(node: &Node) -> String {
    // Stable per node name and version, like a build's git id.
    use sha1::{Digest, Sha1};
    let h = Sha1::digest(format!("{}{}", node.cfg.node, node.cfg.pve_version).as_bytes());
    hex::encode(&h[..8])
}

pub fn version(node: &Arc<Node>) -> Result<Reply, ApiError> {
    let v = &node.cfg.pve_version;
    let release: String = v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    Reply::data(json!({
        "version": v,
        "release": release,
        "repoid": repoid(node),
        "console": "html5",
    }))
}

/// `nextid`: reserves nothing. The answer is a string, as PVE's JSON encoder
/// emits it (the id was used as a hash key).
pub fn nextid(node: &Arc<Node>, p: &Params<'_>) -> Result<Reply, ApiError> {
    let ids = node.vmids();
    if let Some(v) = p.str("vmid") {
        let n: u32 = v.trim().parse().unwrap_or(0);
        if !ids.contains(&n) {
            return Reply::data(json!(v));
        }
        return Err(ApiError::param("vmid", &format!("VM {v} already exists")));
    }
    let (lower, upper) = (100u32, 1_000_000u32);
    for i in lower..upper {
        if ids.binary_search(&i).is_err() {
            return Reply::data(json!(i.to_string()));
        }
    }
    Err(ApiError::Fail(format!(
        "unable to get any free VMID in range [{lower}, {upper}]\n"
    )))
}

fn meminfo() -> (u64, u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (
        get("MemTotal:"),
        get("MemAvailable:"),
        get("SwapTotal:"),
        get("SwapFree:"),
    )
}

fn memory(node: &Node) -> (u64, u64) {
    let (total, avail, _, _) = meminfo();
    let used = total.saturating_sub(avail);
    match node.cfg.node_memory_mib {
        Some(m) => (m * 1024 * 1024, used.min(m * 1024 * 1024)),
        None => (total, used),
    }
}

fn rootfs(node: &Node) -> (u64, u64, u64) {
    match rustix::fs::statvfs(&node.cfg.state_dir) {
        Ok(s) => {
            let total = s.f_blocks * s.f_frsize;
            let free = s.f_bfree * s.f_frsize;
            let avail = s.f_bavail * s.f_frsize;
            (total, total.saturating_sub(free), avail)
        }
        Err(_) => (0, 0, 0),
    }
}

fn loadavg() -> Vec<String> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(String::from)
        .collect()
}

fn node_cpu(node: &Node) -> f64 {
    let l: f64 = loadavg()
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (l / node.host_cpus.max(1) as f64).min(1.0)
}

fn uptime() -> u64 {
    crate::node::qemu::host_uptime_secs() as u64
}

pub fn nodes(node: &Arc<Node>, _caller: &Caller) -> Result<Reply, ApiError> {
    let (maxmem, mem) = memory(node);
    let (maxdisk, disk, _) = rootfs(node);
    Reply::data(json!([{
        "node": node.node(),
        "status": "online",
        "type": "node",
        "id": format!("node/{}", node.node()),
        "cpu": node_cpu(node),
        "maxcpu": node.host_cpus,
        "mem": mem,
        "maxmem": maxmem,
        "disk": disk,
        "maxdisk": maxdisk,
        "uptime": uptime(),
        "level": "",
    }]))
}

pub fn node_status(node: &Arc<Node>) -> Result<Reply, ApiError> {
    let (total, used) = memory(node);
    let (_, avail, swap_total, swap_free) = meminfo();
    let (rt, ru, ra) = rootfs(node);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| -> String {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let sockets = {
        let mut ids: Vec<&str> = cpuinfo
            .lines()
            .filter(|l| l.starts_with("physical id"))
            .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len().max(1)
    };
    let version = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Reply::data(json!({
        "cpu": node_cpu(node),
        "cpuinfo": {
            "cpus": node.host_cpus,
            "cores": node.host_cpus / sockets as u64,
            "sockets": sockets,
            "model": field("model name"),
            "mhz": field("cpu MHz"),
            "hvm": if field("flags").contains("vmx") || field("flags").contains("svm") { "1" } else { "0" },
            "flags": field("flags"),
            "user_hz": 100,
        },
        "memory": { "total": total, "used": used, "free": total.saturating_sub(used), "available": avail.min(total) },
        "swap": { "total": swap_total, "used": swap_total.saturating_sub(swap_free), "free": swap_free },
        "rootfs": { "total": rt, "used": ru, "free": rt.saturating_sub(ru), "avail": ra },
        "uptime": uptime(),
        "loadavg": loadavg(),
        "idle": 0,
        "wait": 0,
        "ksm": { "shared": 0 },
        "kversion": format!("Linux {} (pve-sim)", version.trim()),
        "pveversion": format!("pve-manager/{}/{}", node.cfg.pve_version, repoid(node)),
        "boot-info": { "mode": "legacy-bios" },
        "current-kernel": { "sysname": "Linux", "release": version.trim(), "machine": "x86_64" },
    }))
}

/// `/cluster/resources`: VMs the caller may audit, the node and the storage.
pub async fn resources(
    node: &Arc<Node>,
    caller: &Caller,
    p: &Params<'_>,
) -> Result<Reply, ApiError> {
    let ty = p.str("type");
    let mut out: Vec<Value> = Vec::new();
    if ty.is_none() || ty.as_deref() == Some("vm") {
        for vmid in node.vmids() {
            if caller
                .check(&format!("/vms/{vmid}"), &["VM.Audit"])
                .is_err()
            {
                continue;
            }
            let Ok(st) = node.vm_status(vmid, true).await else {
                continue;
            };
            let mut e = Map::new();
            e.insert("id".into(), json!(format!("qemu/{vmid}")));
            e.insert("type".into(), json!("qemu"));
            e.insert("node".into(), json!(node.node()));
            for k in [
                "vmid",
                "name",
                "status",
                "maxmem",
                "maxdisk",
                "disk",
                "mem",
                "cpu",
                "uptime",
                "netin",
                "netout",
                "diskread",
                "diskwrite",
                "lock",
                "tags",
                "memhost",
            ] {
                if let Some(v) = st.get(k) {
                    e.insert(k.into(), v.clone());
                }
            }
            e.insert("maxcpu".into(), st.get("cpus").cloned().unwrap_or(json!(1)));
            e.insert(
                "template".into(),
                json!(st.get("template").and_then(Value::as_u64).unwrap_or(0)),
            );
            out.push(Value::Object(e));
        }
    }
    if (ty.is_none() || ty.as_deref() == Some("node"))
        && caller
            .check(&format!("/nodes/{}", node.node()), &["Sys.Audit"])
            .is_ok()
    {
        let (maxmem, mem) = memory(node);
        let (maxdisk, disk, _) = rootfs(node);
        out.push(json!({
            "id": format!("node/{}", node.node()),
            "type": "node",
            "node": node.node(),
            "status": "online",
            "cpu": node_cpu(node),
            "maxcpu": node.host_cpus,
            "mem": mem,
            "maxmem": maxmem,
            "disk": disk,
            "maxdisk": maxdisk,
            "uptime": uptime(),
            "level": "",
            "cgroup-mode": 2,
        }));
    }
    if (ty.is_none() || ty.as_deref() == Some("storage"))
        && caller.check("/storage/local", &["Datastore.Audit"]).is_ok()
    {
        let (maxdisk, disk, _) = rootfs(node);
        out.push(json!({
            "id": format!("storage/{}/local", node.node()),
            "type": "storage",
            "storage": "local",
            "node": node.node(),
            "status": "available",
            "plugintype": "dir",
            "content": "images,snippets,iso",
            "shared": 0,
            "disk": disk,
            "maxdisk": maxdisk,
        }));
    }
    Reply::data(Value::Array(out))
}
