//! `clawy`: the one user-facing binary. Each subcommand belongs to the crate that
//! implements it; this file only parses the command line and dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "clawy", version, about = "Clawy: one isolated VM per user, running the OpenClaw gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (dashboard, REST API).
    Server(clawy_server::cli::ServerArgs),
    /// Operator commands run against the control plane's database.
    Admin(clawy_server::cli::AdminArgs),
    /// The host agent: run it, or manage its certificate and tokens.
    Agent(clawy_agent::cli::AgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => clawy_server::cli::run_server(args),
        Command::Admin(args) => clawy_server::cli::run_admin(args),
        Command::Agent(args) => clawy_agent::cli::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
