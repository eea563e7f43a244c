//! `TestApp`: the real server on 127.0.0.1:0 with a fresh database (SQLite, or PostgreSQL
//! with `CLAWY_TEST_DB=postgres`), bcrypt cost 4 (test-only config), a `ManualClock`, and
//! optionally an SMTP sink. Helpers create users, API keys and browser sessions through
//! core's own APIs, so API tests do not depend on the HTML pages.
//!
//! Logs: the whole test binary logs (debug level) into one in-memory buffer, which
//! `secrets_in_logs` searches for every secret a flow created (AUTH-1, AUTH-2).

#![allow(dead_code)]

use clawy_core::actor::Tier;
use clawy_core::{Actor, ClientInfo};
use clawy_core::{Core, ManualClock, SecretString, ServerConfig, User};
use clawy_server::AppState;
use clawy_testkit::db::TestDatabase;
use clawy_testkit::smtp::SmtpSink;
use rand::Rng;
use rand::distributions::Alphanumeric;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

/// Every log line of this test binary.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
/// The same lines in a file under the run's artifacts, for the final secrets scan
/// (`clawy_testkit::secrets`); None when the run collects no artifacts.
static LOG_FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();

fn log_file() -> Option<&'static Mutex<std::fs::File>> {
    LOG_FILE
        .get_or_init(|| {
            let dir = clawy_testkit::secrets::artifacts_subdir("logs")?;
            let path = dir.join(clawy_testkit::secrets::artifact_name(".log"));
            std::fs::File::create(path).ok().map(Mutex::new)
        })
        .as_ref()
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        if let Some(mut f) = log_file().and_then(|f| f.lock().ok()) {
            let _ = f.write_all(buf);
        }
        if std::env::var_os("CLAWY_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the buffer subscriber once for the test binary (debug level for everything).
pub fn init_log_capture() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = BufWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far by any test in this binary.
pub fn captured_logs() -> String {
    LOGS.get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .unwrap_or_default()
}

pub fn random_suffix(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A password that passes the policy (length, zxcvbn ≥ 3, not common) and is unique,
/// so a search for it in logs or the database finds only this test's copy.
pub fn strong_password() -> String {
    format!("Vq7!{}-lantern-Orbit", random_suffix(12))
}

/// A user created through core, with its plaintext password (tests only).
#[derive(Debug, Clone)]
pub struct TestUser {
    pub user: User,
    pub email: String,
    pub password: String,
}

impl TestUser {
    pub fn id(&self) -> &str {
        &self.user.id
    }
}

/// A browser session made through core: the cookie header value and its CSRF token.
#[derive(Debug, Clone)]
pub struct TestSession {
    pub raw: String,
    pub cookie: String,
    pub csrf: String,
}

/// A change to the config before the server starts.
type ConfigTweak = Box<dyn FnOnce(&mut ServerConfig) + Send>;

pub struct TestAppBuilder {
    base_url: Option<String>,
    localhost: bool,
    smtp: bool,
    tweak: Vec<ConfigTweak>,
}

impl TestAppBuilder {
    /// Pretend the public URL is this (e.g. `https://clawy.example` to get HSTS). Origin
    /// checks then expect this origin.
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = Some(url.to_owned());
        self
    }
    /// Address the server as `http://localhost:PORT` (base URL and `url()`), e.g. for a
    /// browser that treats `localhost` as a secure context for `__Host-` cookies.
    pub fn localhost(mut self) -> Self {
        self.localhost = true;
        self
    }
    /// Start an SMTP sink and point `smtp_url` at it.
    pub fn with_smtp(mut self) -> Self {
        self.smtp = true;
        self
    }
    /// Change any config value before the server starts.
    pub fn config(mut self, f: impl FnOnce(&mut ServerConfig) + Send + 'static) -> Self {
        self.tweak.push(Box::new(f));
        self
    }

    pub async fn start(self) -> TestApp {
        init_log_capture();
        let db = TestDatabase::new().await.expect("test database");
        let smtp = if self.smtp {
            Some(SmtpSink::start().await.expect("smtp sink"))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = ServerConfig::for_tests(&db.data_dir(), db.url());
        config.listen = addr;
        let http_base = if self.localhost {
            format!("http://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        let base = self.base_url.clone().unwrap_or_else(|| http_base.clone());
        config.base_url = url::Url::parse(&base).expect("base url");
        if let Some(s) = &smtp {
            config.smtp_url = Some(s.url());
        }
        for f in self.tweak {
            f(&mut config);
        }
        let clock = ManualClock::starting_now();
        let core = Arc::new(
            Core::open_with_clock(config, Arc::new(clock.clone()))
                .await
                .expect("core"),
        );
        let state = AppState::new(core.clone());
        let app = clawy_server::router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = clawy_server::serve_with(listener, app, async move {
                let _ = rx.await;
            })
            .await;
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestApp {
            addr,
            http_base,
            core,
            state,
            clock,
            client,
            smtp,
            db,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where tests reach the server (`http://127.0.0.1:port`, or `localhost`).
    pub http_base: String,
    pub core: Arc<Core>,
    pub state: AppState,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub smtp: Option<SmtpSink>,
    pub db: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            base_url: None,
            localhost: false,
            smtp: false,
            tweak: Vec::new(),
        }
    }

    /// Defaults: plain http base URL = the listening address, no SMTP.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http_base)
    }

    /// The origin the server accepts for cookie-authenticated state changes.
    pub fn origin(&self) -> String {
        self.state.http.origin.clone()
    }

    pub fn client_info() -> ClientInfo {
        ClientInfo::new("127.0.0.1".parse().expect("ip"), Some("clawy-tests"))
    }

    /// A fresh user (random email, strong password), created through core.
    pub async fn with_user(&self) -> TestUser {
        self.make_user(false).await
    }

    pub async fn with_operator(&self) -> TestUser {
        self.make_user(true).await
    }

    async fn make_user(&self, operator: bool) -> TestUser {
        let email = format!("u{}@example.test", random_suffix(10).to_lowercase());
        let password = strong_password();
        let user = self
            .core
            .accounts()
            .create_user(
                &email,
                &SecretString::from(password.clone()),
                operator,
                &Actor::system(),
            )
            .await
            .expect("create user");
        clawy_testkit::secrets::register(&password);
        TestUser {
            user,
            email,
            password,
        }
    }

    /// A key of `tier` for `user`; returns (key id, secret).
    pub async fn with_api_key(&self, user: &TestUser, tier: Tier) -> (String, String) {
        let created = self
            .core
            .api_keys()
            .create(
                user.id(),
                &format!("test {tier}"),
                tier,
                None,
                None,
                &Actor::system(),
            )
            .await
            .expect("create key");
        clawy_testkit::secrets::register(created.key.expose());
        (created.api_key.id.clone(), created.key.expose().to_owned())
    }

    /// Like `with_api_key` with an expiry.
    pub async fn with_expiring_api_key(
        &self,
        user: &TestUser,
        tier: Tier,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> (String, String) {
        let created = self
            .core
            .api_keys()
            .create(
                user.id(),
                "expiring",
                tier,
                Some(expires_at),
                None,
                &Actor::system(),
            )
            .await
            .expect("create key");
        clawy_testkit::secrets::register(created.key.expose());
        (created.api_key.id.clone(), created.key.expose().to_owned())
    }

    /// A browser session for `user`, made through core's session API (as the login page
    /// would), so API tests do not depend on the HTML pages.
    pub async fn login_session(&self, user: &TestUser) -> TestSession {
        let s = self
            .core
            .sessions()
            .create(&user.user, &Self::client_info())
            .await
            .expect("session");
        let raw = s.token.expose().to_owned();
        clawy_testkit::secrets::register(&raw);
        TestSession {
            cookie: format!("{}={raw}", clawy_core::sessions::SESSION_COOKIE),
            raw,
            csrf: s.csrf_token.clone(),
        }
    }

    /// GET with a bearer key.
    pub async fn get_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// A request builder for `method path`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }
}

/// The JSON body of a response (panics with the text if it is not JSON).
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A valid ed25519 public key (test only).
pub const ED25519_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINaIndXuXruf3bjmXlIo5mUg3rBJo/hZ+GWPfqpgZcSv test@clawy";
/// Another one.
pub const ED25519_PUB_2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGOcahoNQJs/umqGKPMypkU5MHMOkCXLb1dqnVR2Quy1 other@clawy";
/// A 2048-bit RSA key: below the 3072-bit minimum.
pub const RSA_2048_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDY3C4KRB0GMOQhfTpW2m8y7AoHPyUqu91gcQfDCDf2d9Ip+A5pZgXYTE0pqFI4R04E5/I5tlTUAF7KBObSjwI9Rr7dI/J6Gl9s4ZnQ+n001u6GGBF+tvu6bGGeumQnwrFkKOKLhmZIMAYOIOGr6GxV8G2vNBEfjtoziqASCUARNdhDed07G0Jn/OSGR3cwZOBOpC4hVAg5jKzEZ+Rn75pUDxoJn7wlwfE805wVxdPh62efjxwb10rrELH0VuakVumOnP/pnpKO2/6NkXS5h55uz/5jjduvudqsiwLT8o36Z81UCOLWjwLdTKtY01fHShiBilDBctpsJOvuV7TBV961 short@clawy";

/// A throw-away OpenSSH *private* key (made for this test suite only; the header is
/// split so secret scanners do not flag the repository).
pub fn pasted_private_key() -> String {
    [
        concat!("-----BEGIN OPENSSH ", "PRIVATE KEY-----"),
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        "QyNTUxOQAAACDWiJ3V7l67n9245l5SKOZlIN6wSaP4Wfhlj36qYGXErwAAAJAR804YEfNO",
        "GAAAAAtzc2gtZWQyNTUxOQAAACDWiJ3V7l67n9245l5SKOZlIN6wSaP4Wfhlj36qYGXErw",
        "AAAEAjUvoTMpFIjpDy792Ebkbb/rGEb6bgLZ6lVLDysEioNdaIndXuXruf3bjmXlIo5mUg",
        "3rBJo/hZ+GWPfqpgZcSvAAAACnRlc3RAY2xhd3kBAgM=",
        concat!("-----END OPENSSH ", "PRIVATE KEY-----"),
    ]
    .join("\n")
}

/// A fresh, valid-looking ed25519 public key line (random 32-byte point), so tests can
/// add as many distinct keys as they like.
pub fn random_ed25519_pub() -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    let point: [u8; 32] = rand::random();
    blob.extend_from_slice(&point);
    format!(
        "ssh-ed25519 {} t@clawy",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}
