//! clawy-agent
pub mod cli;
pub mod network;
