//! `GET /api/v1/me` and how callers authenticate (AUTH-2, AUTH-3).

use crate::common::{TestApp, json};
use clawy_core::api_keys::Tier;
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[tokio::test]
async fn auth2_me_with_key_reports_tier_and_key() {
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
async fn auth3_me_with_session_cookie_has_admin_tier() {
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
async fn auth2_revoked_key_is_401_at_once() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (id, key) = app.with_api_key(&user, Tier::Read).await;
    assert_eq!(
        app.get_with_key("/api/v1/me", &key).await.status(),
        StatusCode::OK
    );
    app.core
        .api_keys()
        .revoke(user.id(), &id, &clawy_core::Caller::system())
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
async fn auth2_expired_key_is_401_by_injected_clock() {
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
async fn auth3_ended_session_cookie_is_401() {
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
async fn auth5_failed_key_auth_is_throttled_per_address() {
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
    // The address is refused even with a good key until the window passes.
    assert_eq!(
        app.get_with_key("/api/v1/me", &good).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.clock.advance(Duration::from_secs(retry + 1));
    assert_eq!(
        app.get_with_key("/api/v1/me", &good).await.status(),
        StatusCode::OK
    );
}
