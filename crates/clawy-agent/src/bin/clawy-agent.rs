//! `clawy-agent`: the host agent alone, for hosts that run nothing else of Clawy. The
//! same commands as `clawy agent …` (this binary is also what the agent's own
//! integration tests run).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "clawy-agent",
    version,
    about = "The Clawy host agent: run it, or manage its certificate and tokens"
)]
struct Cli {
    #[command(flatten)]
    args: clawy_agent::cli::AgentArgs,
}

fn main() -> ExitCode {
    match clawy_agent::cli::run(Cli::parse().args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
