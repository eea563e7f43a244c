//! Integration tests of the agent: its library, and its API, VMs and network through
//! the real `clawy-agent` binary (one test binary for the crate). They need no
//! database and run once per test run (`scripts/test-all`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_api;
mod agent_dos;
mod agent_egress;
mod agent_heartbeat;
mod agent_lifecycle;
mod agent_network;
mod agent_unprivileged;
mod drivers;
mod edge;
mod edge_agent;
mod guest_image_boot;
mod network_host;
mod network_rules;
mod openclaw_gateway_host;
mod outside_scans;
mod proxmox_driver;
