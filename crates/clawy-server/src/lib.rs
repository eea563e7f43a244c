//! clawy-server: the control plane's HTTP front (REST API, dashboard, security pages)
//! and the `clawy server` / `clawy admin` subcommands. Domain rules and storage live in
//! `clawy-core`; this crate authenticates, authorizes, calls core, and renders.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod state;
pub mod web;

pub use app::{build_app, router, serve, serve_with};
pub use state::AppState;
