//! Integration tests of the control plane's HTTP front: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod common;

mod api_api_keys;
mod api_audit;
mod api_db_scan;
mod api_errors;
mod api_instances;
mod api_me;
mod api_metrics;
mod api_openapi;
mod api_security_reports;
mod api_ssh_keys;
mod authz_matrix;
mod behind_caddy;
mod browser;
mod browser_instances;
mod headers;
mod secrets_in_logs;
mod web_auth;
mod web_csrf;
mod web_instances;
mod web_operator_hosts;
mod web_pages;
mod web_pagination;
mod web_security;
mod web_support;
