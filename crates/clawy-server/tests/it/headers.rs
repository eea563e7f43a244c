//! Every response carries the security headers; HSTS only for an https base URL.

use crate::common::TestApp;
use clawy_core::actor::Tier;
use reqwest::Method;

const PATHS: &[(&str, &str)] = &[
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/openapi.json"),
    ("PUT", "/api/v1/me"),
    ("GET", "/api/v1/nope"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/login"),
    ("GET", "/security"),
    ("GET", "/no-such-page"),
];

fn check_common(resp: &reqwest::Response, what: &str) {
    let h = resp.headers();
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    let rp = h["referrer-policy"].to_str().unwrap();
    // Nothing leaves for other sites; our own form posts keep their Origin (AUTH-3).
    assert_eq!(rp, "same-origin", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert!(h.get("permissions-policy").is_some(), "{what}");
}

#[tokio::test]
async fn every_response_has_security_headers_and_no_hsts_over_http() {
    let app = TestApp::start().await;
    for (method, path) in PATHS {
        let resp = app
            .request(method.parse().unwrap(), path)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path} → {}", resp.status());
        check_common(&resp, &what);
        assert!(
            resp.headers().get("strict-transport-security").is_none(),
            "{what}: HSTS over http"
        );
    }
    // Also on a 413 from the body limit and on an authenticated success.
    let resp = app
        .request(Method::POST, "/api/v1/security-reports")
        .header("content-type", "application/json")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    check_common(&resp, "413");
    let user = app.with_user().await;
    let (_, key) = app.with_api_key(&user, Tier::Read).await;
    let resp = app.get_with_key("/api/v1/me", &key).await;
    assert_eq!(resp.status(), 200);
    check_common(&resp, "200 /me");
}

#[tokio::test]
async fn hsts_only_when_base_url_is_https() {
    let app = TestApp::builder()
        .base_url("https://clawy.example")
        .start()
        .await;
    for (method, path) in PATHS {
        let resp = app
            .request(method.parse().unwrap(), path)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path} → {}", resp.status());
        check_common(&resp, &what);
        let hsts = resp
            .headers()
            .get("strict-transport-security")
            .unwrap_or_else(|| panic!("{what}: no HSTS"))
            .to_str()
            .unwrap();
        assert!(hsts.contains("max-age=63072000"), "{what}: {hsts}");
    }
}
