//! A fresh database for each test, on the backend chosen by `CLAWY_TEST_DB`
//! (`sqlite`, the default, or `postgres`).
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let db = clawy_testkit::db::TestDatabase::new().await?;
//! // db.url(): sqlite://<tempdir>/clawy.db or postgres://…/clawy_test_<random>?sslmode=verify-full…
//! // db.data_dir(): a private temporary directory for the server's other files.
//! # Ok(()) }
//! ```
//! Keep the guard alive for as long as the database is used: dropping it removes the
//! temporary directory and drops the PostgreSQL database.

use std::path::{Path, PathBuf};
use tempfile::TempDir;

use crate::postgres;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// The backend the suite runs against (`CLAWY_TEST_DB`).
pub fn backend() -> TestBackend {
    match std::env::var("CLAWY_TEST_DB").as_deref() {
        Ok("postgres") | Ok("postgresql") | Ok("pg") => TestBackend::Postgres,
        _ => TestBackend::Sqlite,
    }
}

/// For a test that only means something on one backend (PostgreSQL's TLS, the SQLite
/// file's mode). Its name contains `postgres_only` or `sqlite_only`, and the run on the
/// other backend filters it out by name (`-- --skip postgres_only`, as
/// `scripts/test-all` does), so the runner counts it as filtered out, never as passed.
/// Run on the wrong backend anyway (a plain `cargo test` has no PostgreSQL), it fails
/// and says how to run it: a missing backend is never reported as "ok".
pub fn require_backend(needed: TestBackend) {
    let have = backend();
    if have != needed {
        let (var, skip) = match needed {
            TestBackend::Postgres => ("CLAWY_TEST_DB=postgres", "postgres_only"),
            TestBackend::Sqlite => ("CLAWY_TEST_DB=sqlite", "sqlite_only"),
        };
        panic!(
            "this test needs {needed:?} but the run is on {have:?}: run it with {var} \
             (scripts/start-postgres.sh prints the PostgreSQL settings), or leave it out \
             of this run with `-- --skip {skip}` as scripts/test-all does"
        );
    }
}

/// A fresh database (and a fresh data directory) that lives as long as this guard.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: TestBackend,
    dir: TempDir,
    pg: Option<(String, String)>, // (admin url, database name)
}

impl TestDatabase {
    pub async fn new() -> anyhow::Result<TestDatabase> {
        let dir = tempfile::Builder::new().prefix("clawy-test-").tempdir()?;
        match backend() {
            TestBackend::Sqlite => {
                // The database lives in a subdirectory the server creates (0700) itself.
                let path = dir.path().join("data").join("clawy.db");
                Ok(TestDatabase {
                    url: format!("sqlite://{}", path.display()),
                    backend: TestBackend::Sqlite,
                    dir,
                    pg: None,
                })
            }
            TestBackend::Postgres => {
                let admin = postgres::admin_url()?;
                let (name, url) = postgres::create_database(&admin).await?;
                Ok(TestDatabase {
                    url,
                    backend: TestBackend::Postgres,
                    dir,
                    pg: Some((admin, name)),
                })
            }
        }
    }

    /// The `database_url` to configure.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> TestBackend {
        self.backend
    }

    /// A private temporary directory; `data_dir()` below it is where the server should
    /// keep its files (it does not exist yet, so the server creates it with 0700).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<temp_dir>/data`: the SQLite file is in here; use it as the server's data_dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Leaves a copy of the database's contents in `dir` (the SQLite files as they
    /// are, or a `pg_dump`), for the final secrets scan. Best effort: a failure is
    /// printed, and the scan still reads every other dump.
    fn dump_into(&self, dir: &Path) {
        let base = crate::secrets::artifact_name("");
        match self.backend {
            TestBackend::Sqlite => {
                let db = self.data_dir().join("clawy.db");
                for ext in ["", "-wal"] {
                    let src = PathBuf::from(format!("{}{ext}", db.display()));
                    if src.exists() {
                        let dst = dir.join(format!("{base}.sqlite{ext}"));
                        if let Err(e) = std::fs::copy(&src, &dst) {
                            eprintln!(
                                "testkit: cannot copy {} for the secrets scan: {e}",
                                src.display()
                            );
                        }
                    }
                }
            }
            TestBackend::Postgres => {
                let out = dir.join(format!("{base}.sql"));
                let status = std::process::Command::new("pg_dump")
                    .arg("--no-owner")
                    .arg("--file")
                    .arg(&out)
                    .arg(&self.url)
                    .stderr(std::process::Stdio::null())
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!("testkit: pg_dump for the secrets scan failed: {status:?}");
                }
            }
        }
    }

    /// For SQLite, the database file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.backend {
            TestBackend::Sqlite => Some(self.data_dir().join("clawy.db")),
            TestBackend::Postgres => None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The final secrets scan greps what the test left in its database.
        if let Some(dumps) = crate::secrets::artifacts_subdir("dumps") {
            self.dump_into(&dumps);
        }
        if let Some((admin, name)) = self.pg.take() {
            postgres::drop_database_blocking(admin, name);
        }
    }
}

/// A fresh database URL whose storage is never cleaned up by a guard (the SQLite
/// file stays under the system temp dir; the PostgreSQL database is dropped with the
/// test cluster). Prefer [`TestDatabase`] when you can hold a guard.
pub async fn fresh_database_url() -> anyhow::Result<String> {
    let db = TestDatabase::new().await?;
    let url = db.url.clone();
    let mut db = db;
    db.pg = None; // do not drop the database
    let db = std::mem::ManuallyDrop::new(db);
    // Keep the temporary directory: leak its path (removed with the system temp dir).
    let _ = &db.dir;
    Ok(url)
}
