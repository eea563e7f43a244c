//! `clawy server` and `clawy admin …` (placeholder until the control plane lands).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {}

#[derive(clap::Args, Debug)]
pub struct AdminArgs {}

pub fn run_server(_args: ServerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the control plane is not built yet")
}

pub fn run_admin(_args: AdminArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the control plane is not built yet")
}
