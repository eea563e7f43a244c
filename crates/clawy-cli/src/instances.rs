//! `clawy instances list|create|show|start|stop|reboot|delete`.
//!
//! The instance JSON is printed as the server sent it (`--json`); tables read the
//! fields every instance carries (`id`, `name`, `state`, `private_ip`, `ssh_port`,
//! `health`). `--wait` polls `GET /instances/{id}` until the wanted state, `error`
//! (exit 1 with the reason) or `--timeout` (exit 7).

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, ClientError, seg};
use crate::exit::{CmdError, CmdResult, Exit};
use crate::output;

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until the operation has finished (progress on stderr).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: also wait until the gateway answers its health probe.
    #[arg(long, requires = "wait")]
    pub healthy: bool,
    /// With --wait: give up after this many seconds (exit 7).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// With --wait: seconds between polls (fractions allowed).
    #[arg(long, default_value_t = 0.5, value_name = "SECS", hide = true)]
    pub poll_interval: f64,
}

#[derive(Subcommand, Debug)]
pub enum InstancesCommand {
    /// List your instances.
    List,
    /// Create an instance (a VM running the OpenClaw gateway).
    Create {
        /// A DNS label: lowercase letters, digits and '-', unique among your instances.
        name: String,
        /// Plan (size); the operator's default when left out. See GET /api/v1/plans.
        #[arg(long)]
        plan: Option<String>,
        /// Region (country code); the operator's default when left out.
        #[arg(long)]
        region: Option<String>,
        /// SSH key (id or name) to install; repeat for several.
        #[arg(long = "ssh-key", value_name = "ID|NAME")]
        ssh_keys: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show one instance by id or name.
    Show { instance: String },
    /// Start a stopped instance.
    Start {
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a running instance (its disk is kept).
    Stop {
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reboot a running instance.
    Reboot {
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Re-queue the failed job of an instance in state `error`.
    Retry {
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// What happened to an instance, newest first: who did what, and the
    /// platform's own actions (ACCESS-3).
    Events {
        instance: String,
        /// How many events.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete an instance and its disk. Asks for the name unless --yes.
    Delete {
        instance: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

pub async fn run(client: &Client, cmd: InstancesCommand, json: bool) -> CmdResult {
    match cmd {
        InstancesCommand::List => {
            let v = client.get::<Value>("instances").await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let list = instance_array(&v);
            if list.is_empty() {
                println!("No instances yet. Create one with `clawy instances create NAME --wait`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    vec![
                        output::field(i, "id"),
                        output::field(i, "name"),
                        output::field(i, "state"),
                        output::field(i, "plan"),
                        output::field(i, "region"),
                        output::field(i, "private_ip"),
                        output::field(i, "ssh_port"),
                        health_text(i),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "ID", "NAME", "STATE", "PLAN", "REGION", "IP", "SSH PORT", "HEALTH"
                    ],
                    &rows
                )
            );
        }
        InstancesCommand::Create {
            name,
            plan,
            region,
            ssh_keys,
            wait,
        } => {
            let mut ids = Vec::new();
            for k in &ssh_keys {
                ids.push(crate::ssh_keys::find(client, k).await?.id);
            }
            let body = clawy_proto::api::CreateInstance {
                name: name.clone(),
                plan,
                region,
                ssh_key_ids: ids,
            };
            let created: Value = client.post("instances", &body).await?;
            let inst = unwrap_instance(created);
            let id = output::field(&inst, "id");
            if !wait.wait {
                return print_instance(&inst, json, "Creating");
            }
            if !json {
                eprintln!("Creating instance {name} ({id})…");
            }
            let done = wait_for(client, &id, Target::State("running"), &wait).await?;
            print_instance(&done, json, "Ready")?;
        }
        InstancesCommand::Show { instance } => {
            let inst = resolve(client, &instance).await?;
            if json {
                output::json(&inst);
            } else {
                print!("{}", describe(&inst));
            }
        }
        InstancesCommand::Start { instance, wait } => {
            action(
                client,
                &instance,
                "start",
                Target::State("running"),
                &wait,
                json,
            )
            .await?;
        }
        InstancesCommand::Stop { instance, wait } => {
            action(
                client,
                &instance,
                "stop",
                Target::State("stopped"),
                &wait,
                json,
            )
            .await?;
        }
        InstancesCommand::Reboot { instance, wait } => {
            action(
                client,
                &instance,
                "reboot",
                Target::State("running"),
                &wait,
                json,
            )
            .await?;
        }
        InstancesCommand::Retry { instance, wait } => {
            // `running` or `stopped`, whichever the owner asked for last.
            let inst = resolve(client, &instance).await?;
            let target = if inst.get("desired_power").and_then(Value::as_str) == Some("stopped") {
                Target::State("stopped")
            } else {
                Target::State("running")
            };
            action(client, &instance, "retry", target, &wait, json).await?;
        }
        InstancesCommand::Events { instance, limit } => {
            let inst = resolve(client, &instance).await?;
            let id = output::field(&inst, "id");
            let v = client
                .get::<Value>(&format!("instances/{}/events?limit={limit}", seg(&id)))
                .await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .get("events")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            vec![
                                output::field(e, "at"),
                                output::field(e, "kind"),
                                output::field(e, "actor"),
                                output::field(e, "detail"),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", output::table(&["AT", "EVENT", "BY", "DETAIL"], &rows));
        }
        InstancesCommand::Delete {
            instance,
            yes,
            wait,
        } => {
            let inst = resolve(client, &instance).await?;
            let id = output::field(&inst, "id");
            let name = output::field(&inst, "name");
            if !yes {
                confirm_delete(&name)?;
            }
            let v = client.delete(&format!("instances/{}", seg(&id))).await?;
            if wait.wait {
                wait_for(client, &id, Target::Gone, &wait).await?;
                if json {
                    output::json(&json!({"id": id, "state": "deleted"}));
                } else {
                    println!("Deleted instance {name} ({id}).");
                }
            } else if json {
                output::json(&v);
            } else {
                println!("Deleting instance {name} ({id}).");
            }
        }
    }
    Ok(())
}

async fn action(
    client: &Client,
    instance: &str,
    verb: &str,
    target: Target,
    wait: &WaitArgs,
    json: bool,
) -> CmdResult {
    let inst = resolve(client, instance).await?;
    let id = output::field(&inst, "id");
    let v = client
        .post_empty(&format!("instances/{}/{verb}", seg(&id)))
        .await?;
    if !wait.wait {
        if json {
            output::json(&v);
        } else {
            println!(
                "{verb} requested for {} ({id}).",
                output::field(&inst, "name")
            );
        }
        return Ok(());
    }
    // A reboot ends in `running`, which the instance usually already is: for it
    // `--wait` only confirms the instance is (still) running afterwards.
    let done = wait_for(client, &id, target, wait).await?;
    print_instance(&done, json, "Done")
}

/// An instance of the caller by id or name. Names are unique per user (the server
/// enforces it), so a name never matches two instances.
pub async fn resolve(client: &Client, id_or_name: &str) -> Result<Value, CmdError> {
    if looks_like_uuid(id_or_name) {
        match client
            .get::<Value>(&format!("instances/{}", seg(id_or_name)))
            .await
        {
            Ok(v) => return Ok(unwrap_instance(v)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let v = client.get::<Value>("instances").await?;
    instance_array(&v)
        .into_iter()
        .find(|i| {
            i.get("name").and_then(Value::as_str) == Some(id_or_name)
                || i.get("id").and_then(Value::as_str) == Some(id_or_name)
        })
        .ok_or_else(|| {
            CmdError::new(
                Exit::NotFound,
                format!("no instance with the id or name `{id_or_name}`"),
            )
        })
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// `GET /instances` answers `{"instances":[…]}` (plus paging fields); accept a bare
/// array too.
pub fn instance_array(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .get("instances")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A single instance may come bare or wrapped as `{"instance":{…}}`.
fn unwrap_instance(v: Value) -> Value {
    match v {
        Value::Object(mut o) if o.contains_key("instance") && !o.contains_key("id") => {
            o.remove("instance").unwrap_or(Value::Null)
        }
        other => other,
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    State(&'static str),
    Gone,
}

/// Whether the instance's health says the gateway answers. Accepts the shapes
/// `{"status":"healthy"}`, `{"gateway":{"tcp_ok":true,…}}`, `{"gateway":"ok"}`,
/// `{"healthy":true}` and a bare string.
pub fn is_healthy(inst: &Value) -> bool {
    let Some(h) = inst.get("health") else {
        return false;
    };
    let good = |s: &str| matches!(s, "healthy" | "ok" | "up" | "pass" | "passing");
    match h {
        Value::String(s) => good(s),
        Value::Bool(b) => *b,
        Value::Object(o) => {
            if let Some(Value::String(s)) = o.get("status") {
                return good(s);
            }
            if let Some(Value::Bool(b)) = o.get("healthy") {
                return *b;
            }
            match o.get("gateway") {
                Some(Value::String(s)) => good(s),
                Some(Value::Bool(b)) => *b,
                Some(Value::Object(g)) => {
                    g.get("tcp_ok").and_then(Value::as_bool) == Some(true)
                        || g.get("status").and_then(Value::as_str).is_some_and(good)
                        || g.get("ok").and_then(Value::as_bool) == Some(true)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn health_text(inst: &Value) -> String {
    match inst.get("health") {
        None | Some(Value::Null) => "-".into(),
        Some(_) if is_healthy(inst) => "healthy".into(),
        Some(Value::Object(o)) => o
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("not yet")
            .to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => "not yet".into(),
    }
}

/// Polls until the target, `error`, or the timeout. Progress goes to stderr: a
/// spinner line on a terminal, one line per state change otherwise.
async fn wait_for(
    client: &Client,
    id: &str,
    target: Target,
    args: &WaitArgs,
) -> Result<Value, CmdError> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout);
    let interval = Duration::from_secs_f64(args.poll_interval.clamp(0.05, 60.0));
    let tty = std::io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut last_shown = String::new();
    loop {
        let got = client.get::<Value>(&format!("instances/{}", seg(id))).await;
        let inst = match got {
            Ok(v) => Some(unwrap_instance(v)),
            Err(ClientError::Api { status: 404, .. }) if matches!(target, Target::Gone) => None,
            Err(e) => {
                clear_line(tty);
                return Err(e.into());
            }
        };
        let state = inst
            .as_ref()
            .map(|i| output::field(i, "state"))
            .unwrap_or_else(|| "deleted".into());
        let healthy = inst.as_ref().is_some_and(is_healthy);
        let reached = match target {
            Target::Gone => state == "deleted",
            Target::State(s) => state == s && (!args.healthy || healthy),
        };
        if reached {
            clear_line(tty);
            return Ok(inst.unwrap_or_else(|| json!({"id": id, "state": "deleted"})));
        }
        if state == "error" {
            clear_line(tty);
            let reason = inst
                .as_ref()
                .and_then(|i| i.get("error_reason").and_then(Value::as_str))
                .unwrap_or("no reason given");
            return Err(CmdError::new(
                Exit::Failed,
                format!(
                    "instance {id} is in state error: {reason} (try again with `clawy instances retry {id}`)"
                ),
            ));
        }
        let shown = if matches!(target, Target::State("running")) && state == "running" {
            "running, waiting for the gateway".to_string()
        } else {
            state.clone()
        };
        if !tty && shown != last_shown {
            eprintln!("{id}: {shown} ({}s)", start.elapsed().as_secs());
        }
        last_shown = shown.clone();
        if Instant::now() >= deadline {
            clear_line(tty);
            return Err(CmdError::new(
                Exit::Timeout,
                format!(
                    "gave up after {}s; instance {id} is {shown} (it may still finish)",
                    args.timeout
                ),
            ));
        }
        // Redraw the spinner every 100 ms until the next poll.
        let next = Instant::now() + interval;
        loop {
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} {shown} ({}s)",
                    frames[tick % frames.len()],
                    start.elapsed().as_secs()
                );
                let _ = err.flush();
                tick += 1;
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            tokio::time::sleep((next - now).min(Duration::from_millis(100))).await;
        }
    }
}

fn clear_line(tty: bool) {
    if tty {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

fn confirm_delete(name: &str) -> CmdResult {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CmdError::new(
            Exit::Usage,
            "refusing to delete without confirmation: pass --yes (stdin is not a terminal)",
        ));
    }
    eprint!("This deletes instance {name} and its disk. Type its name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim() != name {
        return Err(CmdError::new(Exit::Usage, "not confirmed; nothing deleted"));
    }
    Ok(())
}

fn print_instance(inst: &Value, json: bool, verb: &str) -> CmdResult {
    if json {
        output::json(inst);
    } else {
        println!("{verb}: {}", output::field(inst, "name"));
        print!("{}", describe(inst));
    }
    Ok(())
}

/// The detail view of `clawy instances show`.
pub fn describe(inst: &Value) -> String {
    let mut pairs = vec![
        ("id", output::field(inst, "id")),
        ("name", output::field(inst, "name")),
        ("state", output::field(inst, "state")),
        ("plan", output::field(inst, "plan")),
        ("region", output::field(inst, "region")),
        ("private ip", output::field(inst, "private_ip")),
        ("ssh port", output::field(inst, "ssh_port")),
        ("health", health_text(inst)),
        ("created", output::field(inst, "created_at")),
    ];
    if let Some(cmd) = inst.get("ssh_command").and_then(Value::as_str) {
        pairs.push(("ssh", cmd.to_string()));
    }
    for (label, key) in [
        ("error", "error_reason"),
        ("last contact", "last_contact_at"),
    ] {
        if inst.get(key).is_some_and(|v| !v.is_null()) {
            pairs.push((label, output::field(inst, key)));
        }
    }
    output::details(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_shapes() {
        assert!(is_healthy(
            &json!({"health": {"gateway": {"tcp_ok": true, "http_status": 200}}})
        ));
        assert!(!is_healthy(
            &json!({"health": {"gateway": {"tcp_ok": false}}})
        ));
        assert!(is_healthy(&json!({"health": {"status": "healthy"}})));
        assert!(!is_healthy(&json!({"health": {"status": "unknown"}})));
        assert!(is_healthy(&json!({"health": "ok"})));
        assert!(!is_healthy(&json!({"health": null})));
        assert!(!is_healthy(&json!({})));
    }

    #[test]
    fn list_shapes() {
        assert_eq!(
            instance_array(&json!({"instances": [{"id": "a"}]})).len(),
            1
        );
        assert_eq!(instance_array(&json!([{"id": "a"}, {"id": "b"}])).len(), 2);
        assert_eq!(unwrap_instance(json!({"instance": {"id": "a"}}))["id"], "a");
        assert_eq!(unwrap_instance(json!({"id": "a"}))["id"], "a");
        assert!(looks_like_uuid("0b0e8a36-8c52-4b47-9a43-4c3bb6a9c7de"));
        assert!(!looks_like_uuid("web-1"));
    }
}
