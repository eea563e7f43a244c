//! DATA-4: database file permissions, WAL, verified TLS to PostgreSQL, operator key.

use crate::common::*;
use clawy_core::SecretKey;
use clawy_core::db::Backend;
use clawy_testkit::db::{TestBackend, require_backend};
use sqlx::Row;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn data_4_sqlite_only_file_0600_in_dir_0700_with_wal() {
    require_backend(TestBackend::Sqlite);
    let t = TestCore::new().await;
    let path = t.db.sqlite_path().unwrap();
    assert_eq!(t.core.store().backend(), Backend::Sqlite);
    assert_eq!(mode(&t.db.data_dir()), 0o700, "data dir");
    assert_eq!(mode(&path), 0o600, "database file");
    // Write something so the WAL exists, then check it too.
    t.user("wal@example.com").await;
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    // An open pool in WAL mode keeps the file after a write.
    assert!(wal.exists(), "{} missing after a write", wal.display());
    assert_eq!(mode(&wal) & 0o077, 0, "WAL file not readable by others");
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(t.core.store().pool())
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>(0).unwrap().to_lowercase(), "wal");
    let row = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(t.core.store().pool())
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), 1);
}

#[tokio::test]
async fn data_4_sqlite_only_existing_file_with_wide_permissions_is_tightened() {
    require_backend(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x").join("c.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = clawy_core::Store::connect_url(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    assert_eq!(mode(&db), 0o600);
    store.close().await;
}

#[tokio::test]
async fn data_4_postgres_only_connection_is_tls_verified() {
    require_backend(TestBackend::Postgres);
    let t = TestCore::new().await;
    assert_eq!(t.core.store().backend(), Backend::Postgres);
    assert!(
        t.db.url().contains("sslmode=verify-full"),
        "the suite connects with verify-full"
    );
    let row = sqlx::query("SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS on_tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(t.core.store().pool())
        .await
        .unwrap();
    assert_eq!(
        row.try_get::<i32, _>(0).unwrap(),
        1,
        "connection is encrypted"
    );
    // Without the CA, verify-full must refuse the server's certificate.
    let no_ca = t.db.url().replace("sslrootcert=", "sslrootcert_unused=");
    let no_ca = no_ca
        .split("&sslrootcert_unused")
        .next()
        .unwrap()
        .to_string();
    assert!(
        clawy_core::Store::connect_url(&no_ca).await.is_err(),
        "verify-full without the test CA must fail"
    );
}

/// DATA-4: with the wrong CA, the connection fails on the certificate itself (not on
/// a password, a refused connection or a timeout).
#[tokio::test]
async fn data_4_postgres_only_with_a_wrong_ca_fails_on_the_certificate() {
    require_backend(TestBackend::Postgres);
    let t = TestCore::new().await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        ])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-days",
            "1",
            "-subj",
            "/CN=Not the test CA",
        ])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made a CA");
    let mut url = url::Url::parse(t.db.url()).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "sslrootcert" {
                other_ca.display().to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    assert!(url.as_str().contains("sslmode=verify-full"));
    let err = match clawy_core::Store::connect_url(url.as_str()).await {
        Ok(_) => panic!("a server certificate from another CA was accepted"),
        Err(e) => e,
    };
    let msg = format!("{err} {err:?}").to_ascii_lowercase();
    assert!(
        msg.contains("certificate")
            && (msg.contains("unknownissuer") || msg.contains("unknown issuer")),
        "the failure names the certificate: {msg}"
    );
}

#[tokio::test]
async fn data_4_secret_key_file_0600_created_once_and_seals() {
    let t = TestCore::new().await;
    let path = &t.core.config().secret_key_file;
    assert_eq!(mode(path), 0o600);
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.trim().len(), 64);
    // Reloading gives the same key: a sealed value opens with it.
    let sealed = t.core.secret_key().seal_str("agent-token-123");
    assert!(!sealed.contains("agent-token-123"));
    let again = SecretKey::load_or_create(path).unwrap();
    use clawy_core::ExposeSecret;
    assert_eq!(
        again.open_str(&sealed).unwrap().expose_secret(),
        "agent-token-123"
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        text,
        "not rewritten"
    );
    // Another key cannot open it, and tampering is detected.
    assert!(SecretKey::generate().open_str(&sealed).is_err());
    let mut tampered = sealed.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert!(
        again
            .open_str(std::str::from_utf8(&tampered).unwrap())
            .is_err()
    );
    // Two seals of the same text differ (random nonce).
    assert_ne!(again.seal_str("x"), again.seal_str("x"));
    assert_eq!(format!("{again:?}"), "SecretKey([redacted])");
}

#[test]
fn tokens_are_random_and_redacted() {
    use clawy_core::crypto::*;
    let a = random_token();
    assert_eq!(a.len(), 43);
    assert_ne!(a, random_token());
    assert_eq!(random_token_hex().len(), 64);
    let b = random_base62(1000);
    assert!(b.bytes().all(|c| c.is_ascii_alphanumeric()));
    let t = clawy_core::Token::new("s3cret".into());
    assert_eq!(format!("{t:?} {t}"), "[redacted] [redacted]");
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(
        constant_time_eq(b"abc", b"abc")
            && !constant_time_eq(b"abc", b"abd")
            && !constant_time_eq(b"a", b"ab")
    );
}
