//! Integration tests of the orchestrator on a real database (`CLAWY_TEST_DB`). These
//! use the in-process fake agent (fast, counts calls); the same flows against the
//! REAL agent and real guests are in `crates/clawy-cli/tests/it/orchestrator_*.rs`
//! (they need the `clawy` binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dns_jobs;
mod dns_knot;
mod fleet_scale;
mod host_leases;
mod postgres_two_runners;
mod reconcile_fake;
mod rotation_fake;
mod runner_fake;
