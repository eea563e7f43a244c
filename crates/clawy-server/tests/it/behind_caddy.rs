//! The control plane behind a real Caddy (Debian's 2.6.2) terminating
//! TLS, as docs/DEPLOY.md sets it up: HTTPS with a certificate valid for the public
//! name, HSTS, `Secure` cookies, and client addresses taken from Caddy's
//! `X-Forwarded-For` only because Caddy's address is in `trusted_proxies` (AUTH-5:
//! a client's own `X-Forwarded-For` is not believed).
//!
//! The client connects from 127.0.0.3 so its address differs from Caddy's
//! (127.0.0.1, the trusted proxy).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clawy_core::config::IpNet;
use clawy_testkit::caddy::{ADMIN_ORIGIN, Caddy, free_port};
use reqwest::StatusCode;

use crate::common::TestApp;
use crate::web_support::{SESSION, WebClient, set_cookies};

const NAME: &str = "cp.clawy.test";
const CLIENT_IP: &str = "127.0.0.3";

/// The DEPLOY.md Caddyfile's meaning as JSON: one site, internal issuer for tests
/// (ACME in production), reverse proxy to the loopback listener.
fn caddy_config(caddy: &Caddy, https_port: u16, app: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "admin": {"listen": format!("unix/{}", caddy.admin_socket().display()), "origins": [ADMIN_ORIGIN]},
        "storage": {"module": "file_system", "root": caddy.storage()},
        "apps": {
            "http": {"servers": {"cp": {
                "listen": [format!("127.0.0.1:{https_port}")],
                "protocols": ["h1", "h2"],
                "automatic_https": {"disable_redirects": true},
                "routes": [{
                    "match": [{"host": [NAME]}],
                    "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": app.to_string()}]}],
                    "terminal": true
                }]
            }}},
            "tls": {"automation": {"policies": [{"subjects": [NAME], "issuers": [{"module": "internal"}]}]}},
            "pki": {"certificate_authorities": {"local": {"install_trust": false}}}
        }
    })
}

#[tokio::test]
async fn control_plane_behind_caddy_hsts_secure_cookies_and_trusted_proxies() {
    let https_port = free_port().unwrap();
    let mut app = TestApp::builder()
        .base_url(&format!("https://{NAME}:{https_port}"))
        .config(|c| {
            c.trusted_proxies = vec![IpNet::parse("127.0.0.1/32").unwrap()];
        })
        .start()
        .await;
    let caddy = Caddy::start().await.unwrap();
    let (status, body) = caddy
        .admin_request(
            "POST",
            "/load",
            &serde_json::to_vec(&caddy_config(&caddy, https_port, app.addr)).unwrap(),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}\n{}", caddy.log());

    // The internal CA and the site's certificate appear shortly after the load.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        if let Ok(pem) = std::fs::read(caddy.root_ca()) {
            let client = reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .resolve(NAME, SocketAddr::from(([127, 0, 0, 1], https_port)))
                .local_address(CLIENT_IP.parse::<IpAddr>().unwrap())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            if client
                .get(format!("https://{NAME}:{https_port}/login"))
                .send()
                .await
                .is_ok()
            {
                break client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS through caddy: {}",
            caddy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every request of the tiny browser now goes through Caddy over HTTPS.
    app.client = client;
    app.http_base = format!("https://{NAME}:{https_port}");

    let mut web = WebClient::new(&app);
    let resp = web.get("/login").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let hsts = resp
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(hsts.contains("max-age="), "HSTS over HTTPS: {hsts:?}");

    let user = app.with_user().await;
    // A spoofed X-Forwarded-For from the client: Caddy does not trust it and
    // replaces it with the real peer, so the server must record 127.0.0.3.
    let (status, html) = web.get_text("/login").await;
    assert_eq!(status, StatusCode::OK);
    let token = crate::web_support::csrf_from(&html);
    let resp = app
        .client
        .post(app.url("/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .header(reqwest::header::ORIGIN, app.origin())
        .header(
            reqwest::header::COOKIE,
            web.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = set_cookies(resp.headers(), SESSION);
    assert_eq!(session.len(), 1, "{:?}", resp.headers());
    assert!(session[0].contains("Secure"), "{}", session[0]);
    assert!(session[0].contains("HttpOnly"), "{}", session[0]);

    use sqlx::Row;
    let addrs: Vec<String> = sqlx::query("SELECT client_addr FROM sessions")
        .fetch_all(app.core.store().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.try_get::<Option<String>, _>(0)
                .unwrap()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        addrs,
        [CLIENT_IP],
        "the client's address through the trusted proxy, not Caddy's and not the spoofed one"
    );
}

/// DATA-1, from outside: testssl.sh (Debian's, installed by scripts/install-deps.sh)
/// against the control plane behind Caddy, configured as docs/DEPLOY.md says. No
/// protocol below TLS 1.2, no weak cipher category, no finding of severity MEDIUM or
/// worse. Caddy's TLS does not depend on the database: run once, on SQLite.
#[tokio::test]
async fn data_1_testssl_finds_no_weak_tls_on_the_control_plane_behind_caddy_sqlite_only() {
    clawy_testkit::db::require_backend(clawy_testkit::db::TestBackend::Sqlite);
    let https_port = free_port().unwrap();
    let app = TestApp::builder()
        .base_url(&format!("https://{NAME}:{https_port}"))
        .start()
        .await;
    let caddy = Caddy::start().await.unwrap();
    let (status, body) = caddy
        .admin_request(
            "POST",
            "/load",
            &serde_json::to_vec(&caddy_config(&caddy, https_port, app.addr)).unwrap(),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}\n{}", caddy.log());
    // Wait for the site's certificate (any TLS answer with the name).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-brief", "-connect"])
            .arg(format!("127.0.0.1:{https_port}"))
            .args(["-servername", NAME])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("Protocol version") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS from caddy: {}",
            caddy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("testssl.json");
    let out = std::process::Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--protocols",
            "--std",
            "--server-preference",
            "--ip",
            "127.0.0.1",
            "--jsonfile",
        ])
        .arg(&json)
        .arg(format!("https://{NAME}:{https_port}"))
        .output()
        .expect("testssl is installed by scripts/install-deps.sh");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    clawy_testkit::scans::assert_tls_strong(&findings, "control plane behind Caddy");
}
