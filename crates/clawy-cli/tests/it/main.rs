//! Integration tests of the `clawy` binary against a test database (`CLAWY_TEST_DB`):
//! they run once per database backend. Tests that need no test database are in
//! `tests/standalone` and run once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_cli;
mod cli_keys;
mod cli_support;
mod cli_tty;
mod cli_wait;
mod orchestrator_crash;
mod orchestrator_drivers;
mod orchestrator_placement;
mod orchestrator_postgres;
mod orchestrator_real;
mod orchestrator_support;
mod server_replicas;
