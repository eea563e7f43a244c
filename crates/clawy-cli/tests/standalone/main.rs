//! Integration tests of the `clawy` binary that need no test database: `clawy up`
//! end to end (always its embedded SQLite, real guests). They run once
//! per test run (`scripts/test-all`), not once per database backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../it/cli_support.rs"]
#[allow(dead_code)]
mod cli_support;
mod up_e2e;
mod up_support;
