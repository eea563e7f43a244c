//! Secrets at rest (AUTH-1, AUTH-2, AUTH-3): after a full flow, no text or blob column of
//! any table holds a plaintext password, session id, API key or reset token — on SQLite
//! and on PostgreSQL (`CLAWY_TEST_DB=postgres`).

use crate::common::TestApp;
use crate::secrets_in_logs::full_flow;
use clawy_core::Backend;
use sqlx::Row;

async fn tables_and_columns(app: &TestApp) -> Vec<(String, Vec<String>)> {
    let pool = app.core.store().pool();
    let mut out = Vec::new();
    match app.core.store().backend() {
        Backend::Sqlite => {
            let tables = sqlx::query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for t in tables {
                let name: String = t.try_get("name").unwrap();
                let cols: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{name}')"
                )))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get::<String, _>("name").unwrap())
                .collect();
                out.push((name, cols));
            }
        }
        Backend::Postgres => {
            let rows = sqlx::query(
                "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
                 WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for r in rows {
                let t: String = r.try_get("t").unwrap();
                let c: String = r.try_get("c").unwrap();
                match out.last_mut() {
                    Some((last, cols)) if *last == t => cols.push(c),
                    _ => out.push((t, vec![c])),
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn auth_1_auth_2_auth_3_database_holds_no_plaintext_secret() {
    let app = TestApp::builder().with_smtp().start().await;
    let secrets = full_flow(&app).await;
    let pool = app.core.store().pool();
    let tables = tables_and_columns(&app).await;
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "users",
        "sessions",
        "api_keys",
        "password_resets",
        "audit_events",
    ] {
        assert!(
            names.contains(&expected),
            "table {expected} not found in {names:?}"
        );
    }
    let mut cells = 0usize;
    let mut dump = String::new();
    for (table, cols) in &tables {
        for col in cols {
            // Every column as text: integers, text, and blobs as hex (which the
            // hex check below covers).
            let expr = match app.core.store().backend() {
                Backend::Sqlite => format!(
                    "CASE WHEN typeof(\"{col}\") = 'blob' THEN hex(\"{col}\") ELSE CAST(\"{col}\" AS TEXT) END"
                ),
                Backend::Postgres => format!("CAST(\"{col}\" AS TEXT)"),
            };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {expr} AS v FROM \"{table}\""
            )))
            .fetch_all(pool)
            .await
            .unwrap();
            for r in rows {
                if let Ok(Some(v)) = r.try_get::<Option<String>, _>("v") {
                    cells += 1;
                    dump.push_str(&v);
                    dump.push('\n');
                }
            }
        }
    }
    assert!(cells > 20, "the scan read the data ({cells} cells)");
    let dump_lower = dump.to_lowercase();
    for (what, secret) in secrets.all() {
        if what == "csrf token" {
            continue; // derived from the session secret, never stored; not a credential alone
        }
        assert!(
            !dump.contains(secret.as_str()),
            "a {what} is stored in plaintext"
        );
        let hexed: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !dump_lower.contains(&hexed),
            "a {what} is stored hex-encoded"
        );
    }
    // The hashes are there (so the scan looked at the right place).
    let key_hash = clawy_core::crypto::sha256_hex(secrets.api_keys.last().unwrap());
    assert!(dump.contains(&key_hash), "API keys are stored as SHA-256");
}
