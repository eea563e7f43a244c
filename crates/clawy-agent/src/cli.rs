//! `clawy agent …`: run the agent, show its certificate fingerprint, manage its
//! bearer tokens, and tear down what it created on the host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::api::{ApiState, router};
use crate::config::{AgentConfig, DriverConfig, ProcessEnv};
use crate::drivers::Driver;
use crate::drivers::qemu::QemuDriver;
use crate::executor::Executor;
use crate::network::Network;
use crate::tokens::TokenVerifier;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Config file (TOML); `CLAWY_AGENT_*` variables override it.
    #[arg(long, global = true, env = "CLAWY_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Run the agent (HTTPS API); prints the certificate fingerprint and address.
    Run,
    /// Print the SHA-256 fingerprint of the agent's certificate.
    Fingerprint,
    /// Manage bearer tokens for the control plane.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Remove the agent's bridge, taps and nftables tables from this host.
    Teardown {
        /// Kill running VMs first instead of refusing.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (names, ids, creation times; never the tokens).
    List,
    /// Revoke a token by name or id; takes effect without a restart.
    Revoke { name_or_id: String },
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(args.config.as_deref(), &ProcessEnv)?;
    if let Some(net) = &config.network {
        net.validate()?;
    }
    match args.command {
        AgentCommand::Run => run_agent(config),
        AgentCommand::Fingerprint => {
            let fp = crate::tls::read_fingerprint(&config.state_dir).with_context(
                || "no certificate yet: start the agent once with `clawy agent run`",
            )?;
            println!("{fp}");
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Token { command } => token(&config, command),
        AgentCommand::Teardown { force } => teardown(config, force),
    }
}

fn token(config: &AgentConfig, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { name } => {
            let (rec, token) = crate::tokens::create(&config.state_dir, name.as_deref())?;
            eprintln!(
                "created token `{}` (id {}); it is shown only now:",
                rec.name, rec.id
            );
            println!("{}", token.expose());
        }
        TokenCommand::List => {
            for t in crate::tokens::list(&config.state_dir)? {
                println!("{}\t{}\t{}", t.id, t.name, t.created_at);
            }
        }
        TokenCommand::Revoke { name_or_id } => {
            let rec = crate::tokens::revoke(&config.state_dir, &name_or_id)?;
            println!("revoked token `{}` (id {})", rec.name, rec.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run_agent(config: AgentConfig) -> anyhow::Result<ExitCode> {
    init_logging();
    let identity = crate::tls::load_or_create(&config.state_dir)?;
    if identity.created {
        tracing::info!("generated a new agent certificate");
    }
    // Printed on every start so an operator (and the test harness) can pin it.
    println!(
        "agent certificate fingerprint (SHA-256): {}",
        identity.fingerprint
    );
    let tls = crate::tls::server_config(&identity)?;
    let config = Arc::new(config);
    let rt = runtime()?;
    rt.block_on(async move {
        // The executor owns the host network (bridge, taps, nftables).
        let network = match &config.network {
            Some(net_cfg) => {
                let net = Network::new(net_cfg.clone())?;
                net.ensure_host()
                    .await
                    .map_err(|e| anyhow::anyhow!("preparing the host network: {e}"))?;
                Some(Arc::new(net))
            }
            None => None,
        };
        let driver: Arc<dyn Driver> = match &config.driver {
            DriverConfig::Qemu(q) => {
                let driver = QemuDriver::new(config.clone(), q.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("starting the qemu driver: {e}"))?;
                tracing::info!(accelerator = driver.accel().as_str(), "qemu driver ready");
                Arc::new(driver)
            }
            DriverConfig::Proxmox(p) => {
                let driver = crate::drivers::proxmox::ProxmoxDriver::new(
                    (**p).clone(),
                    &config.state_dir,
                    config.stop_timeout_secs,
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting the proxmox driver: {e}"))?;
                tracing::info!(node = %p.node, api = %p.api_url, "proxmox driver ready");
                Arc::new(driver)
            }
        };
        // ACCESS-1/ACCESS-2: the heartbeat receiver, on the bridge's gateway address
        // (only VMs reach it: the input chain admits its port from the bridge).
        let hub = match &config.network {
            Some(_) => Some(Arc::new(
                crate::heartbeat_server::Hub::open(&config.state_dir)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
            None => None,
        };
        let edge = config
            .edge
            .clone()
            .map(|settings| Arc::new(crate::edge::Edge::new(settings)));
        let mut executor = Executor::with_network(config.clone(), driver, network);
        if let Some(edge) = &edge {
            executor = executor.with_edge(edge.clone());
        }
        if let Some(hub) = &hub {
            executor = executor.with_heartbeats(hub.clone());
        }
        let executor = Arc::new(executor);
        let heartbeat_task = match (&config.network, &hub) {
            (Some(net), Some(hub)) => {
                let addr = std::net::SocketAddr::from((net.subnet.gateway(), net.heartbeat_port));
                let listener = crate::server::bind(addr)
                    .with_context(|| format!("cannot listen for heartbeats on {addr}"))?;
                tracing::info!(%addr, "heartbeat receiver listening (bridge only)");
                let (hub, deliverer) = (hub.clone(), executor.clone());
                Some(tokio::spawn(async move {
                    if let Err(e) = crate::heartbeat_server::serve(listener, hub, deliverer).await {
                        tracing::error!(error = %e, "heartbeat receiver stopped");
                    }
                }))
            }
            _ => None,
        };
        executor
            .reconcile_ports()
            .await
            .map_err(|e| anyhow::anyhow!("registering running VMs' taps: {e}"))?;
        // Dropped when the agent ends: the edge's loopback services stop with it.
        let (_edge_shutdown, edge_shutdown_rx) = tokio::sync::watch::channel(false);
        if let Some(edge) = &edge {
            // The index first, then `ask` and the responder, then Caddy's config:
            // Caddy never sees the edge config while the agent cannot answer it.
            let n = executor
                .rebuild_edge_index()
                .await
                .map_err(|e| anyhow::anyhow!("building the edge's index from the VMs: {e}"))?;
            let services = edge
                .start_services(edge_shutdown_rx.clone())
                .await
                .map_err(|e| anyhow::anyhow!("starting the edge: {e}"))?;
            tracing::info!(instances = n, ask = %services.http_addr, dns = %services.dns_addr, "edge services listening");
            // Caddy down or refusing is not fatal: VMs are still managed, HostInfo
            // reports the edge as not working, and the periodic check retries.
            match edge.ensure_caddy().await {
                Ok(how) => tracing::info!(?how, "edge: Caddy runs the edge config"),
                Err(e) => tracing::warn!(error = %e, "edge: Caddy does not run the edge config yet"),
            }
            let interval = edge.settings().check_interval;
            edge.clone().spawn_drift_check(interval, edge_shutdown_rx.clone());
        }
        let state = ApiState {
            executor,
            tokens: Arc::new(TokenVerifier::new(&config.state_dir)),
        };
        // One timeout story: the executor answers within its budget (busy when a
        // task outlives it); this limit only catches what would not.
        let app = router(
            state,
            Duration::from_secs(clawy_proto::agent::OPERATION_TIMEOUT_SECS),
        );
        let listener = crate::server::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        println!("listening on https://{addr}");
        tracing::info!(%addr, "agent API listening (HTTPS only)");
        let mut limits = config.http;
        // Room for the connections plus the VMs' sockets and files, nft/ip helper
        // pipes and the state files: a full house must not starve the rest.
        const RESERVED_FDS: u64 = 512;
        if let Some(nofile) = crate::server::raise_nofile_limit() {
            let fit = usize::try_from(nofile.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            if fit < limits.max_connections {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    nofile,
                    "the open-files limit is too low for max_connections; serving {fit} at most"
                );
                limits.max_connections = fit.max(16);
            }
        }
        tokio::select! {
            r = crate::server::serve_tls_with(listener, tls, app, limits) => r?,
            _ = shutdown_signal() => tracing::info!("shutting down; VMs keep running"),
        }
        if let Some(t) = heartbeat_task {
            t.abort();
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn teardown(config: AgentConfig, force: bool) -> anyhow::Result<ExitCode> {
    let running = crate::drivers::qemu::running_vms(&config.state_dir);
    if !running.is_empty() {
        let ids: Vec<&str> = running.iter().map(|(id, _)| id.as_str()).collect();
        if !force {
            anyhow::bail!(
                "VMs are running ({}); stop them first or pass --force to kill them",
                ids.join(", ")
            );
        }
        for (id, pid) in &running {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid) {
                eprintln!("killing VM {id} (pid {})", pid.as_raw_nonzero());
                crate::drivers::qemu::process::kill(pid);
            }
        }
    }
    if let Some(net_cfg) = config.network.clone() {
        let rt = runtime()?;
        rt.block_on(async move {
            let net = crate::network::Network::new(net_cfg)?;
            net.teardown().await?;
            Ok::<_, anyhow::Error>(())
        })?;
        println!("removed the agent's bridge, taps and nftables tables");
    } else {
        println!("no network configured; nothing to remove");
    }
    Ok(ExitCode::SUCCESS)
}
