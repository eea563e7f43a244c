//! clawy-testkit
pub mod agent;
pub mod browser;
pub mod db;
pub mod postgres;
pub mod smtp;
