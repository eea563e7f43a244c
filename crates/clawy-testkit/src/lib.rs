//! clawy-testkit
pub mod agent;
pub mod browser;
pub mod caddy;
pub mod db;
pub mod guest;
pub mod knot;
pub mod netns;
pub mod nft;
pub mod postgres;
pub mod pve_sim;
pub mod smtp;
