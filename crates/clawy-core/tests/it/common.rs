use clawy_core::config::ServerConfig;
use clawy_core::{Actor, ClientInfo, Core, ManualClock, SecretString, User};
use clawy_testkit::db::TestDatabase;
use clawy_testkit::smtp::SmtpSink;
use std::sync::Arc;

/// A strong password zxcvbn scores 4.
pub const GOOD_PW: &str = "Tundra-Velvet-Quasar-4812";
pub const OTHER_GOOD_PW: &str = "Marble;Orchid;Zephyr;1967";

pub struct TestCore {
    pub core: Arc<Core>,
    pub clock: ManualClock,
    pub db: TestDatabase,
    pub smtp: Option<SmtpSink>,
}

impl TestCore {
    pub async fn new() -> TestCore {
        Self::build(false, |_| {}).await
    }

    pub async fn with(f: impl FnOnce(&mut ServerConfig)) -> TestCore {
        Self::build(false, f).await
    }

    pub async fn with_smtp(f: impl FnOnce(&mut ServerConfig)) -> TestCore {
        Self::build(true, f).await
    }

    async fn build(smtp: bool, f: impl FnOnce(&mut ServerConfig)) -> TestCore {
        let db = TestDatabase::new().await.expect("test database");
        let mut config = ServerConfig::for_tests(&db.data_dir(), db.url());
        let smtp = if smtp {
            let sink = SmtpSink::start().await.expect("smtp sink");
            config.smtp_url = Some(sink.url());
            Some(sink)
        } else {
            None
        };
        config.base_url = "https://clawy.test".parse().unwrap();
        config.security_contact = "security@clawy.test".into();
        config.mail_from = "Clawy <noreply@clawy.test>".into();
        f(&mut config);
        let clock = ManualClock::new("2026-03-01T12:00:00Z".parse().unwrap());
        let core = Core::open_with_clock(config, Arc::new(clock.clone()))
            .await
            .expect("core opens");
        TestCore {
            core: Arc::new(core),
            clock,
            db,
            smtp,
        }
    }

    /// Signs up a user with [`GOOD_PW`].
    pub async fn user(&self, email: &str) -> User {
        clawy_testkit::secrets::register(GOOD_PW);
        self.core
            .accounts()
            .signup(email, &pw(GOOD_PW), &Actor::anonymous(client("192.0.2.1")))
            .await
            .expect("signup")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Row;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(self.core.store().pool())
            .await
            .unwrap();
        row.try_get::<i64, _>(0).unwrap()
    }

    /// Every text value in the tables that hold credentials, for "no plaintext" checks.
    pub async fn dump_text(&self) -> String {
        use sqlx::Row;
        let mut out = String::new();
        for (table, cols) in [
            ("users", "id, email, password_hash"),
            ("sessions", "id, token_hash, user_id"),
            ("password_resets", "id, token_hash, user_id"),
            ("api_keys", "id, name, prefix, key_hash"),
            ("audit_events", "actor, action, detail"),
        ] {
            let n = cols.split(',').count();
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {cols} FROM {table}")))
                .fetch_all(self.core.store().pool())
                .await
                .unwrap();
            for r in rows {
                for i in 0..n {
                    out.push_str(&r.try_get::<String, _>(i).unwrap_or_default());
                    out.push('\n');
                }
            }
        }
        out
    }
}

pub fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

pub fn client(ip: &str) -> ClientInfo {
    ClientInfo::new(ip.parse().unwrap(), Some("test-agent/1.0"))
}

pub fn caller_for(user: &User) -> Actor {
    user.actor(client("192.0.2.1"))
}
