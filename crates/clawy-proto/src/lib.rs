//! clawy-proto
pub mod agent;
