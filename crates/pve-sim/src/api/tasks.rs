//! `GET /nodes/{node}/tasks/{upid}/status` and `…/log` (pve-manager API2/Tasks.pm).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Params, Reply, perm};
use crate::error::ApiError;
use crate::http::auth::{Caller, split_token_id};
use crate::node::Node;
use crate::node::tasks::{Upid, dump_log, read_status};

/// The task's user and token (`convert_token_task`), and whether `caller` may
/// read it without Sys.Audit (`check_task_user`).
fn owner_check(
    node: &Node,
    caller: &Caller,
    u: &Upid,
) -> Result<(String, Option<String>), ApiError> {
    let (user, tokenid) = match split_token_id(&u.user) {
        Some((user, tok)) => (user, Some(tok)),
        None => (u.user.clone(), None),
    };
    let own = match &tokenid {
        Some(_) => caller.tokenid == u.user || caller.tokenid == user,
        None => caller.tokenid == user,
    };
    if !own {
        perm(caller, &format!("/nodes/{}", node.node()), &["Sys.Audit"])?;
    }
    Ok((user, tokenid))
}

pub fn status(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let upid_s = p.str("upid").unwrap_or_default();
    let Some(u) = Upid::decode(&upid_s) else {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    };
    let path = u.log_path(node.tasks.dir());
    if !path.is_file() {
        return Err(ApiError::param("upid", "no such task"));
    }
    let (user, tokenid) = owner_check(node, caller, &u)?;
    let running = node.tasks.is_running(&upid_s);
    let mut d = Map::new();
    d.insert("node".into(), json!(u.node));
    d.insert("pid".into(), json!(u.pid));
    d.insert("pstart".into(), json!(u.pstart));
    d.insert("starttime".into(), json!(u.starttime));
    d.insert("type".into(), json!(u.ty));
    d.insert("id".into(), json!(u.id));
    d.insert("user".into(), json!(user));
    if let Some(t) = tokenid {
        d.insert("tokenid".into(), json!(t));
    }
    d.insert("upid".into(), json!(upid_s));
    d.insert(
        "status".into(),
        json!(if running { "running" } else { "stopped" }),
    );
    if !running {
        d.insert("exitstatus".into(), json!(read_status(&path)));
    }
    Reply::data(Value::Object(d))
}

pub fn log(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let upid_s = p.str("upid").unwrap_or_default();
    let Some(u) = Upid::decode(&upid_s) else {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    };
    owner_check(node, caller, &u)?;
    if p.flag("download") {
        if p.has("start") || p.has("limit") {
            return Err(ApiError::Fail(
                "'download' cannot be used together with 'start' or 'limit' parameters\n".into(),
            ));
        }
        return Err(ApiError::Fail(
            "pve-sim: task log download is not simulated\n".into(),
        ));
    }
    let start = p.u64("start").unwrap_or(0);
    let limit = p.u64("limit").unwrap_or(50);
    let (total, lines) = dump_log(&u.log_path(node.tasks.dir()), start, limit);
    let data: Vec<Value> = lines
        .into_iter()
        .map(|(n, t)| json!({"n": n, "t": t}))
        .collect();
    Ok(Reply {
        data: Value::Array(data),
        total: Some(total),
    })
}
