//! clawy-proto: the types and rules shared by the control plane, the agent and the CLI.
pub mod agent;
pub mod api;
pub mod heartbeat;
pub mod names;
