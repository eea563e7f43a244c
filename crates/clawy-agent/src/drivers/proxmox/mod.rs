//! The `proxmox` driver: Proxmox VE's REST API on the node the agent runs on.
pub mod config;
