//! `clawy`: the one user-facing binary. Each subcommand belongs to the crate that
//! implements it; this file only parses the command line and dispatches. The API
//! client commands (`login`, `instances`, `ssh-keys`, `api-keys`) and `up` live here.

mod api_keys;
mod client;
mod exit;
mod instances;
mod login;
mod output;
mod ssh_keys;
mod up;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

use crate::exit::{CmdError, CmdResult, Exit};

#[derive(Parser)]
#[command(
    name = "clawy",
    version,
    about = "Clawy: one isolated VM per user, running the OpenClaw gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine: control plane (SQLite), a local agent
    /// with QEMU, the test guest image, an operator account. Try it in a network
    /// namespace: `sudo ip netns add clawy && sudo ip netns exec clawy clawy up`.
    Up(up::UpArgs),
    /// Run the control plane (dashboard, REST API).
    Server(clawy_server::cli::ServerArgs),
    /// Operator commands run against the control plane's database.
    Admin(clawy_server::cli::AdminArgs),
    /// The host agent: run it, or manage its certificate and tokens.
    Agent(clawy_agent::cli::AgentArgs),
    /// Store an API key for the commands below (asked on stdin, verified first).
    Login {
        /// Control plane URL (default: CLAWY_SERVER, else http://127.0.0.1:8080).
        #[arg(long)]
        server: Option<String>,
    },
    /// Forget the stored API key.
    Logout,
    /// Your instances (VMs).
    Instances {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: instances::InstancesCommand,
    },
    /// Your SSH public keys.
    SshKeys {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: ssh_keys::SshKeysCommand,
    },
    /// Your API keys.
    ApiKeys {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: api_keys::ApiKeysCommand,
    },
}

/// Options of every API client command.
#[derive(Args, Debug)]
struct ClientOpts {
    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Control plane URL (overrides CLAWY_SERVER and the stored one).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => clawy_server::cli::run_server(args),
        Command::Admin(args) => clawy_server::cli::run_admin(args),
        Command::Agent(args) => clawy_agent::cli::run(args),
        Command::Up(args) => up::run(args),
        Command::Login { server } => {
            return client_command(|| async move { login::login(server.as_deref()).await });
        }
        Command::Logout => return finish(login::logout()),
        Command::Instances { opts, command } => {
            return client_command(|| async move {
                let c = login::client(opts.server.as_deref())?;
                instances::run(&c, command, opts.json).await
            });
        }
        Command::SshKeys { opts, command } => {
            return client_command(|| async move {
                let c = login::client(opts.server.as_deref())?;
                ssh_keys::run(&c, command, opts.json).await
            });
        }
        Command::ApiKeys { opts, command } => {
            return client_command(|| async move {
                let c = login::client(opts.server.as_deref())?;
                api_keys::run(&c, command, opts.json).await
            });
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an API client command on a small runtime and maps its result to the
/// documented exit codes.
fn client_command<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = CmdResult>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return finish(Err(CmdError::new(Exit::Failed, e.to_string()))),
    };
    finish(rt.block_on(f()))
}

fn finish(r: CmdResult) -> ExitCode {
    match r {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.exit.into()
        }
    }
}
