//! `GET /api/v1/me` and how callers authenticate (AUTH-2, AUTH-3).

use crate::common::{TestApp, json};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[tokio::test]
async fn auth_2_me_with_key_reports_tier_and_key() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (id, key) = app.with_api_key(&user, Tier::Manage).await;
    let resp = app.get_with_key("/api/v1/me", &key).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["email"], user.email);
    assert_eq!(body["id"], user.id());
    assert_eq!(body["auth"], "api_key");
    assert_eq!(body["tier"], "manage");
    assert_eq!(body["api_key_id"], id);
    assert_eq!(body["is_operator"], false);
}

#[tokio::test]
async fn auth_3_me_with_session_cookie_has_admin_tier() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let s = app.login_session(&user).await;
    let resp = app
        .request(Method::GET, "/api/v1/me")
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["auth"], "session");
    assert_eq!(body["tier"], "admin");
    assert!(body.get("api_key_id").is_none());
}

#[tokio::test]
async fn auth_2_revoked_key_is_401_at_once() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (id, key) = app.with_api_key(&user, Tier::Read).await;
    assert_eq!(
        app.get_with_key("/api/v1/me", &key).await.status(),
        StatusCode::OK
    );
    app.core
        .api_keys()
        .revoke(user.id(), &id, &clawy_core::Actor::system())
        .await
        .unwrap();
    let resp = app.get_with_key("/api/v1/me", &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = json(resp).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn auth_2_expired_key_is_401_by_injected_clock() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let expires = app.core.now() + chrono::Duration::minutes(10);
    let (_, key) = app.with_expiring_api_key(&user, Tier::Read, expires).await;
    assert_eq!(
        app.get_with_key("/api/v1/me", &key).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(11 * 60));
    let resp = app.get_with_key("/api/v1/me", &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = json(resp).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn auth_3_ended_session_cookie_is_401() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let s = app.login_session(&user).await;
    // Idle timeout is 30 min by default.
    app.clock.advance(Duration::from_secs(31 * 60));
    let resp = app
        .request(Method::GET, "/api/v1/me")
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_5_failed_key_auth_is_throttled_per_address_but_valid_keys_pass() {
    let app = TestApp::builder()
        .config(|c| c.throttle.api_key_ip_max_failures = 3)
        .start()
        .await;
    let user = app.with_user().await;
    let (_, good) = app.with_api_key(&user, Tier::Read).await;
    let bogus = "clawy_r_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000";
    for _ in 0..3 {
        let resp = app.get_with_key("/api/v1/me", bogus).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = app.get_with_key("/api/v1/me", bogus).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // A valid key from the same address is never refused (other clients' failures
    // behind one NAT must not lock its owner out): only failures are throttled.
    for _ in 0..3 {
        assert_eq!(
            app.get_with_key("/api/v1/me", &good).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.get_with_key("/api/v1/me", bogus).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.clock.advance(Duration::from_secs(retry + 1));
    assert_eq!(
        app.get_with_key("/api/v1/me", bogus).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn auth_5_x_forwarded_for_is_ignored_without_trusted_proxies() {
    // A client cannot escape the per-address counter by inventing addresses.
    let app = TestApp::builder()
        .config(|c| c.throttle.api_key_ip_max_failures = 2)
        .start()
        .await;
    let bogus = "clawy_r_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000";
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = app
            .request(Method::GET, "/api/v1/me")
            .bearer_auth(bogus)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);
}

#[tokio::test]
async fn auth_5_trusted_proxy_forwards_the_client_address() {
    let app = TestApp::builder()
        .config(|c| {
            c.throttle.api_key_ip_max_failures = 2;
            c.trusted_proxies = vec![clawy_core::config::IpNet::parse("127.0.0.0/8").unwrap()];
        })
        .start()
        .await;
    let bogus = "clawy_r_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000";
    let attempt = |xff: &'static str| {
        app.request(Method::GET, "/api/v1/me")
            .bearer_auth(bogus)
            .header("x-forwarded-for", xff)
            .send()
    };
    // The attacker's address is the right-most untrusted entry; a forged left part
    // does not change it.
    assert_eq!(attempt("203.0.113.5").await.unwrap().status(), 401);
    assert_eq!(
        attempt("10.9.9.9, 203.0.113.5").await.unwrap().status(),
        401
    );
    assert_eq!(attempt("203.0.113.5").await.unwrap().status(), 429);
    // Another client behind the same proxy is not affected.
    assert_eq!(attempt("203.0.113.6").await.unwrap().status(), 401);
    // The audit log records the forwarded address.
    let user = app.with_user().await;
    let (_, key) = app.with_api_key(&user, Tier::Admin).await;
    let resp = app
        .request(Method::POST, "/api/v1/ssh-keys")
        .bearer_auth(&key)
        .header("x-forwarded-for", "192.0.2.77")
        .json(&serde_json::json!({"name": "k", "public_key": crate::common::ED25519_PUB}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(user.id()), 1, None)
        .await
        .unwrap();
    assert_eq!(events[0].client_addr.as_deref(), Some("192.0.2.77"));
}
