//! `/nodes/{node}/qemu/…`: what qemu-server's API2/Qemu.pm does, step by step:
//! synchronous early checks, then a worker task (UPID) for anything slow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Params, Reply, perm, root_only};
use crate::error::ApiError;
use crate::http::auth::Caller;
use crate::node::conf::VmConf;
use crate::node::storage::STORAGE_ID;
use crate::node::tasks::read_status;
use crate::node::{Node, cloudinit};
use crate::schema::formats;

const CPU_OPTS: &[&str] = &[
    "cores",
    "cpu",
    "runningcpu",
    "cpulimit",
    "cpuunits",
    "numa",
    "smp",
    "sockets",
    "vcpus",
    "affinity",
];
const MEMORY_OPTS: &[&str] = &["memory", "balloon", "shares", "allow-ksm"];
const HWTYPE_OPTS: &[&str] = &[
    "acpi",
    "hotplug",
    "kvm",
    "machine",
    "runningmachine",
    "scsihw",
    "smbios1",
    "tablet",
    "vga",
    "watchdog",
    "audio0",
    "rng0",
];
const GENERAL_OPTS: &[&str] = &[
    "agent",
    "autostart",
    "bios",
    "description",
    "keyboard",
    "localtime",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "ostype",
    "protection",
    "reboot",
    "startdate",
    "startup",
    "tdf",
    "template",
];
const DISK_OPTS: &[&str] = &["boot", "bootdisk", "vmstatestorage"];
const CLOUDINIT_OPTS: &[&str] = &[
    "cicustom",
    "cipassword",
    "citype",
    "ciuser",
    "ciupgrade",
    "nameserver",
    "searchdomain",
    "sshkeys",
];
/// Options applied at once even while the VM runs (`$fast_plug_option` plus the
/// cloud-init options).
const FAST_PLUG: &[&str] = &[
    "description",
    "hookscript",
    "lock",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
    "cicustom",
    "cipassword",
    "citype",
    "ciuser",
    "ciupgrade",
    "nameserver",
    "searchdomain",
    "sshkeys",
];

fn indexed(k: &str, prefix: &str) -> bool {
    k.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn vm_perm(caller: &Caller, vmid: u32, privs: &[&str]) -> Result<(), ApiError> {
    perm(caller, &format!("/vms/{vmid}"), privs)
}

fn vm_perm_any(caller: &Caller, vmid: u32, privs: &[&str]) -> Result<(), ApiError> {
    caller
        .check_any(&format!("/vms/{vmid}"), privs)
        .map_err(ApiError::Perm)
}

/// `$check_vm_modify_config_perm`.
fn check_modify_perm(caller: &Caller, vmid: u32, keys: &[String]) -> Result<(), ApiError> {
    if caller.user == "root@pam" {
        return Ok(());
    }
    for opt in keys {
        let o = opt.as_str();
        if formats::is_valid_drivename(o)
            || o == "cdrom"
            || ["unused", "serial", "usb", "hostpci", "virtiofs"]
                .iter()
                .any(|p| indexed(o, p))
            || o == "tags"
        {
            continue;
        }
        if CPU_OPTS.contains(&o) || indexed(o, "numa") {
            vm_perm(caller, vmid, &["VM.Config.CPU"])?;
        } else if MEMORY_OPTS.contains(&o) {
            vm_perm(caller, vmid, &["VM.Config.Memory"])?;
        } else if HWTYPE_OPTS.contains(&o) {
            vm_perm(caller, vmid, &["VM.Config.HWType"])?;
        } else if GENERAL_OPTS.contains(&o) {
            vm_perm(caller, vmid, &["VM.Config.Options"])?;
            if o == "startup" {
                perm(caller, "/", &["Sys.Modify"])?;
            }
        } else if o == "freeze" {
            vm_perm(caller, vmid, &["VM.PowerMgmt"])?;
        } else if DISK_OPTS.contains(&o) {
            vm_perm(caller, vmid, &["VM.Config.Disk"])?;
        } else if indexed(o, "net") || o == "running-nets-host-mtu" {
            vm_perm(caller, vmid, &["VM.Config.Network"])?;
        } else if CLOUDINIT_OPTS.contains(&o) || indexed(o, "ipconfig") {
            vm_perm_any(caller, vmid, &["VM.Config.Cloudinit", "VM.Config.Network"])?;
        } else if o == "vmstate" {
            vm_perm(caller, vmid, &["VM.Config.Disk", "VM.PowerMgmt"])?;
        } else {
            return Err(ApiError::Fail(format!("only root can set '{o}' config\n")));
        }
    }
    Ok(())
}

/// `check_bridge_access`: SDN.Use on every bridge a net device names.
fn check_bridge_access(
    node: &Node,
    caller: &Caller,
    conf: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if caller.user == "root@pam" {
        return Ok(());
    }
    let Some(fmt) = node.schema.config_key_format("net0") else {
        return Ok(());
    };
    for (k, v) in conf {
        if !indexed(k, "net") {
            continue;
        }
        let Ok(n) = node.schema.parse_property_string(fmt, v, "", None) else {
            continue;
        };
        let Some(bridge) = n.get("bridge") else {
            continue;
        };
        match n.get("tag") {
            Some(tag) => perm(
                caller,
                &format!("/sdn/zones/localnetwork/{bridge}/{tag}"),
                &["SDN.Use"],
            )?,
            None => perm(
                caller,
                &format!("/sdn/zones/localnetwork/{bridge}"),
                &["SDN.Use"],
            )?,
        }
    }
    Ok(())
}

pub async fn list(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let full = p.flag("full");
    let mut out = Vec::new();
    for vmid in node.vmids() {
        if caller
            .check(&format!("/vms/{vmid}"), &["VM.Audit"])
            .is_err()
        {
            continue;
        }
        if let Ok(s) = node.vm_status(vmid, full).await {
            out.push(Value::Object(s));
        }
    }
    Reply::data(Value::Array(out))
}

/// A config value as PVE's JSON shows it: integers and booleans are numbers.
fn typed_value(node: &Node, key: &str, v: &str) -> Value {
    let ty = node
        .schema
        .config_key_schema(key)
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    match ty {
        Some("integer") => v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(v)),
        Some("boolean") => match crate::schema::parse_boolean(v) {
            Some(b) => json!(b),
            None => json!(v),
        },
        _ => json!(v),
    }
}

pub fn get_config(node: &Arc<Node>, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    if p.flag("snapshot") && p.flag("current") {
        let msg = "cannot use 'snapshot' parameter with 'current'";
        let mut e = crate::schema::Errors::new();
        e.insert("snapshot".into(), msg.into());
        e.insert("current".into(), msg.into());
        return Err(ApiError::Param(e));
    }
    let conf = node.load_config(vmid)?;
    if let Some(s) = p.str("snapshot").filter(|s| !s.is_empty()) {
        return Err(ApiError::Fail(format!("snapshot '{s}' does not exist\n")));
    }
    let view = conf.view(p.flag("current"));
    let mut out = Map::new();
    for (k, v) in &view {
        if k == "cipassword" {
            out.insert(k.clone(), json!("**********"));
        } else {
            out.insert(k.clone(), typed_value(node, k, v));
        }
    }
    out.insert("digest".into(), json!(conf.digest));
    Reply::data(Value::Object(out))
}

pub async fn status_current(node: &Arc<Node>, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    let conf = node.load_config(vmid)?;
    let mut st = node.vm_status(vmid, true).await?;
    st.insert("ha".into(), json!({"managed": 0}));
    if let Some(a) = conf.get("agent") {
        if let Some(fmt) = node.schema.config_key_format("agent") {
            if let Ok(a) = node.schema.parse_property_string(fmt, a, "", None) {
                if a.get("enabled").map(String::as_str) == Some("1") {
                    st.insert("agent".into(), json!(1));
                }
            }
        }
    }
    Reply::data(Value::Object(st))
}

// -------------------------------------------------------------------------
// Clone.

struct ClonePlan {
    newconf: BTreeMap<String, String>,
    drives: Vec<(String, BTreeMap<String, String>, bool)>,
    old_name: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn clone_load_and_check(
    node: &Node,
    caller: &Caller,
    vmid: u32,
    newid: u32,
    running: bool,
    full_param: Option<bool>,
    storage: Option<&str>,
    format: Option<&str>,
    pool: Option<&str>,
    snapname: Option<&str>,
) -> Result<ClonePlan, ApiError> {
    if let Some(pool) = pool {
        return Err(ApiError::Fail(format!("pool '{pool}' does not exist\n")));
    }
    if let Some(s) = storage {
        if s != STORAGE_ID {
            return Err(ApiError::Fail(format!("storage '{s}' does not exist\n")));
        }
    }
    let conf = node.load_config(vmid)?;
    conf.check_lock()?;
    if node.running_pid(vmid).is_some() != running {
        return Err(ApiError::Fail("unexpected state change\n".into()));
    }
    if let Some(s) = snapname {
        return Err(ApiError::Fail(format!("snapshot '{s}' does not exist\n")));
    }
    let full = full_param.unwrap_or(!conf.is_template());
    if storage.is_some() && !full {
        return Err(ApiError::Fail(
            "parameter 'storage' not allowed for linked clones\n".into(),
        ));
    }
    if format.is_some() && !full {
        return Err(ApiError::Fail(
            "parameter 'format' not allowed for linked clones\n".into(),
        ));
    }
    // $check_storage_access_clone
    for (k, v) in &conf.main {
        if !formats::is_valid_drivename(k) {
            continue;
        }
        let Some(d) = node.parse_drive(k, v) else {
            continue;
        };
        let file = d.get("file").cloned().unwrap_or_default();
        if file.is_empty() || file == "none" {
            continue;
        }
        if d.get("media").map(String::as_str) == Some("cdrom") {
            if file == "cdrom" {
                perm(caller, "/", &["Sys.Console"])?;
            }
            continue;
        }
        let sid = storage.unwrap_or(STORAGE_ID);
        perm(
            caller,
            &format!("/storage/{sid}"),
            &["Datastore.AllocateSpace"],
        )?;
    }
    check_bridge_access(node, caller, &conf.main)?;
    if node.config_exists(newid) {
        return Err(ApiError::Fail(format!(
            "unable to create VM {newid}: config file already exists\n"
        )));
    }
    let mut newconf = BTreeMap::new();
    newconf.insert("lock".to_string(), "clone".to_string());
    let mut drives = Vec::new();
    for (k, v) in &conf.main {
        if matches!(
            k.as_str(),
            "snapshots"
                | "parent"
                | "snaptime"
                | "vmstate"
                | "snapstate"
                | "runningcpu"
                | "runningmachine"
                | "running-nets-host-mtu"
                | "lock"
        ) || indexed(k, "unused")
        {
            // Snapshot state, the lock and unused disks are not copied.
            continue;
        }
        if indexed(k, "net") {
            newconf.insert(
                k.clone(),
                node.normalize_net(v, true).map_err(ApiError::Fail)?,
            );
        } else if formats::is_valid_drivename(k) {
            let d = node.parse_drive(k, v).ok_or_else(|| {
                ApiError::Fail(format!("unable to parse drive options for '{k}'\n"))
            })?;
            let file = d.get("file").cloned().unwrap_or_default();
            if d.get("media").map(String::as_str) == Some("cdrom")
                && !Node::is_cloudinit_volume(&file)
            {
                newconf.insert(k.clone(), v.clone());
                continue;
            }
            let is_ci = Node::is_cloudinit_volume(&file);
            let full_copy = full || is_ci || k == "tpmstate0";
            if !full_copy {
                let ok = node
                    .storage
                    .parse(&file)
                    .map(|vol| vol.is_base)
                    .unwrap_or(false);
                if !ok {
                    return Err(ApiError::Fail(format!(
                        "Linked clone feature is not supported for '{file}' ({k})\n"
                    )));
                }
            }
            drives.push((k.clone(), d, full_copy));
        } else {
            newconf.insert(k.clone(), v.clone());
        }
    }
    Ok(ClonePlan {
        newconf,
        drives,
        old_name: conf.main.get("name").cloned(),
    })
}

pub async fn clone(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    let newid = p.vmid("newid")?;
    let pool = p.str("pool");
    let snapname = p.str("snapname");
    let storage = p.str("storage");
    let format = p.str("format");
    let mut target = p.str("target");
    if target
        .as_deref()
        .is_some_and(|t| t == node.node() || t == "localhost")
    {
        target = None;
    }
    if let Some(t) = &target {
        return Err(ApiError::Fail(format!("no such cluster node '{t}'\n")));
    }
    let running = node.check_running(vmid)?.is_some();
    let full_param = p.opt_flag("full");
    let name = p.str("name").filter(|s| !s.is_empty());
    let description = p.str("description").filter(|s| !s.is_empty());
    // Early checks before forking.
    clone_load_and_check(
        node,
        caller,
        vmid,
        newid,
        running,
        full_param,
        storage.as_deref(),
        format.as_deref(),
        pool.as_deref(),
        snapname.as_deref(),
    )?;
    let n = node.clone();
    let c = caller.clone();
    let delay = node.faults.task_duration("qmclone");
    let upid = node
        .tasks
        .fork_worker(
            "qmclone",
            &vmid.to_string(),
            &caller.tokenid,
            delay,
            move |ctx| async move {
                // Shared lock on a stopped source, then the target's; 1 s each.
                let _src = n
                    .locks
                    .lock(vmid, n.clone_lock_wait(), !running, Some(&ctx))
                    .await?;
                let _dst = n
                    .locks
                    .lock(newid, n.clone_lock_wait(), false, Some(&ctx))
                    .await?;
                let plan = clone_load_and_check(
                    &n,
                    &c,
                    vmid,
                    newid,
                    running,
                    full_param,
                    storage.as_deref(),
                    format.as_deref(),
                    pool.as_deref(),
                    snapname.as_deref(),
                )
                .map_err(|e| e.message())?;
                ctx.log(&format!("creating a clone of VM {vmid} with ID {newid}"));
                let mut newconf = plan.newconf;
                let mut smbios = newconf
                    .get("smbios1")
                    .and_then(|s| {
                        let fmt = n.schema.hash_format("pve-qm-smbios1")?;
                        n.schema.parse_property_string(fmt, s, "", None).ok()
                    })
                    .unwrap_or_default();
                smbios.insert("uuid".into(), crate::node::uuid_v4());
                if let Some(fmt) = n.schema.hash_format("pve-qm-smbios1") {
                    newconf.insert(
                        "smbios1".into(),
                        n.schema.print_property_string(fmt, &smbios, &[])?,
                    );
                }
                if newconf.contains_key("vmgenid") {
                    newconf.insert("vmgenid".into(), crate::node::uuid_v4());
                }
                newconf.remove("template");
                let newname = name.unwrap_or_else(|| {
                    format!(
                        "Copy-of-VM-{}",
                        plan.old_name.clone().unwrap_or_else(|| vmid.to_string())
                    )
                });
                newconf.insert("name".into(), newname);
                if let Some(d) = description {
                    newconf.insert("description".into(), d);
                }
                // The temporary config that marks the VMID taken.
                n.write_raw_config(newid, "# qmclone temporary file\nlock: clone\n")
                    .map_err(|e| e.message())?;
                let mut newvols: Vec<std::path::PathBuf> = Vec::new();
                let result: Result<(), String> = async {
                    ctx.simulated_work().await;
                    if let Some(msg) = n.faults.take_clone_failure() {
                        return Err(format!("{}\n", msg.trim_end_matches('\n')));
                    }
                    let uid = n.uid_for(newid);
                    for (key, d, full_copy) in &plan.drives {
                        let file = d.get("file").cloned().unwrap_or_default();
                        ctx.log(&format!(
                            "create {} clone of drive {key} ({file})",
                            if *full_copy { "full" } else { "linked" }
                        ));
                        let newvolid = if Node::is_cloudinit_volume(&file) {
                            let src = n.storage.parse(&file)?;
                            n.storage
                                .alloc(
                                    newid,
                                    &src.format,
                                    Some(&format!("vm-{newid}-cloudinit.{}", src.format)),
                                    4 * 1024 * 1024,
                                    uid,
                                )
                                .await?
                        } else if *full_copy {
                            let src = n.storage.parse(&file)?;
                            let fmt = format.clone().unwrap_or_else(|| src.format.clone());
                            n.storage.full_copy(&src, newid, &fmt, uid).await?
                        } else {
                            let src = n.storage.parse(&file)?;
                            n.storage.linked_clone(&src, newid, uid).await?
                        };
                        newvols.push(n.storage.parse(&newvolid)?.path);
                        let mut nd = d.clone();
                        nd.insert("file".into(), newvolid);
                        if *full_copy && !Node::is_cloudinit_volume(&file) {
                            if let Some(f) = &format {
                                nd.insert("format".into(), f.clone());
                            }
                        }
                        newconf.insert(key.clone(), n.print_drive(key, &nd)?);
                        let c = VmConf {
                            main: newconf.clone(),
                            ..Default::default()
                        };
                        n.write_config(newid, &c).map_err(|e| e.message())?;
                    }
                    newconf.remove("lock");
                    let c = VmConf {
                        main: newconf.clone(),
                        ..Default::default()
                    };
                    n.write_config(newid, &c).map_err(|e| e.message())?;
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    for v in &newvols {
                        let _ = std::fs::remove_file(v);
                    }
                    n.storage.remove_vm_dir_if_empty(newid);
                    n.remove_config(newid);
                    return Err(format!("clone failed: {e}"));
                }
                Ok(())
            },
        )
        .map_err(|e| ApiError::Fail(format!("unable to fork worker - {e}\n")))?;
    Reply::data(json!(upid))
}

// -------------------------------------------------------------------------
// Config update.

/// `get_unique_tags`: split, lower-case, sort, de-duplicate, join with `;`.
pub fn unique_tags(tags: &str) -> String {
    let mut t: Vec<String> = formats::split_list(tags)
        .into_iter()
        .map(|s| s.to_lowercase())
        .collect();
    t.sort();
    t.dedup();
    t.join(";")
}

fn option_exists(node: &Node, k: &str) -> bool {
    node.schema.config_key_schema(k).is_some() || VmConf::is_internal_key(k)
}

/// `validate_ssh_public_keys`: every non-blank line must be a key ssh-keygen reads.
async fn validate_ssh_keys(raw: &[u8]) -> Result<(), ApiError> {
    for line in raw.split(|&b| b == b'\n') {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let tmp = std::env::temp_dir().join(format!("pve-sim-key-{}", crate::node::uuid_v4()));
        let mut data = line.to_vec();
        data.push(b'\n');
        let ok = std::fs::write(&tmp, &data).is_ok()
            && tokio::process::Command::new("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(&tmp)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false);
        let _ = std::fs::remove_file(&tmp);
        if !ok {
            return Err(ApiError::Fail("SSH public key validation error\n".into()));
        }
    }
    Ok(())
}

struct Update {
    vmid: u32,
    digest: Option<String>,
    skiplock: bool,
    delete: Vec<String>,
    revert: Vec<String>,
    force: bool,
    params: BTreeMap<String, String>,
    log_line: String,
}

fn load_and_check(node: &Node, u: &Update) -> Result<VmConf, ApiError> {
    let conf = node.load_config(u.vmid)?;
    if let Some(d) = &u.digest {
        if !d.is_empty() && *d != conf.digest {
            return Err(ApiError::Fail(
                "checksum mismatch (file change by other user?)\n".into(),
            ));
        }
    }
    if !u.skiplock {
        conf.check_lock()?;
    }
    if u.params.contains_key("memory") || u.params.contains_key("balloon") {
        let view = conf.view(false);
        let mem_s = u
            .params
            .get("memory")
            .or_else(|| conf.pending.get("memory"))
            .or_else(|| conf.main.get("memory"))
            .cloned()
            .unwrap_or_else(|| "512".into());
        let maxmem = node
            .schema
            .config_key_format("memory")
            .and_then(|f| node.schema.parse_property_string(f, &mem_s, "", None).ok())
            .and_then(|m| m.get("current").and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(512);
        let balloon = u
            .params
            .get("balloon")
            .or_else(|| view.get("balloon"))
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
        if balloon > maxmem {
            return Err(ApiError::Fail(
                "balloon value too large (must be smaller than assigned memory)\n".into(),
            ));
        }
    }
    Ok(conf)
}

pub async fn update_config(
    node: &Arc<Node>,
    caller: &Caller,
    p: &Params<'_>,
    sync: bool,
) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    let digest = p.str("digest");
    let background_delay = p.u64("background_delay");
    let mut rest: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in p.0 {
        if matches!(
            k.as_str(),
            "node"
                | "vmid"
                | "digest"
                | "background_delay"
                | "skip_cloud_init"
                | "import-working-storage"
        ) || v.is_null()
        {
            continue;
        }
        rest.insert(k.clone(), crate::schema::perl::stringify(v));
    }
    let log_line = rest
        .iter()
        .map(|(k, v)| {
            let v = if k == "cipassword" {
                "<hidden>"
            } else {
                v.as_str()
            };
            format!("-{k} {v}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let skiplock = rest.remove("skiplock").is_some_and(|v| v == "1");
    if skiplock && caller.user != "root@pam" {
        return Err(ApiError::param(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    let delete_str = rest.remove("delete");
    let revert_str = rest.remove("revert");
    let force = rest.remove("force").is_some_and(|v| v == "1");
    if let Some(keys) = rest.get("sshkeys") {
        let raw = crate::http::decode::uri_unescape(keys.as_bytes());
        validate_ssh_keys(&raw).await?;
    }
    if delete_str.is_none() && revert_str.is_none() && rest.is_empty() {
        return Err(ApiError::Fail("no options specified\n".into()));
    }
    if let Some(mut cd) = rest.remove("cdrom") {
        if !cd.contains("media=") {
            cd.push_str(",media=cdrom");
        }
        rest.insert("ide2".into(), cd);
    }
    let mut revert = Vec::new();
    for opt in formats::split_list(revert_str.as_deref().unwrap_or("")) {
        if !option_exists(node, &opt) {
            return Err(ApiError::param(
                "revert",
                &format!("unknown option '{opt}'"),
            ));
        }
        if rest.contains_key(&opt) {
            return Err(ApiError::param(
                "delete",
                &format!("you can't use '-{opt}' and -revert {opt}' at the same time"),
            ));
        }
        revert.push(opt);
    }
    let mut delete = Vec::new();
    for opt in formats::split_list(delete_str.as_deref().unwrap_or("")) {
        let opt = if opt == "cdrom" {
            "ide2".to_string()
        } else {
            opt
        };
        if rest.contains_key(&opt) {
            return Err(ApiError::param(
                "delete",
                &format!("you can't use '-{opt}' and -delete {opt}' at the same time"),
            ));
        }
        if revert.contains(&opt) {
            return Err(ApiError::param(
                "revert",
                &format!("you can't use '-delete {opt}' and -revert {opt}' at the same time"),
            ));
        }
        if !option_exists(node, &opt) {
            return Err(ApiError::param(
                "delete",
                &format!("unknown option '{opt}'"),
            ));
        }
        delete.push(opt);
    }
    // Drives: what the simulated storage can do.
    for (k, v) in &rest {
        if !formats::is_valid_drivename(k) {
            continue;
        }
        let d = node
            .parse_drive(k, v)
            .ok_or_else(|| ApiError::param(k, "invalid format"))?;
        if d.contains_key("import-from") {
            return Err(ApiError::Fail(
                "pve-sim: import-from is not simulated\n".into(),
            ));
        }
        let file = d.get("file").cloned().unwrap_or_default();
        if file.starts_with('/') || file == "cdrom" {
            if caller.user != "root@pam" {
                return Err(ApiError::Fail(format!(
                    "only root can set '{k}' config for real devices\n"
                )));
            }
        } else if file != "none" {
            let (store, _) = formats::split_volume_id(&file).unwrap_or(("", ""));
            if store != STORAGE_ID {
                return Err(ApiError::Fail(format!(
                    "storage '{store}' does not exist\n"
                )));
            }
        }
    }
    for (k, v) in rest.iter_mut() {
        if indexed(k, "net") {
            *v = node.normalize_net(v, false).map_err(ApiError::Fail)?;
        } else if k == "vmgenid" && v == "1" {
            *v = crate::node::uuid_v4();
        }
    }
    check_modify_perm(caller, vmid, &delete)?;
    check_modify_perm(caller, vmid, &rest.keys().cloned().collect::<Vec<_>>())?;
    // $check_storage_access: new disks need space on the storage; foreign volumes
    // need the owner's disk privilege.
    for (k, v) in &rest {
        if !formats::is_valid_drivename(k) {
            continue;
        }
        let Some(d) = node.parse_drive(k, v) else {
            continue;
        };
        let file = d.get("file").cloned().unwrap_or_default();
        if let Some((sid, rest_)) = formats::split_volume_id(&file) {
            if rest_.parse::<f64>().is_ok() || rest_ == "cloudinit" {
                perm(
                    caller,
                    &format!("/storage/{sid}"),
                    &["Datastore.AllocateSpace"],
                )?;
            } else if let Ok(vol) = node.storage.parse(&file) {
                if vol.owner != vmid {
                    vm_perm(caller, vol.owner, &["VM.Config.Disk"])?;
                }
            }
        }
    }
    check_bridge_access(node, caller, &rest)?;
    let u = Update {
        vmid,
        digest,
        skiplock,
        delete,
        revert,
        force,
        params: rest,
        log_line,
    };
    load_and_check(node, &u)?;
    if sync {
        let _g = node.locks.lock(vmid, node.lock_wait(), false, None).await?;
        apply_update(node, caller, &u, None).await?;
        return Reply::data(Value::Null);
    }
    let n = node.clone();
    let c = caller.clone();
    let delay = node.faults.task_duration("qmconfig");
    let upid = node
        .tasks
        .fork_worker(
            "qmconfig",
            &vmid.to_string(),
            &caller.tokenid,
            delay,
            move |ctx| async move {
                let _g = n.locks.lock(vmid, n.lock_wait(), false, Some(&ctx)).await?;
                ctx.simulated_work().await;
                apply_update(&n, &c, &u, Some(&ctx))
                    .await
                    .map_err(|e| match e {
                        ApiError::Param(m) => m
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        other => other.message(),
                    })
            },
        )
        .map_err(|e| ApiError::Fail(format!("unable to fork worker - {e}\n")))?;
    if let Some(secs) = background_delay {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline && node.tasks.is_running(&upid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !node.tasks.is_running(&upid) {
            let status = crate::node::tasks::Upid::decode(&upid)
                .map(|u| read_status(&u.log_path(node.tasks.dir())))
                .unwrap_or_default();
            if status == "OK" || status.starts_with("WARNINGS: ") {
                return Reply::data(Value::Null);
            }
            return Err(ApiError::Fail(format!(
                "failed to update VM {vmid}: {status}\n"
            )));
        }
    }
    Reply::data(json!(upid))
}

/// The update itself (`$updatefn`), under the config lock.
async fn apply_update(
    node: &Arc<Node>,
    caller: &Caller,
    u: &Update,
    ctx: Option<&crate::node::tasks::TaskCtx>,
) -> Result<(), ApiError> {
    let vmid = u.vmid;
    let mut conf = load_and_check(node, u)?;
    let mut params = u.params.clone();
    let mut delete = u.delete.clone();
    for opt in &u.revert {
        if let Some(v) = conf.main.get(opt) {
            params.insert(opt.clone(), v.clone());
        } else if conf.pending.contains_key(opt) {
            delete.push(opt.clone());
        }
    }
    if let Some(t) = ctx {
        t.log(&format!("update VM {vmid}: {}", u.log_line));
    }
    let mut bootorder: Vec<String> = conf
        .main
        .get("boot")
        .and_then(|b| {
            let fmt = node.schema.hash_format("pve-qm-boot")?;
            node.schema.parse_property_string(fmt, b, "", None).ok()
        })
        .and_then(|b| b.get("order").cloned())
        .map(|o| formats::split_list(&o))
        .unwrap_or_default();
    let bootorder_deleted = delete.iter().any(|d| d == "bootorder");
    let mut pending_del = conf.pending_delete();
    for opt in &delete {
        let val = conf
            .main
            .get(opt)
            .or_else(|| conf.pending.get(opt))
            .cloned();
        let Some(val) = val else {
            if let Some(t) = ctx {
                t.log(&format!(
                    "cannot delete '{opt}' - not set in current configuration!"
                ));
            }
            continue;
        };
        conf.pending.remove(opt);
        if !bootorder_deleted && bootorder.iter().any(|b| b == opt) {
            bootorder.retain(|b| b != opt);
            conf.pending
                .insert("boot".into(), format!("order={}", bootorder.join(";")));
        }
        if indexed(opt, "unused") {
            if conf.get("protection") == Some("1") {
                return Err(ApiError::Fail(format!(
                    "can't remove unused disk '{val}' - protection mode enabled\n"
                )));
            }
            vm_perm(caller, vmid, &["VM.Config.Disk"])?;
            if let Ok(vol) = node.storage.parse(&val) {
                if vol.owner == vmid {
                    let _ = node.storage.free(&vol);
                }
            }
            conf.main.remove(opt);
        } else if formats::is_valid_drivename(opt) {
            if conf.get("protection") == Some("1") {
                return Err(ApiError::Fail(format!(
                    "can't remove drive '{opt}' - protection mode enabled\n"
                )));
            }
            let cd = val.contains("media=cdrom");
            let ci = node
                .parse_drive(opt, &val)
                .and_then(|d| d.get("file").cloned())
                .is_some_and(|f| Node::is_cloudinit_volume(&f));
            if ci {
                vm_perm_any(caller, vmid, &["VM.Config.Cloudinit", "VM.Config.CDROM"])?;
            } else if cd {
                vm_perm(caller, vmid, &["VM.Config.CDROM"])?;
            } else {
                vm_perm(caller, vmid, &["VM.Config.Disk"])?;
            }
            pending_del.insert(opt.clone(), u.force);
        } else if indexed(opt, "serial") {
            if val == "socket" {
                vm_perm(caller, vmid, &["VM.Config.HWType"])?;
            } else if caller.user != "root@pam" {
                return Err(ApiError::Fail(format!(
                    "only root can delete '{opt}' config for real devices\n"
                )));
            }
            pending_del.insert(opt.clone(), u.force);
        } else if opt == "tags" {
            vm_perm(caller, vmid, &["VM.Config.Options"])?;
            conf.main.remove("tags");
        } else {
            if indexed(opt, "net") {
                if let Some(old) = conf.main.get(opt) {
                    let m: BTreeMap<String, String> = [(opt.clone(), old.clone())].into();
                    check_bridge_access(node, caller, &m)?;
                }
            }
            pending_del.insert(opt.clone(), u.force);
        }
    }
    conf.set_pending_delete(&pending_del);
    for (opt, value) in &params {
        let mut value = value.clone();
        if conf.pending.get(opt) == Some(&value) {
            continue;
        }
        if formats::is_valid_drivename(opt) {
            let d = node.parse_drive(opt, &value).unwrap_or_default();
            let file = d.get("file").cloned().unwrap_or_default();
            if let Some((_, size)) = formats::split_volume_id(&file) {
                let uid = node.uid_for(vmid);
                let fmt = d.get("format").cloned().unwrap_or_else(|| "qcow2".into());
                if size == "cloudinit" {
                    let volid = node
                        .storage
                        .alloc(
                            vmid,
                            &fmt,
                            Some(&format!("vm-{vmid}-cloudinit.{fmt}")),
                            4 * 1024 * 1024,
                            uid,
                        )
                        .await?;
                    let mut nd = d.clone();
                    nd.insert("file".into(), volid);
                    nd.insert("media".into(), "cdrom".into());
                    value = node.print_drive(opt, &nd)?;
                } else if let Ok(gib) = size.parse::<f64>() {
                    let bytes = (gib * 1024.0 * 1024.0 * 1024.0) as u64;
                    let volid = node.storage.alloc(vmid, &fmt, None, bytes, uid).await?;
                    let mut nd = d.clone();
                    nd.insert("file".into(), volid);
                    nd.insert("size".into(), bytes.to_string());
                    value = node.print_drive(opt, &nd)?;
                }
            }
            if !bootorder.is_empty()
                && d.get("media").map(String::as_str) == Some("cdrom")
                && !bootorder.iter().any(|b| b == opt)
            {
                bootorder.push(opt.clone());
                conf.pending
                    .insert("boot".into(), format!("order={}", bootorder.join(";")));
            }
            conf.pending.insert(opt.clone(), value);
        } else if indexed(opt, "serial") {
            let old_socket = conf.main.get(opt).is_none_or(|v| v == "socket");
            if old_socket && value == "socket" {
                vm_perm(caller, vmid, &["VM.Config.HWType"])?;
            } else if caller.user != "root@pam" {
                return Err(ApiError::Fail(format!(
                    "only root can modify '{opt}' config for real devices\n"
                )));
            }
            conf.pending.insert(opt.clone(), value);
        } else if opt == "tags" {
            vm_perm(caller, vmid, &["VM.Config.Options"])?;
            conf.pending.insert(opt.clone(), unique_tags(&value));
        } else if indexed(opt, "net") {
            if let Some(old) = conf.main.get(opt) {
                let m: BTreeMap<String, String> = [(opt.clone(), old.clone())].into();
                check_bridge_access(node, caller, &m)?;
            }
            conf.pending.insert(opt.clone(), value);
        } else if opt == "cipassword" {
            conf.main.insert(opt.clone(), value);
        } else if opt == "boot" {
            let fmt = node
                .schema
                .hash_format("pve-qm-boot")
                .ok_or("no boot format\n")?;
            let b = node
                .schema
                .parse_property_string(fmt, &value, "boot", None)?;
            if let Some(order) = b.get("order") {
                let devs = formats::split_list(order);
                for dev in &devs {
                    let exists = conf.main.contains_key(dev)
                        || conf.pending.contains_key(dev)
                        || params.contains_key(dev);
                    if !exists || delete.contains(dev) {
                        return Err(ApiError::Fail(format!(
                            "invalid bootorder: device '{dev}' does not exist'\n"
                        )));
                    }
                }
                value = format!("order={}", devs.join(";"));
                if conf.main.contains_key("bootdisk") {
                    pending_del.insert("bootdisk".into(), false);
                }
            }
            conf.pending.insert(opt.clone(), value);
        } else {
            conf.pending.insert(opt.clone(), value);
        }
        pending_del.remove(opt);
    }
    conf.set_pending_delete(&pending_del);
    conf.cleanup_pending();
    if !conf.pending.is_empty() {
        if node.running_pid(vmid).is_some() {
            // Hotplug: only the options a running VM takes at once.
            let keys: Vec<String> = conf.pending.keys().cloned().collect();
            for k in keys {
                if FAST_PLUG.contains(&k.as_str()) || indexed(&k, "ipconfig") {
                    if let Some(v) = conf.pending.remove(&k) {
                        conf.main.insert(k, v);
                    }
                }
            }
            let mut del = conf.pending_delete();
            let fast: Vec<String> = del
                .keys()
                .filter(|k| FAST_PLUG.contains(&k.as_str()) || indexed(k, "ipconfig"))
                .cloned()
                .collect();
            for k in fast {
                del.remove(&k);
                conf.main.remove(&k);
            }
            conf.set_pending_delete(&del);
        } else {
            apply_pending_stopped(node, vmid, &mut conf);
        }
    }
    node.write_config(vmid, &conf)?;
    Ok(())
}

/// `vmconfig_apply_pending` for a stopped VM: detached disks become `unusedN`
/// (cloud-init volumes are removed), replaced disks too.
fn apply_pending_stopped(node: &Node, vmid: u32, conf: &mut VmConf) {
    let del = conf.pending_delete();
    let mut unused: Vec<String> = Vec::new();
    for (k, force) in &del {
        if formats::is_valid_drivename(k) {
            if let Some(old) = conf.main.get(k).cloned() {
                if let Some(d) = node.parse_drive(k, &old) {
                    let file = d.get("file").cloned().unwrap_or_default();
                    let cdrom = d.get("media").map(String::as_str) == Some("cdrom");
                    if Node::is_cloudinit_volume(&file) || *force {
                        if let Ok(vol) = node.storage.parse(&file) {
                            if vol.owner == vmid {
                                let _ = node.storage.free(&vol);
                            }
                        }
                    } else if !cdrom && file != "none" {
                        unused.push(file);
                    }
                }
            }
        }
    }
    for (k, newv) in conf.pending.clone() {
        if !formats::is_valid_drivename(&k) {
            continue;
        }
        let (Some(old), Some(nd)) = (
            conf.main.get(&k).and_then(|o| node.parse_drive(&k, o)),
            node.parse_drive(&k, &newv),
        ) else {
            continue;
        };
        let (of, nf) = (
            old.get("file").cloned().unwrap_or_default(),
            nd.get("file").cloned().unwrap_or_default(),
        );
        if of != nf && old.get("media").map(String::as_str) != Some("cdrom") && of != "none" {
            if Node::is_cloudinit_volume(&of) {
                if let Ok(vol) = node.storage.parse(&of) {
                    let _ = node.storage.free(&vol);
                }
            } else {
                unused.push(of);
            }
        }
    }
    conf.apply_pending();
    for file in unused {
        if conf
            .main
            .values()
            .any(|v| v.split(',').next() == Some(file.as_str()))
        {
            continue;
        }
        if let Some(n) = (0..256).find(|n| !conf.main.contains_key(&format!("unused{n}"))) {
            conf.main.insert(format!("unused{n}"), file);
        }
    }
}

// -------------------------------------------------------------------------
// Resize.

pub fn resize(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    let digest = p.str("digest");
    let disk = p.str("disk").unwrap_or_default();
    let sizestr = p.str("size").unwrap_or_default();
    let skiplock = p.flag("skiplock");
    root_only(caller, p, &["skiplock"])?;
    let n = node.clone();
    let c = caller.clone();
    let delay = node.faults.task_duration("resize");
    let upid = node
        .tasks
        .fork_worker(
            "resize",
            &vmid.to_string(),
            &caller.tokenid,
            delay,
            move |ctx| async move {
                let _g = n.locks.lock(vmid, n.lock_wait(), false, Some(&ctx)).await?;
                let mut conf = n.load_config(vmid).map_err(|e| e.message())?;
                if let Some(d) = digest.filter(|d| !d.is_empty()) {
                    if d != conf.digest {
                        return Err("checksum mismatch (file change by other user?)\n".into());
                    }
                }
                if !skiplock {
                    conf.check_lock()?;
                }
                let Some(val) = conf.main.get(&disk).cloned() else {
                    return Err(format!("disk '{disk}' does not exist\n"));
                };
                let mut d = n
                    .parse_drive(&disk, &val)
                    .ok_or(format!("unable to parse value of '{disk}'\n"))?;
                let volid = d.get("file").cloned().unwrap_or_default();
                if volid.is_empty() {
                    return Err(format!("disk '{disk}' has no associated volume\n"));
                }
                if d.get("media").map(String::as_str) == Some("cdrom") {
                    return Err("you can't resize a cdrom\n".into());
                }
                let (sid, _) = formats::split_volume_id(&volid).unwrap_or((STORAGE_ID, ""));
                c.check(&format!("/storage/{sid}"), &["Datastore.AllocateSpace"])
                    .map_err(|w| format!("Permission check failed ({w})\n"))?;
                let vol = n.storage.parse(&volid)?;
                let size = n.storage.size(&vol.path).await.map_err(|_| {
                    format!("Could not determine current size of volume '{volid}'\n")
                })?;
                let (plus, num) = match sizestr.strip_prefix('+') {
                    Some(s) => (true, s),
                    None => (false, sizestr.as_str()),
                };
                let (digits, unit) = match num.chars().last() {
                    Some(u @ ('K' | 'M' | 'G' | 'T')) => (&num[..num.len() - 1], Some(u)),
                    _ => (num, None),
                };
                let mut newsize: f64 =
                    digits.parse().map_err(|_| "internal error\n".to_string())?;
                newsize *= match unit {
                    Some('K') => 1024.0,
                    Some('M') => 1024.0 * 1024.0,
                    Some('G') => 1024.0 * 1024.0 * 1024.0,
                    Some('T') => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                    _ => 1.0,
                };
                if plus {
                    newsize += size as f64;
                }
                let newsize = newsize as u64;
                if newsize < size {
                    return Err("shrinking disks is not supported\n".into());
                }
                if newsize == size {
                    return Ok(());
                }
                ctx.simulated_work().await;
                if n.running_pid(vmid).is_some() {
                    let qmp = n.run_paths(vmid).qmp;
                    crate::node::qemu::qmp(
                        &qmp,
                        "block_resize",
                        Some(json!({"device": format!("drive-{disk}"), "size": newsize})),
                    )
                    .await
                    .map_err(|e| format!("VM {vmid} qmp command 'block_resize' failed - {e}\n"))?;
                } else {
                    n.storage.resize(&vol, newsize).await?;
                }
                d.insert("size".into(), newsize.to_string());
                conf.main.insert(disk.clone(), n.print_drive(&disk, &d)?);
                n.write_config(vmid, &conf).map_err(|e| e.message())?;
                Ok(())
            },
        )
        .map_err(|e| ApiError::Fail(format!("unable to fork worker - {e}\n")))?;
    Reply::data(json!(upid))
}

// -------------------------------------------------------------------------
// Power.

fn fork(
    node: &Arc<Node>,
    ty: &str,
    vmid: u32,
    caller: &Caller,
    f: impl FnOnce(Arc<Node>, crate::node::tasks::TaskCtx) -> futures_like::BoxFut + Send + 'static,
) -> Result<Reply, ApiError> {
    let n = node.clone();
    let delay = node.faults.task_duration(ty);
    let upid = node
        .tasks
        .fork_worker(ty, &vmid.to_string(), &caller.tokenid, delay, move |ctx| {
            f(n, ctx)
        })
        .map_err(|e| ApiError::Fail(format!("unable to fork worker - {e}\n")))?;
    Reply::data(json!(upid))
}

mod futures_like {
    pub type BoxFut =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

pub fn start(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    root_only(
        caller,
        p,
        &[
            "stateuri",
            "skiplock",
            "migratedfrom",
            "migration_type",
            "migration_network",
            "targetstorage",
            "force-cpu",
            "with-conntrack-state",
            "nets-host-mtu",
        ],
    )?;
    if p.has("targetstorage") && !p.has("migratedfrom") {
        return Err(ApiError::param(
            "targetstorage",
            "targetstorage can only by used with migratedfrom.",
        ));
    }
    let skiplock = p.flag("skiplock");
    fork(node, "qmstart", vmid, caller, move |n, ctx| {
        Box::pin(async move { n.vm_start(vmid, &ctx, skiplock).await })
    })
}

pub fn stop(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    root_only(caller, p, &["skiplock", "keepActive", "migratedfrom"])?;
    let skiplock = p.flag("skiplock");
    let timeout = p.u64("timeout");
    let overrule = p.flag("overrule-shutdown");
    fork(node, "qmstop", vmid, caller, move |n, ctx| {
        Box::pin(async move {
            if overrule {
                let killed = n.tasks.abort_matching("qmshutdown", &vmid.to_string());
                if !killed.is_empty() {
                    ctx.log(&format!(
                        "overruled qmshutdown tasks: {}",
                        killed.join(", ")
                    ));
                }
            }
            n.vm_stop(vmid, &ctx, skiplock, timeout, false, Some(true))
                .await
        })
    })
}

pub fn shutdown(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    root_only(caller, p, &["skiplock", "keepActive"])?;
    let skiplock = p.flag("skiplock");
    let timeout = p.u64("timeout");
    let force = p.flag("forceStop");
    fork(node, "qmshutdown", vmid, caller, move |n, ctx| {
        Box::pin(async move {
            n.vm_stop(vmid, &ctx, skiplock, timeout, true, Some(force))
                .await
        })
    })
}

pub fn reboot(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    if node.check_running(vmid)?.is_none() {
        return Err(ApiError::Fail(format!("VM {vmid} not running\n")));
    }
    let timeout = p.u64("timeout");
    fork(node, "qmreboot", vmid, caller, move |n, ctx| {
        Box::pin(async move { n.vm_reboot(vmid, &ctx, timeout).await })
    })
}

// -------------------------------------------------------------------------
// Destroy.

fn destroy_early_checks(node: &Node, vmid: u32) -> Result<VmConf, ApiError> {
    let conf = node.load_config(vmid)?;
    if conf.get("protection") == Some("1") {
        return Err(ApiError::Fail(format!(
            "can't remove VM {vmid} - protection mode enabled\n"
        )));
    }
    if node.running_pid(vmid).is_some() {
        return Err(ApiError::Fail(format!(
            "VM {vmid} is running - destroy failed\n"
        )));
    }
    Ok(conf)
}

pub fn destroy(node: &Arc<Node>, caller: &Caller, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    root_only(caller, p, &["skiplock"])?;
    let skiplock = p.flag("skiplock");
    let purge = p.flag("purge");
    let unreferenced = p.flag("destroy-unreferenced-disks");
    destroy_early_checks(node, vmid)?;
    fork(node, "qmdestroy", vmid, caller, move |n, ctx| {
        Box::pin(async move {
            let _g = n.locks.lock(vmid, n.lock_wait(), false, Some(&ctx)).await?;
            let conf = destroy_early_checks(&n, vmid).map_err(|e| e.message())?;
            if !skiplock && conf.lock() != Some("suspended") {
                conf.check_lock()?;
            }
            if conf.is_template() {
                for (k, v) in &conf.main {
                    if !formats::is_valid_drivename(k) {
                        continue;
                    }
                    let Some(d) = n.parse_drive(k, v) else {
                        continue;
                    };
                    let file = d.get("file").cloned().unwrap_or_default();
                    if d.get("media").map(String::as_str) == Some("cdrom") {
                        continue;
                    }
                    if let Ok(vol) = n.storage.parse(&file) {
                        let prefix = format!("{STORAGE_ID}:{}/{}/", vol.owner, vol.name);
                        let used = n.vmids().into_iter().filter(|id| *id != vmid).any(|id| {
                            n.load_config(id)
                                .map(|c| {
                                    c.main
                                        .values()
                                        .chain(c.pending.values())
                                        .any(|v| v.starts_with(&prefix))
                                })
                                .unwrap_or(false)
                        });
                        if used {
                            return Err(format!(
                                "base volume '{file}' is still in use by linked cloned\n"
                            ));
                        }
                    }
                }
            }
            // Volumes the config references (incl. unused and pending ones).
            for (k, v) in conf.main.iter().chain(conf.pending.iter()) {
                if !(formats::is_valid_drivename(k) || indexed(k, "unused")) {
                    continue;
                }
                let file = if indexed(k, "unused") {
                    v.split(',').next().unwrap_or("").to_string()
                } else {
                    match n.parse_drive(k, v) {
                        Some(d) => {
                            let cdrom = d.get("media").map(String::as_str) == Some("cdrom");
                            let f = d.get("file").cloned().unwrap_or_default();
                            if cdrom && !Node::is_cloudinit_volume(&f) {
                                continue;
                            }
                            f
                        }
                        None => continue,
                    }
                };
                if let Ok(vol) = n.storage.parse(&file) {
                    if vol.owner == vmid {
                        if let Err(e) = n.storage.free(&vol) {
                            ctx.warn(&format!(
                                "Could not remove disk '{file}', check manually: {e}"
                            ));
                        }
                    }
                }
            }
            if unreferenced {
                for f in n.storage.vm_image_files(vmid) {
                    if let Err(e) = std::fs::remove_file(&f) {
                        ctx.warn(&format!("{}: {e}", f.display()));
                    }
                }
            }
            // The zombie config PVE keeps until the very end.
            n.write_raw_config(vmid, "lock: destroyed\n")
                .map_err(|e| e.message())?;
            ctx.simulated_work().await;
            if purge {
                ctx.log(&format!("purging VM {vmid} from related configurations.."));
            }
            n.storage.remove_vm_dir_if_empty(vmid);
            let paths = n.run_paths(vmid);
            for f in [
                paths.stderr.clone(),
                paths.serial_log(0),
                paths.serial_log(1),
                paths.serial_log(2),
                paths.serial_log(3),
            ] {
                let _ = std::fs::remove_file(f);
            }
            let _ = std::fs::remove_dir_all(n.run_dir.join("cloudinit").join(vmid.to_string()));
            n.remove_config(vmid);
            Ok(())
        })
    })
}

pub fn rrddata(node: &Arc<Node>, p: &Params<'_>) -> Result<Reply, ApiError> {
    let vmid = p.vmid("vmid")?;
    let tf = p.str("timeframe").unwrap_or_else(|| "hour".into());
    let cf_max = p.str("cf").as_deref() == Some("MAX");
    if !node.has_rrd(vmid) {
        return Err(ApiError::Fail(format!(
            "RRD error: opening '/var/lib/rrdcached/db/pve-vm-9.0/{vmid}': No such file or directory\n"
        )));
    }
    Reply::data(Value::Array(node.rrddata(vmid, &tf, cf_max)))
}

/// The cloud-init files a start would produce now (for tests and debugging).
pub fn cloudinit_preview(node: &Node, vmid: u32) -> Result<Vec<(String, Vec<u8>)>, String> {
    let conf = node.load_config(vmid).map_err(|e| e.message())?;
    let dns = cloudinit::DnsDefaults {
        nameservers: &node.cfg.host_nameservers,
        searchdomain: node.cfg.host_searchdomain.as_deref(),
    };
    Ok(cloudinit::generate(node.schema, &node.storage, &conf.view(false), vmid, &dns)?.files)
}
