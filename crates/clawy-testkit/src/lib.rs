//! clawy-testkit: helpers for tests only (a dev-dependency of every crate): fresh
//! databases, the SMTP sink, network namespaces, the test guest image, the agent
//! harness, an in-process fake agent, Chromium.
pub mod agent;
pub mod browser;
pub mod caddy;
pub mod db;
pub mod fake_agent;
pub mod guest;
pub mod knot;
pub mod netns;
pub mod nft;
pub mod openclaw_image;
pub mod postgres;
pub mod pve_sim;
pub mod scans;
pub mod secrets;
pub mod smtp;
