//! clawy-agent
pub mod cli;
