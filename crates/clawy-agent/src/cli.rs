//! `clawy agent …` (placeholder until the host agent lands).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the host agent is not built yet")
}
