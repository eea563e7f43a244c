//! Storage: one `sqlx::AnyPool` over SQLite (default) or PostgreSQL.
//!
//! One SQL dialect for both (docs/DECISIONS.md): `$N` placeholders, TEXT ids, BIGINT
//! unix-ms times, BIGINT 0/1 booleans. Migrations are per backend in
//! `migrations/{sqlite,postgres}` and embedded in the binary.
//!
//! DATA-4: the SQLite file is created with mode 0600 (and its directory 0700) before
//! SQLite opens it; a PostgreSQL URL is passed through untouched, so
//! `sslmode=verify-full&sslrootcert=/path/ca.crt` gives an encrypted, verified
//! connection.

use sqlx::any::{AnyPoolOptions, AnyRow, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ServerConfig;
use crate::crypto::create_private_dir;
use crate::error::{CoreError, DomainError, ErrorKind, InternalError};
use crate::page::{Keyset, Page, PageRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database_url `{0}` is neither sqlite:// nor postgres://")]
    UnsupportedUrl(String),
    #[error("cannot prepare the SQLite file {path}: {source}")]
    SqliteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl DomainError for StoreError {
    fn code(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl(_) => "database_url_unsupported",
            StoreError::SqliteFile { .. } => "database_file",
            StoreError::Connect(_) => "database_connect",
            StoreError::Migrate(_) => "database_migrate",
            StoreError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database handle. Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `config.database_url` and runs migrations. For SQLite, creates the
    /// data directory (0700) and the file (0600) first, and turns on WAL.
    pub async fn connect(config: &ServerConfig) -> Result<Store, StoreError> {
        Self::connect_url(&config.database_url).await
    }

    /// Connects to a URL and runs migrations.
    pub async fn connect_url(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        if url.starts_with("sqlite:") {
            let path = sqlite_path(url)?;
            prepare_sqlite_file(&path)?;
            let url = format!("sqlite://{}?mode=rw", encode_path(&path));
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // foreign_keys is on by default in sqlx-sqlite, busy_timeout 5 s;
                        // set both explicitly so the invariant is visible here.
                        // secure_delete: deleted rows are overwritten, not left in free
                        // pages (DATA-5: an erased sealed copy is gone from the file).
                        conn.execute(
                            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(StoreError::Connect)?;
            // WAL is persistent in the file; set it once.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(StoreError::Connect)?;
            SQLITE_MIGRATOR.run(&pool).await?;
            Ok(Store {
                pool,
                backend: Backend::Sqlite,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await
                .map_err(StoreError::Connect)?;
            POSTGRES_MIGRATOR.run(&pool).await?;
            Ok(Store {
                pool,
                backend: Backend::Postgres,
            })
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Serialises the transactions that count and then insert under one
    /// (`scope`, `subject`), so concurrent callers cannot all see "below the limit".
    /// PostgreSQL: a transaction-scoped advisory lock (READ COMMITTED lets two
    /// `INSERT … SELECT … WHERE count < max` both pass). SQLite: nothing to do, as its
    /// first write in the transaction takes the database's write lock.
    pub async fn lock_subject(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        scope: &str,
        subject: &str,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS l",
            )
            .bind(format!("{scope}\n{subject}"))
            .fetch_one(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Cheap liveness check for `/healthz`.
    pub async fn ping(&self) -> Result<(), InternalError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Every row of `query`, each turned into a `T` by `from_row`: the one way the
    /// handles read a list (a mapping error is the caller's error, like a query's).
    pub(crate) async fn rows<T, M, E>(
        &self,
        query: Query<'_>,
        from_row: impl Fn(&AnyRow) -> Result<T, M>,
    ) -> Result<Vec<T>, E>
    where
        E: From<sqlx::Error> + From<M>,
    {
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|r| from_row(r).map_err(E::from)).collect()
    }

    /// The first row of `query` as a `T`, if there is one (the lookups by a unique
    /// key, which have at most one).
    pub(crate) async fn optional_row<T, M, E>(
        &self,
        query: Query<'_>,
        from_row: impl Fn(&AnyRow) -> Result<T, M>,
    ) -> Result<Option<T>, E>
    where
        E: From<sqlx::Error> + From<M>,
    {
        let rows = self.rows::<T, M, E>(query, from_row).await?;
        Ok(rows.into_iter().next())
    }

    /// One page of a list in `keyset` order (the one pagination rule, `crate::page`).
    /// `select` is the query up to its WHERE clause, `filters` its own conditions
    /// (values from `$4`, bound by `bind`; empty for none); `cursor` is an item's
    /// `<ms>:<key>`.
    pub(crate) async fn page<T, M, E>(
        &self,
        keyset: Keyset,
        req: &PageRequest,
        (select, filters): (&str, &str),
        bind: impl FnOnce(Query<'static>) -> Query<'static>,
        from_row: impl Fn(&AnyRow) -> Result<T, M>,
        cursor: impl Fn(&T) -> String,
    ) -> Result<Page<T>, CoreError>
    where
        E: From<sqlx::Error> + From<M> + DomainError,
    {
        let (ms, key) = keyset.start(req).map_err(CoreError::new)?;
        let and = if filters.is_empty() { "" } else { " AND " };
        let sql = format!("{select} WHERE {filters}{and}{}", keyset.tail());
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms)
            .bind(key)
            .bind(req.fetch());
        let items = self
            .rows::<T, M, E>(bind(q), from_row)
            .await
            .map_err(CoreError::new)?;
        Ok(Page::from_fetched(items, req, cursor))
    }

    /// The first row of `query` as a `T`, or `missing` (the caller's "not found").
    pub(crate) async fn row_or<T, M, E>(
        &self,
        query: Query<'_>,
        from_row: impl Fn(&AnyRow) -> Result<T, M>,
        missing: E,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error> + From<M>,
    {
        self.optional_row::<T, M, E>(query, from_row)
            .await?
            .ok_or(missing)
    }
}

/// A statement with its bound values, as `sqlx::query(…).bind(…)` builds it.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Whether a write failed because it would break a unique constraint (a name or
/// fingerprint that exists already): `Ok(true)` then, the write's own error otherwise.
pub(crate) fn unique_violation<T>(res: Result<T, sqlx::Error>) -> Result<bool, sqlx::Error> {
    match res {
        Ok(_) => Ok(false),
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(true),
        Err(e) => Err(e),
    }
}

/// The file path of a `sqlite:` URL (`sqlite://path`, `sqlite:path`, `sqlite:///abs`).
pub fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
    let rest = rest.split('?').next().unwrap_or("");
    if rest.is_empty() || rest == ":memory:" {
        return Err(StoreError::UnsupportedUrl(format!(
            "{url} (in-memory databases are not supported; give a file path)"
        )));
    }
    let decoded = percent_decode(rest);
    Ok(PathBuf::from(decoded))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out
}

/// Creates the directory (0700) and the database file (0600) before SQLite opens it,
/// so the file never exists with wider permissions (DATA-4).
fn prepare_sqlite_file(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::SqliteFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(io)?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // An existing file with wider permissions is tightened.
    for p in [
        path.to_path_buf(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        if let Ok(meta) = std::fs::metadata(&p) {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// A database URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("[redacted]"));
            }
            u.to_string()
        }
        Err(_) => "[unparseable url]".to_string(),
    }
}

/// A boolean as stored (BIGINT 0/1).
pub(crate) fn b2i(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// SHA-384 (sqlx's migration checksum) of every released migration, as shipped.
    /// sqlx stores it in `_sqlx_migrations` and compares it at every start, comments
    /// included: an edited released migration makes every existing database refuse
    /// to start ("migration N was previously applied but has been modified"). A
    /// change belongs in a new migration; never update these constants.
    const RELEASED: &[(Backend, i64, &str)] = &[
        (
            Backend::Sqlite,
            1,
            "1bdf252e4f15fc5cadd339079268b5c354bd21b8182bf66a1bf08ddb35c9d8d077ea4a24e9382980e4ce1f4e3bfe22cf",
        ),
        (
            Backend::Sqlite,
            2,
            "731abc8583a5d205f731e2a26923560a0e4e3a709af2f459a38b0481a6d6bd598a0540da1fcdc10ed20dd28bbbcdd6f5",
        ),
        (
            Backend::Postgres,
            1,
            "f1235d1205464579858da5da8f86ddb681358d987cb6eebe40a3f55d735dfeb413b716d93cbee662910f3d5bf98da2e9",
        ),
        (
            Backend::Postgres,
            2,
            "11a04291dc54efcc9e6fd6f9b9616273c20a141799b29ec90fefcdec31932cd45ee00d1952199439b29414a026e90f3a",
        ),
    ];

    #[test]
    fn released_migrations_are_never_edited() {
        for (backend, version, pinned) in RELEASED {
            let migrator = match backend {
                Backend::Sqlite => &SQLITE_MIGRATOR,
                Backend::Postgres => &POSTGRES_MIGRATOR,
            };
            let m = migrator
                .iter()
                .find(|m| m.version == *version)
                .unwrap_or_else(|| panic!("{backend:?} migration {version} was removed"));
            assert_eq!(
                hex::encode(&m.checksum),
                *pinned,
                "{backend:?} migration {version} ({}) changed since its release: \
                 restore it byte for byte and put the change in a new migration",
                m.description
            );
        }
        // Both backends have the same migrations, and a new one comes after every
        // released one (on an existing database an older number would run after
        // migrations that were written later).
        let versions =
            |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&SQLITE_MIGRATOR), versions(&POSTGRES_MIGRATOR));
        let newest_released = RELEASED.iter().map(|r| r.1).max().unwrap();
        for m in SQLITE_MIGRATOR.iter() {
            assert!(
                m.version > newest_released || RELEASED.iter().any(|r| r.1 == m.version),
                "migration {} slots in among the released ones",
                m.version
            );
        }
    }
}
