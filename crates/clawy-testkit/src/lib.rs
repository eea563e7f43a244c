//! clawy-testkit
pub mod browser;
pub mod db;
pub mod postgres;
pub mod smtp;
