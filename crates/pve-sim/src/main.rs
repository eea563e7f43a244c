//! `pve-sim`: a Proxmox VE API simulator for tests and development only.
//!
//!   pve-sim --config sim.toml                 run the simulated node
//!   pve-sim --config sim.toml create-template --vmid 9000 --image disk.qcow2
//!
//! At start it prints one JSON line on stdout: listen address, node name, the
//! certificate's SHA-256 fingerprint, the CA file, and the control listener.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pve_sim::{SimConfig, SimHandle, TemplateConfig};

#[derive(Parser)]
#[command(
    name = "pve-sim",
    about = "Proxmox VE API simulator (tests and development only)"
)]
struct Cli {
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the simulated node (the default).
    Run,
    /// Create a template VM from an image file, as an operator would with `qm`.
    CreateTemplate {
        #[arg(long)]
        vmid: u32,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        bridge: Option<String>,
        #[arg(long, default_value_t = 256)]
        memory: u64,
        #[arg(long, default_value_t = 1)]
        cores: u32,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PVE_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("pve-sim: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = SimConfig::load(&cli.config)?;
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::CreateTemplate {
            vmid,
            image,
            name,
            bridge,
            memory,
            cores,
        } => {
            let mut cfg = cfg;
            cfg.templates.clear();
            let node = pve_sim::Node::new(
                cfg,
                std::sync::Arc::new(pve_sim::clock::SystemClock::default()),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
            node.create_template(&TemplateConfig {
                vmid,
                image,
                name,
                bridge,
                memory,
                cores,
            })
            .await
            .map_err(|e| anyhow::anyhow!(e.trim_end().to_string()))?;
            println!("template {vmid} created");
            Ok(())
        }
        Cmd::Run => {
            let state = cfg.state_dir.clone();
            let mut sim = SimHandle::start(cfg).await?;
            // Like a daemon restart on PVE: stopping the simulator leaves VMs running.
            sim.keep_vms_on_drop();
            let control = sim.control().map(|(a, t)| (a.to_string(), t.to_string()));
            let line = serde_json::json!({
                "listen": sim.addr().to_string(),
                "node": sim.node_name(),
                "fingerprint": sim.fingerprint(),
                "ca": state.join(pve_sim::tls::CA_FILE),
                "control": control.as_ref().map(|c| c.0.clone()),
                "control_token": control.as_ref().map(|c| c.1.clone()),
            });
            println!("{line}");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            drop(sim);
            Ok(())
        }
    }
}
