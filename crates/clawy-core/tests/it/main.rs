//! clawy-core integration tests. They run against the database chosen by
//! `CLAWY_TEST_DB` (sqlite by default; `postgres` needs
//! `eval "$(scripts/start-postgres.sh)"`), each test on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod api_keys;
mod audit;
mod common;
mod config;
mod hosts_registry;
mod instances_api;
mod instances_support;
mod ipam_allocations;
mod jobs_queue;
mod mail;
mod metrics_retention;
mod placement_capacity;
mod promises;
mod reports;
mod sessions;
mod ssh_keys;
mod storage;
mod throttle;
