//! `/healthz` and `/metrics` (operators or loopback only).

use crate::common::{TestApp, json};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn healthz_checks_the_database() {
    let app = TestApp::start().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    // With the database gone, it says so.
    app.core.store().close().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_for_loopback_counts_requests() {
    let app = TestApp::start().await;
    let _ = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            r#"clawy_http_requests_total{method="GET",route="/api/v1/me",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("clawy_login_failures_total 0"), "{text}");

    // A failed login (through core, as the login page does) shows up, from the audit log.
    let user = app.with_user().await;
    let _ = app
        .core
        .accounts()
        .authenticate(
            &user.email,
            &clawy_core::SecretString::from("wrong-password-123".to_owned()),
            &clawy_core::Actor::anonymous(TestApp::client_info()),
        )
        .await
        .unwrap_err();
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("clawy_login_failures_total 1"), "{text}");
}

#[tokio::test]
async fn metrics_not_local_when_forwarded_by_a_local_proxy() {
    // Caddy on the same host without `trusted_proxies`: the peer is loopback, but the
    // request came from outside.
    let app = TestApp::start().await;
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ] {
        let resp = app
            .request(Method::GET, "/metrics")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{name}");
    }
}

#[tokio::test]
async fn metrics_hidden_from_remote_non_operators() {
    // Behind a trusted proxy, the client is the X-Forwarded-For address (not loopback).
    let app = TestApp::builder()
        .config(|c| {
            c.trusted_proxies = vec![clawy_core::config::IpNet::parse("127.0.0.1").unwrap()]
        })
        .start()
        .await;
    let remote = |req: reqwest::RequestBuilder| req.header("x-forwarded-for", "203.0.113.9");
    let user = app.with_user().await;
    let op = app.with_operator().await;
    let (_, user_admin) = app.with_api_key(&user, Tier::Admin).await;
    let (_, op_read) = app.with_api_key(&op, Tier::Read).await;
    let (_, op_admin) = app.with_api_key(&op, Tier::Admin).await;

    let anon = remote(app.request(Method::GET, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::NOT_FOUND);
    // Same answer as a page that does not exist.
    let missing = remote(app.request(Method::GET, "/no-such-thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.text().await.unwrap(), missing.text().await.unwrap());

    for (key, want) in [
        (&user_admin, StatusCode::NOT_FOUND),
        (&op_read, StatusCode::NOT_FOUND),
        (&op_admin, StatusCode::OK),
    ] {
        let resp = remote(app.request(Method::GET, "/metrics").bearer_auth(key))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
    let s = app.login_session(&op).await;
    let resp = remote(
        app.request(Method::GET, "/metrics")
            .header("cookie", &s.cookie),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
