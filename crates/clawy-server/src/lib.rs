//! clawy-server
pub mod cli;
