//! Integration tests of the `clawy` binary (one test binary for the crate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_cli;
mod agent_api;
mod agent_dos;
mod agent_egress;
mod agent_lifecycle;
mod agent_network;
mod agent_unprivileged;
mod cli_keys;
mod cli_support;
mod cli_tty;
mod cli_wait;
mod orchestrator_crash;
mod orchestrator_placement;
mod orchestrator_postgres;
mod orchestrator_real;
mod orchestrator_support;
mod up_e2e;
mod up_support;
