//! `/api/v1/api-keys` (AUTH-2): shown once, hashed, regenerate kills the old secret at
//! once, no tier escalation, other users' keys are 404.

use crate::common::{TestApp, json};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};

async fn create(app: &TestApp, key: &str, body: serde_json::Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/api-keys")
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn auth_2_key_is_shown_once_and_never_listed() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let resp = create(
        &app,
        &admin,
        serde_json::json!({"name": "ci", "tier": "read"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = json(resp).await;
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("clawy_r_"), "{secret}");
    assert!(clawy_core::api_keys::verify_checksum(&secret));
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    let id = created["id"].as_str().unwrap();
    assert!(!id.is_empty());

    // The new key works, with its tier.
    let me = json(app.get_with_key("/api/v1/me", &secret).await).await;
    assert_eq!(me["tier"], "read");

    // Never again: not in the list, not anywhere in its body.
    let resp = app.get_with_key("/api/v1/api-keys", &admin).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret));
    assert!(
        !text.contains(&secret[12..]),
        "no part of the secret after the prefix"
    );
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let listed = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert!(listed.get("key").is_none());
    assert_eq!(listed["name"], "ci");
}

#[tokio::test]
async fn auth_2_regenerate_kills_old_secret_at_once() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let (id, old) = app.with_api_key(&user, Tier::Manage).await;
    assert_eq!(
        app.get_with_key("/api/v1/me", &old).await.status(),
        StatusCode::OK
    );

    let resp = app
        .request(Method::POST, &format!("/api/v1/api-keys/{id}/regenerate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["tier"], "manage");
    let new = body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    assert_eq!(
        app.get_with_key("/api/v1/me", &old).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_with_key("/api/v1/me", &new).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn auth_2_key_can_regenerate_itself() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (id, admin) = app.with_api_key(&user, Tier::Admin).await;
    let resp = app
        .request(Method::POST, &format!("/api/v1/api-keys/{id}/regenerate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new = json(resp).await["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get_with_key("/api/v1/me", &admin).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_with_key("/api/v1/me", &new).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn auth_2_tier_escalation_is_refused() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, read) = app.with_api_key(&user, Tier::Read).await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    for (key, held) in [(&read, "read"), (&manage, "manage")] {
        for wanted in ["read", "manage", "admin"] {
            let resp = create(&app, key, serde_json::json!({"name": "x", "tier": wanted})).await;
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{held} key creating {wanted}"
            );
            let body = json(resp).await;
            assert_eq!(body["error"]["code"], "insufficient_tier");
            assert!(body["error"]["message"].as_str().unwrap().contains(held));
        }
    }
    // Nothing was created.
    assert_eq!(app.core.api_keys().list(user.id()).await.unwrap().len(), 2);
    // And the domain rule itself: a manage key can never mint an admin key.
    let err = app
        .core
        .api_keys()
        .create(
            user.id(),
            "x",
            Tier::Admin,
            None,
            Some(Tier::Manage),
            &clawy_core::Actor::system(),
        )
        .await
        .unwrap_err();
    let api_err = clawy_server::error::ApiError::from(err);
    assert_eq!(api_err.status(), StatusCode::FORBIDDEN);
    assert_eq!(api_err.code(), "tier_too_high");
}

#[tokio::test]
async fn auth_2_revoke_then_gone() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let (id, victim) = app.with_api_key(&user, Tier::Read).await;
    let del = |id: String| {
        app.request(Method::DELETE, &format!("/api/v1/api-keys/{id}"))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(
        del(id.clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_with_key("/api/v1/me", &victim).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = del(id).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(resp).await["error"]["code"], "not_found");
}

#[tokio::test]
async fn another_users_key_is_404_not_403() {
    let app = TestApp::start().await;
    let alice = app.with_user().await;
    let mallory = app.with_user().await;
    let (alice_key_id, alice_key) = app.with_api_key(&alice, Tier::Read).await;
    let (_, mallory_admin) = app.with_api_key(&mallory, Tier::Admin).await;
    let resp = app
        .request(Method::DELETE, &format!("/api/v1/api-keys/{alice_key_id}"))
        .bearer_auth(&mallory_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app
        .request(
            Method::POST,
            &format!("/api/v1/api-keys/{alice_key_id}/regenerate"),
        )
        .bearer_auth(&mallory_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Unknown ids look exactly the same.
    let unknown = app
        .request(
            Method::DELETE,
            "/api/v1/api-keys/00000000-0000-0000-0000-000000000000",
        )
        .bearer_auth(&mallory_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(json(unknown).await, json(resp).await);
    assert_eq!(
        app.get_with_key("/api/v1/me", &alice_key).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn expiry_in_the_past_is_422_naming_the_field() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let past = (app.core.now() - chrono::Duration::hours(1)).to_rfc3339();
    let resp = create(
        &app,
        &admin,
        serde_json::json!({"name": "x", "tier": "read", "expires_at": past}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json(resp).await;
    assert_eq!(body["error"]["field"], "expires_at");
    insta::assert_json_snapshot!("expiry_in_past_422", body);
}

#[tokio::test]
async fn auth2_session_needs_the_password_for_an_admin_key() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let s = app.login_session(&user).await;
    let post = |body: serde_json::Value| {
        app.request(Method::POST, "/api/v1/api-keys")
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .json(&body)
            .send()
    };
    let resp = post(serde_json::json!({"name": "x", "tier": "admin"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(resp).await["error"]["code"], "password_required");
    let resp =
        post(serde_json::json!({"name": "x", "tier": "admin", "password": "Wrong-Guess-0000"}))
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = post(serde_json::json!({"name": "x", "tier": "admin", "password": user.password}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = json(resp).await["id"].as_str().unwrap().to_owned();
    // Regenerating it from a session is refused (the form with the password is the way).
    let resp = app
        .request(Method::POST, &format!("/api/v1/api-keys/{id}/regenerate"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // An admin key needs no password (it is the credential), and lower tiers from a
    // session need none either.
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let resp = create(
        &app,
        &admin,
        serde_json::json!({"name": "y", "tier": "admin"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = post(serde_json::json!({"name": "z", "tier": "manage"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}
