//! PostgreSQL for tests: one fresh database per test on the cluster started by
//! `scripts/start-postgres.sh` (TLS, `sslmode=verify-full`).

use anyhow::{Context, bail};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use url::Url;

/// The admin URL from `CLAWY_TEST_POSTGRES_URL` (set by `eval "$(scripts/start-postgres.sh)"`).
pub fn admin_url() -> anyhow::Result<String> {
    match std::env::var("CLAWY_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => bail!(
            "CLAWY_TEST_DB=postgres needs CLAWY_TEST_POSTGRES_URL: run `eval \"$(scripts/start-postgres.sh)\"` first"
        ),
    }
}

/// Creates a database with a random name; returns its URL with the same user,
/// password and TLS parameters as the admin URL.
pub async fn create_database(admin: &str) -> anyhow::Result<(String, String)> {
    let name = format!("clawy_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .context("connecting to the test PostgreSQL (is scripts/start-postgres.sh running?)")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    conn.close().await.ok();
    let mut url = Url::parse(admin).context("CLAWY_TEST_POSTGRES_URL is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok((name, url.to_string()))
}

/// Drops a database made by [`create_database`] (closing its connections).
pub async fn drop_database(admin: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok(())
}

/// Drops a database from a `Drop` impl: runs on its own thread and runtime, because
/// the caller may be inside a tokio runtime.
pub fn drop_database_blocking(admin: String, name: String) {
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            if let Err(e) = rt.block_on(drop_database(&admin, &name)) {
                eprintln!("testkit: could not drop test database {name}: {e:#}");
            }
        }
    });
    let _ = handle.join();
}
