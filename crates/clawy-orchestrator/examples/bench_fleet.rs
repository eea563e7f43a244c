//! Fleet-scale benchmark: 10,000 instances on 200 hosts, with FAKE agents.
//!
//! The agents are the in-process fake (`clawy_testkit::fake_agent`), which
//! answers the agent API over HTTPS instantly; it exists for this benchmark only and
//! says nothing about real VM start times (see `scripts/bench-agent.sh` for those).
//! Hosts are registered through the real hosts API; instances are inserted directly
//! (state `running`, a valid allocation each) and the fakes hold matching VMs.
//!
//! Measures:
//! 1. one reconcile pass over all hosts (target ≤ 2 s), in this process;
//! 2. with `--clawy-bin PATH`: a real `clawy server` process on the same database
//!    (its own reconciler every 5 s and poller every 30 s against the fakes):
//!    `GET /api/v1/instances` for a user with 100 instances (p99 ≤ 20 ms), the
//!    operator's paginated `GET /api/v1/admin/instances?limit=100` (p99 ≤ 50 ms),
//!    and the server's RSS after several reconcile/poll cycles (≤ 300 MB).
//!
//! Usage: clawy-bench-fleet [--hosts N] [--instances N] [--clawy-bin PATH]
//!                          [--requests N] [--database-url URL]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_core::config::ServerConfig;
use clawy_core::hosts::RegisterHost;
use clawy_core::{Core, SecretString};
use clawy_orchestrator::clients::AgentClients;
use clawy_orchestrator::leases::HostLeases;
use clawy_orchestrator::{Poller, Reconciler};
use clawy_proto::agent::{PortForward, Protocol, Resources, VmSpec, VmState};
use clawy_testkit::fake_agent::FakeAgent;

const PASSWORD: &str = "Quartz-lantern-47-orbit!";

struct Args {
    hosts: usize,
    instances: usize,
    clawy_bin: Option<String>,
    requests: usize,
    database_url: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        hosts: 200,
        instances: 10_000,
        clawy_bin: None,
        requests: 1000,
        database_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--hosts" => a.hosts = val()?.parse()?,
            "--instances" => a.instances = val()?.parse()?,
            "--clawy-bin" => a.clawy_bin = Some(val()?),
            "--requests" => a.requests = val()?.parse()?,
            "--database-url" => a.database_url = Some(val()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.hosts == 0 || a.hosts > 60_000 || a.instances > a.hosts * 250 {
        bail!("need 1..60000 hosts and at most 250 instances per host");
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn subnet_of(i: usize) -> String {
    format!("10.{}.{}", 100 + i / 256, i % 256)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // `RUST_LOG=clawy_orchestrator=debug` shows each pass's timing breakdown.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = tempfile::Builder::new()
        .prefix("clawy-bench-fleet-")
        .tempdir()?;
    let data_dir = tmp.path().join("data");
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("clawy.db").display()));
    let mut config = ServerConfig::for_tests(&data_dir, &db_url);
    config.instance_quota = 1000;
    config.base_image = "bench".into();
    let core = Arc::new(
        Core::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let clients = Arc::new(AgentClients::new(core.clone(), Duration::from_secs(30)));

    // 1. Fake agents and hosts.
    let t = Instant::now();
    let capacity = Resources {
        vcpus: 256,
        memory_mib: 1024 * 1024,
        disk_gib: 64 * 1024,
    };
    let mut agents = Vec::with_capacity(args.hosts);
    let mut host_ids = Vec::with_capacity(args.hosts);
    for i in 0..args.hosts {
        let agent =
            FakeAgent::start(&format!("DE-f{i}"), capacity, &subnet_of(i), [22000, 22999]).await?;
        let host = core
            .hosts()
            .register(
                &Actor::system(),
                RegisterHost {
                    name: format!("fake-{i}"),
                    url: agent.base_url.clone(),
                    fingerprint: agent.fingerprint.clone(),
                    token: SecretString::from(agent.token.clone()),
                    region: "DE".into(),
                    site: format!("f{i}"),
                    enabled: true,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = clients.for_host(&host.id).await?.host().await?;
        core.hosts()
            .update_info(&host.id, &info)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        host_ids.push(host.id);
        agents.push(agent);
    }
    eprintln!(
        "{} fake agents registered in {:.1} s",
        args.hosts,
        t.elapsed().as_secs_f64()
    );

    // 2. Users (100 instances each) and instances, inserted directly.
    let t = Instant::now();
    let per_user = 100usize;
    let n_users = args.instances.div_ceil(per_user).max(1);
    let mut users = Vec::with_capacity(n_users);
    for u in 0..n_users {
        let user = core
            .accounts()
            .create_user(
                &format!("u{u}@bench.test"),
                &SecretString::from(PASSWORD.to_string()),
                false,
                &Actor::system(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        users.push(user);
    }
    let operator = core
        .accounts()
        .create_user(
            "ops@bench.test",
            &SecretString::from(PASSWORD.to_string()),
            true,
            &Actor::system(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = core
        .plans()
        .get("stand-in")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = core.now_ms();
    let pool = core.store().pool();
    let mut tx = pool.begin().await?;
    for k in 0..args.instances {
        let h = k % args.hosts;
        let slot = k / args.hosts;
        let id = uuid::Uuid::new_v4().to_string();
        let ip = format!("{}.{}", subnet_of(h), 2 + slot);
        let port = 22000 + slot as u16;
        let mac = format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            (k >> 16) & 0xff,
            (k >> 8) & 0xff,
            k & 0xff
        );
        let owner = &users[k / per_user];
        sqlx::query(
            "INSERT INTO instances (id, owner_id, name, plan_id, plan_name, vcpus, memory_mib, disk_gib, \
             region, host_id, private_ip, mac, ssh_port, base_image, state, error_reason, desired_power, \
             created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'DE', $9, $10, $11, \
             $12, 'bench', 'running', NULL, 'running', $13, $13, NULL)",
        )
        .bind(&id)
        .bind(&owner.id)
        .bind(format!("i{k}"))
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(i64::from(plan.vcpus))
        .bind(plan.memory_mib as i64)
        .bind(plan.disk_gib as i64)
        .bind(&host_ids[h])
        .bind(&ip)
        .bind(&mac)
        .bind(i64::from(port))
        .bind(now + k as i64)
        .execute(&mut *tx)
        .await?;
        agents[h].insert_vm(
            &id,
            VmSpec {
                vcpus: plan.vcpus,
                memory_mib: plan.memory_mib,
                disk_gib: plan.disk_gib,
                base_image: "bench".into(),
                mac,
                private_ip: ip,
                hostname: format!("i{k}"),
                ssh_authorized_keys: vec![],
                user_data: None,
                port_forwards: vec![PortForward {
                    protocol: Protocol::Tcp,
                    host_port: port,
                    guest_port: 22,
                }],
                public_hostname: None,
            },
            VmState::Running,
        );
    }
    tx.commit().await?;
    eprintln!(
        "{} instances inserted in {:.1} s",
        args.instances,
        t.elapsed().as_secs_f64()
    );

    // 3. Reconcile passes in this process.
    let reconciler = Reconciler::new(core.clone(), clients.clone(), 32);
    let mut passes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = reconciler.reconcile_once().await?;
        let el = t.elapsed();
        if r.vms_seen != args.instances
            || r.hosts != args.hosts
            || r.hosts_unreachable
                + r.starts_enqueued
                + r.stops_enqueued
                + r.forwards_reapplied
                + r.vanished
                > 0
            || !r.unknown_vms.is_empty()
        {
            bail!("unexpected reconcile result: {r:?}");
        }
        passes.push(el);
    }
    let poller = Poller::new(core.clone(), clients.clone(), 32);
    let t = Instant::now();
    let pr = poller.poll_once().await?;
    let poll = t.elapsed();
    println!(
        "fleet: {} hosts, {} instances (fake agents)",
        args.hosts, args.instances
    );
    println!(
        "reconcile pass: {} ms (runs: {})",
        passes
            .iter()
            .map(|d| ms(*d))
            .fold(f64::MAX, f64::min)
            .round(),
        passes
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "metrics poll pass: {:.0} ms ({} samples)",
        ms(poll),
        pr.samples
    );
    // A second single-replica pass (same state as the two-replica pass below: every
    // instance has health and samples already), then, on PostgreSQL, two replicas
    // (two pollers, each with its own host leases) polling the fleet at once.
    let t = Instant::now();
    poller.poll_once().await?;
    let single = t.elapsed();
    println!("metrics poll pass, 1 replica: {:.0} ms", ms(single));
    if core.store().backend() == clawy_core::Backend::Postgres {
        let lease = Duration::from_secs(60);
        let a = Arc::new(HostLeases::new(core.clone(), "bench-a".into(), lease));
        let b = Arc::new(HostLeases::new(core.clone(), "bench-b".into(), lease));
        // a takes all, b joins, a hands back its surplus, b takes it.
        a.refresh().await?;
        b.refresh().await?;
        a.refresh().await?;
        let (na, nb) = (a.refresh().await?, b.refresh().await?);
        let pa = Poller::new(core.clone(), clients.clone(), 32).with_leases(a, Duration::ZERO);
        let pb = Poller::new(core.clone(), clients.clone(), 32).with_leases(b, Duration::ZERO);
        let t = Instant::now();
        let (ra, rb) = tokio::join!(pa.poll_once(), pb.poll_once());
        let two = t.elapsed();
        let (ra, rb) = (ra?, rb?);
        if ra.hosts + rb.hosts != args.hosts {
            bail!("two replicas polled {} + {} hosts", ra.hosts, rb.hosts);
        }
        println!(
            "metrics poll pass, 2 replicas ({na} + {nb} hosts): {:.0} ms, ratio to 1 replica {:.2}",
            ms(two),
            two.as_secs_f64() / single.as_secs_f64()
        );
    }
    println!(
        "bench process RSS (orchestrator + {} fake agents holding {} fake VMs): {} MiB",
        args.hosts,
        args.instances,
        rss_kib(std::process::id(), "VmRSS:").unwrap_or(0) / 1024
    );

    // 4. A real `clawy server` on the same database.
    let Some(bin) = args.clawy_bin.clone() else {
        return Ok(());
    };
    let user_key = core
        .api_keys()
        .create(
            &users[0].id,
            "bench",
            Tier::Read,
            None,
            None,
            &Actor::system(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .key
        .expose()
        .to_string();
    let op_key = core
        .api_keys()
        .create(
            &operator.id,
            "bench",
            Tier::Admin,
            None,
            None,
            &Actor::system(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .key
        .expose()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = tmp.path().join("clawy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ndatabase_url = \"{db_url}\"\n\
             bcrypt_cost = 4\ninsecure_test_mode = true\nbase_image = \"bench\"\n\
             reconcile_interval_secs = 5\nmetrics_interval_secs = 30\n",
            data_dir.display()
        ),
    )?;
    let log = std::fs::File::create(tmp.path().join("server.log"))?;
    let mut server = tokio::process::Command::new(&bin)
        .arg("server")
        .arg("--config")
        .arg(&cfg)
        .env_remove("CLAWY_DATABASE_URL")
        .env_remove("CLAWY_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting clawy server")?;
    let pid = server.id().context("server pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // User list (100 instances).
    let mut lat = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/v1/instances"))
            .bearer_auth(&user_key)
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await?;
        lat.push(t.elapsed());
        if !status.is_success()
            || body["instances"].as_array().map(Vec::len) != Some(per_user.min(args.instances))
        {
            bail!(
                "user list answered {status}: {}",
                body.to_string().chars().take(300).collect::<String>()
            );
        }
    }
    lat.sort();
    println!(
        "GET /api/v1/instances (user with {} instances, {} requests): p50 {:.1} ms, p99 {:.1} ms",
        per_user.min(args.instances),
        args.requests,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // Operator list, 100 a page, walking the whole fleet repeatedly.
    let mut lat = Vec::with_capacity(args.requests);
    let mut after: Option<String> = None;
    let mut seen = 0usize;
    for _ in 0..args.requests {
        let mut url = format!("{base}/api/v1/admin/instances?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(&op_key).send().await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await?;
        lat.push(t.elapsed());
        if !status.is_success() {
            bail!("operator list answered {status}: {body}");
        }
        seen += body["instances"].as_array().map(Vec::len).unwrap_or(0);
        after = body["next_after"].as_str().map(str::to_string);
    }
    lat.sort();
    println!(
        "GET /api/v1/admin/instances?limit=100 (operator, paginated, {} requests, {seen} rows): p50 {:.1} ms, p99 {:.1} ms",
        args.requests,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // RSS after the server's own reconciler (every 5 s) and poller (every 30 s, the
    // default) ran over the fleet.
    tokio::time::sleep(Duration::from_secs(35)).await;
    println!(
        "clawy server RSS after ≥2 poll and ≥7 reconcile cycles over the fleet: {} MiB (peak {} MiB)",
        rss_kib(pid, "VmRSS:").unwrap_or(0) / 1024,
        rss_kib(pid, "VmHWM:").unwrap_or(0) / 1024
    );
    let _ = server.kill().await;
    Ok(())
}
