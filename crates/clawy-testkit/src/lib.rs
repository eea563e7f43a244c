//! clawy-testkit
pub mod agent;
pub mod browser;
pub mod db;
pub mod guest;
pub mod netns;
pub mod postgres;
pub mod pve_sim;
pub mod smtp;
