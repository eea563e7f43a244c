//! clawy-testkit
pub mod browser;
