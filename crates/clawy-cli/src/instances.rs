//! `clawy instances list|create|show|start|stop|reboot|delete`.
//!
//! The instance JSON is printed as the server sent it (`--json`); tables and waiting
//! read it as the API's own types (`clawy_proto::api::Instance`, `InstanceList`,
//! `AuditPage`), so a field the server does not send cannot be read by mistake.
//! `--wait` polls `GET /instances/{id}` until the wanted state, `error` (exit 1 with
//! the reason) or `--timeout` (exit 7).

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use clawy_proto::api::{AuditPage, Instance, InstanceList, InstanceState};
use serde_json::{Value, json};

use crate::client::{Client, ClientError, decode, seg};
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
        /// File holding the Telegram bot token for OpenClaw (`-`: standard input).
        /// Never a command-line value: other users of the machine can read argv.
        #[arg(long, value_name = "PATH|-")]
        telegram_bot_token_file: Option<std::path::PathBuf>,
        /// Model provider of --model-key-file: anthropic, openai or openrouter.
        #[arg(long, value_name = "PROVIDER")]
        model_provider: Option<String>,
        /// File holding the model provider's API key (`-`: standard input).
        #[arg(long, value_name = "PATH|-")]
        model_key_file: Option<std::path::PathBuf>,
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
            let list: InstanceList = decode(v)?;
            if list.instances.is_empty() {
                println!("No instances yet. Create one with `clawy instances create NAME --wait`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .instances
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.name.clone(),
                        i.state.as_str().to_string(),
                        i.plan.clone(),
                        i.region.clone(),
                        output::opt(&i.private_ip),
                        output::opt(&i.ssh_port),
                        health_text(i).to_string(),
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
            telegram_bot_token_file,
            model_provider,
            model_key_file,
            wait,
        } => {
            if telegram_bot_token_file.as_deref() == Some(std::path::Path::new("-"))
                && model_key_file.as_deref() == Some(std::path::Path::new("-"))
            {
                return Err(CmdError::new(
                    Exit::Usage,
                    "only one of --telegram-bot-token-file and --model-key-file can be `-` (standard input)",
                ));
            }
            let telegram_bot_token = telegram_bot_token_file
                .as_deref()
                .map(read_secret)
                .transpose()?;
            let model_key = model_key_file.as_deref().map(read_secret).transpose()?;
            let mut ids = Vec::new();
            for k in &ssh_keys {
                ids.push(crate::ssh_keys::find(client, k).await?.id);
            }
            let body = clawy_proto::api::CreateInstance {
                name: name.clone(),
                plan,
                region,
                ssh_key_ids: ids,
                telegram_bot_token,
                model_provider,
                model_key,
            };
            let created: Value = client.post("instances", &body).await?;
            let inst: Instance = decode(created.clone())?;
            if !wait.wait {
                return print_instance(&created, &inst, json, "Creating");
            }
            if !json && let Some(t) = &inst.gateway_token {
                // DATA-5: shown once, before waiting (the later answers hold no token).
                println!("gateway token (shown once, copy it now): {t}");
            }
            if !json {
                eprintln!("Creating instance {name} ({})…", inst.id);
            }
            let (raw, done) = wait_for(
                client,
                &inst.id,
                Target::State(InstanceState::Running),
                &wait,
            )
            .await?;
            let mut raw = raw;
            if json && let (Some(t), Some(obj)) = (&inst.gateway_token, raw.as_object_mut()) {
                // DATA-5: the one answer that had it is the create's; keep it in the
                // one JSON document printed.
                obj.insert("gateway_token".into(), Value::String(t.clone()));
            }
            print_instance(&raw, &done, json, "Ready")?;
        }
        InstancesCommand::Show { instance } => {
            let (raw, inst) = resolve(client, &instance).await?;
            if json {
                output::json(&raw);
            } else {
                print!("{}", describe(&inst));
            }
        }
        InstancesCommand::Start { instance, wait } => {
            action(
                client,
                &instance,
                "start",
                Target::State(InstanceState::Running),
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
                Target::State(InstanceState::Stopped),
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
                Target::State(InstanceState::Running),
                &wait,
                json,
            )
            .await?;
        }
        InstancesCommand::Retry { instance, wait } => {
            // `running` or `stopped`, whichever the owner asked for last.
            let (_, inst) = resolve(client, &instance).await?;
            let target = if inst.desired_power == "stopped" {
                Target::State(InstanceState::Stopped)
            } else {
                Target::State(InstanceState::Running)
            };
            action(client, &instance, "retry", target, &wait, json).await?;
        }
        InstancesCommand::Events { instance, limit } => {
            let (_, inst) = resolve(client, &instance).await?;
            let v = client
                .get::<Value>(&format!("instances/{}/events?limit={limit}", seg(&inst.id)))
                .await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let page: AuditPage = decode(v)?;
            let rows: Vec<Vec<String>> = page
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.at.to_rfc3339(),
                        e.kind.clone(),
                        e.actor.clone(),
                        e.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["AT", "EVENT", "BY", "DETAIL"], &rows));
        }
        InstancesCommand::Delete {
            instance,
            yes,
            wait,
        } => {
            let (_, inst) = resolve(client, &instance).await?;
            let (id, name) = (inst.id, inst.name);
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
    let (_, inst) = resolve(client, instance).await?;
    let id = &inst.id;
    let v = client
        .post_empty(&format!("instances/{}/{verb}", seg(id)))
        .await?;
    if !wait.wait {
        if json {
            output::json(&v);
        } else {
            println!("{verb} requested for {} ({id}).", inst.name);
        }
        return Ok(());
    }
    // A reboot ends in `running`, which the instance usually already is: for it
    // `--wait` only confirms the instance is (still) running afterwards.
    let (raw, done) = wait_for(client, id, target, wait).await?;
    print_instance(&raw, &done, json, "Done")
}

/// An instance of the caller by id or name, as the server sent it and typed. Names
/// are unique per user (the server enforces it), so a name never matches two.
pub async fn resolve(client: &Client, id_or_name: &str) -> Result<(Value, Instance), CmdError> {
    if looks_like_uuid(id_or_name) {
        match client
            .get::<Value>(&format!("instances/{}", seg(id_or_name)))
            .await
        {
            Ok(v) => {
                let inst = decode(v.clone())?;
                return Ok((v, inst));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let v = client.get::<Value>("instances").await?;
    let raw: Vec<Value> = v
        .get("instances")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list: InstanceList = decode(v)?;
    list.instances
        .into_iter()
        .zip(raw)
        .find(|(i, _)| i.name == id_or_name || i.id == id_or_name)
        .map(|(i, raw)| (raw, i))
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

#[derive(Debug, Clone, Copy)]
enum Target {
    State(InstanceState),
    Gone,
}

/// The gateway answered its last health probe.
pub fn is_healthy(inst: &Instance) -> bool {
    inst.health.gateway == "ok"
}

/// The health column: `healthy`, `down` (probed, no answer) or `unknown` (not probed
/// yet, or the host is unreachable) — the API's `health.gateway` in words.
fn health_text(inst: &Instance) -> &str {
    match inst.health.gateway.as_str() {
        "ok" => "healthy",
        other => other,
    }
}

/// Polls until the target, `error`, or the timeout. Progress goes to stderr: a
/// spinner line on a terminal, one line per state change otherwise.
async fn wait_for(
    client: &Client,
    id: &str,
    target: Target,
    args: &WaitArgs,
) -> Result<(Value, Instance), CmdError> {
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
            Ok(v) => {
                let typed: Instance = decode(v.clone())?;
                Some((v, typed))
            }
            Err(ClientError::Api { status: 404, .. }) if matches!(target, Target::Gone) => None,
            Err(e) => {
                clear_line(tty);
                return Err(e.into());
            }
        };
        let state = inst
            .as_ref()
            .map_or(InstanceState::Deleted, |(_, i)| i.state);
        let healthy = inst.as_ref().is_some_and(|(_, i)| is_healthy(i));
        let reached = match target {
            Target::Gone => state == InstanceState::Deleted,
            Target::State(s) => state == s && (!args.healthy || healthy),
        };
        if reached {
            clear_line(tty);
            if let Some(found) = inst {
                return Ok(found);
            }
            let gone = json!({"id": id, "state": "deleted"});
            return Ok((gone, deleted_stub(id)));
        }
        if state == InstanceState::Error {
            clear_line(tty);
            let reason = inst
                .as_ref()
                .and_then(|(_, i)| i.error_reason.as_deref())
                .unwrap_or("no reason given");
            return Err(CmdError::new(
                Exit::Failed,
                format!(
                    "instance {id} is in state error: {reason} (try again with `clawy instances retry {id}`)"
                ),
            ));
        }
        let shown = if matches!(target, Target::State(InstanceState::Running))
            && state == InstanceState::Running
        {
            "running, waiting for the gateway".to_string()
        } else {
            state.as_str().to_string()
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

/// An instance that is gone (for `delete --wait`, which has nothing left to read).
fn deleted_stub(id: &str) -> Instance {
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    Instance {
        id: id.to_string(),
        name: String::new(),
        state: InstanceState::Deleted,
        desired_power: "stopped".to_string(),
        private_ip: None,
        ssh_port: None,
        ssh_command: None,
        gateway_token: None,
        plan: String::new(),
        region: String::new(),
        host_location: None,
        health: clawy_proto::api::InstanceHealth {
            gateway: "unknown".to_string(),
            http_status: None,
            checked_at: None,
            services: Vec::new(),
        },
        last_contact_at: None,
        uptime_secs: None,
        error_reason: None,
        created_at: epoch,
        updated_at: epoch,
        hostname: None,
        https_url: None,
        dns_records: Vec::new(),
    }
}

/// DATA-5: a secret from a file or standard input (`-`), trimmed; never from argv.
fn read_secret(path: &std::path::Path) -> Result<String, CmdError> {
    let text = if path == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut s,
        )
        .map_err(|e| CmdError::new(Exit::Usage, format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CmdError::new(Exit::Usage, format!("cannot read {}: {e}", path.display()))
        })?
    };
    Ok(text.trim().to_string())
}

fn print_instance(raw: &Value, inst: &Instance, json: bool, verb: &str) -> CmdResult {
    if json {
        output::json(raw);
    } else {
        println!("{verb}: {}", inst.name);
        print!("{}", describe(inst));
    }
    Ok(())
}

/// The detail view of `clawy instances show`.
pub fn describe(inst: &Instance) -> String {
    let mut pairs = vec![
        ("id", inst.id.clone()),
        ("name", inst.name.clone()),
        ("state", inst.state.as_str().to_string()),
        ("plan", inst.plan.clone()),
        ("region", inst.region.clone()),
        ("private ip", output::opt(&inst.private_ip)),
        ("ssh port", output::opt(&inst.ssh_port)),
        ("health", health_text(inst).to_string()),
        ("created", inst.created_at.to_rfc3339()),
    ];
    if let Some(cmd) = &inst.ssh_command {
        pairs.push(("ssh", cmd.clone()));
    }
    if let Some(h) = &inst.hostname {
        pairs.push(("hostname", h.clone()));
    }
    if let Some(url) = &inst.https_url {
        pairs.push(("https", url.clone()));
    }
    // ACCESS-1: "DNS records", one line each.
    for r in &inst.dns_records {
        pairs.push((
            "dns record",
            format!("{} {} {} ({})", r.name, r.record_type, r.value, r.status),
        ));
    }
    if let Some(t) = &inst.gateway_token {
        pairs.push(("gateway token (shown once)", t.clone()));
    }
    if let Some(reason) = &inst.error_reason {
        pairs.push(("error", reason.clone()));
    }
    if let Some(at) = inst.last_contact_at {
        pairs.push(("last contact", at.to_rfc3339()));
    }
    output::details(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(gateway: &str) -> Instance {
        let mut i = deleted_stub("0b0e8a36-8c52-4b47-9a43-4c3bb6a9c7de");
        i.state = InstanceState::Running;
        i.health.gateway = gateway.to_string();
        i
    }

    /// Formerly `health_shapes`, which accepted guessed shapes; the CLI now reads
    /// the API's own `health.gateway`, and a gateway that is down says so.
    #[test]
    fn health_shapes() {
        assert!(is_healthy(&instance("ok")));
        assert!(!is_healthy(&instance("down")));
        assert!(!is_healthy(&instance("unknown")));
        assert_eq!(health_text(&instance("ok")), "healthy");
        assert_eq!(health_text(&instance("down")), "down");
        assert_eq!(health_text(&instance("unknown")), "unknown");
    }

    /// Formerly `list_shapes`: the wire types decode what the server sends.
    #[test]
    fn list_shapes() {
        let one = serde_json::to_value(instance("ok")).unwrap_or_default();
        let list: InstanceList =
            decode(json!({"instances": [one.clone()]})).unwrap_or(InstanceList {
                instances: vec![],
                next_after: None,
            });
        assert_eq!(list.instances.len(), 1);
        assert!(describe(&list.instances[0]).contains("healthy"));
        let mut i = instance("ok");
        i.hostname = Some("web-3f2a9c1b.claws.example.com".to_string());
        i.https_url = Some("https://web-3f2a9c1b.claws.example.com/".to_string());
        i.dns_records = vec![clawy_proto::api::DnsRecord {
            name: "web-3f2a9c1b.claws.example.com".to_string(),
            record_type: "A".to_string(),
            value: "192.0.2.10".to_string(),
            status: "published".to_string(),
        }];
        let text = describe(&i);
        assert!(
            text.contains("https://web-3f2a9c1b.claws.example.com/"),
            "{text}"
        );
        assert!(
            text.contains("web-3f2a9c1b.claws.example.com A 192.0.2.10 (published)"),
            "{text}"
        );
        assert!(looks_like_uuid("0b0e8a36-8c52-4b47-9a43-4c3bb6a9c7de"));
        assert!(!looks_like_uuid("web-1"));
    }
}
