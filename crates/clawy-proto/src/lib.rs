//! clawy-proto
pub mod agent;
pub mod api;
