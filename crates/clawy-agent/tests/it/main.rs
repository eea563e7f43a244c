//! Integration tests of the agent library (one test binary for the crate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod edge;
mod network_host;
mod network_rules;
