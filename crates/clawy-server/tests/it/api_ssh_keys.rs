//! `/api/v1/ssh-keys` (AUTH-4 groundwork): validation messages people can act on.

use crate::common::{ED25519_PUB, ED25519_PUB_2, RSA_2048_PUB, TestApp, json, pasted_private_key};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};

async fn add(app: &TestApp, key: &str, name: &str, public_key: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/ssh-keys")
        .bearer_auth(key)
        .json(&serde_json::json!({"name": name, "public_key": public_key}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn add_list_delete_ssh_key() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    let (_, read) = app.with_api_key(&user, Tier::Read).await;

    let resp = add(&app, &manage, "laptop", ED25519_PUB).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = json(resp).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["algorithm"], "ssh-ed25519");
    assert!(
        created["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );

    let list = json(app.get_with_key("/api/v1/ssh-keys", &read).await).await;
    assert_eq!(list["ssh_keys"].as_array().unwrap().len(), 1);
    assert_eq!(list["ssh_keys"][0]["id"], id.as_str());

    let resp = add(&app, &manage, "again", ED25519_PUB).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    let resp = app
        .request(Method::DELETE, &format!("/api/v1/ssh-keys/{id}"))
        .bearer_auth(&manage)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let list = json(app.get_with_key("/api/v1/ssh-keys", &read).await).await;
    assert!(list["ssh_keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn pasted_private_key_is_refused_with_rotate_advice() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    let resp = add(&app, &manage, "oops", &pasted_private_key()).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json(resp).await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("PRIVATE key"), "{msg}");
    assert!(msg.contains("new key pair"), "{msg}");
    assert_eq!(body["error"]["field"], "public_key");
    insta::assert_json_snapshot!("private_key_422", body);
    // And nothing of it was stored or echoed.
    assert!(
        app.core
            .ssh_keys()
            .list(user.id())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn weak_or_garbage_keys_are_refused_with_reasons() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;

    let resp = add(&app, &manage, "old rsa", RSA_2048_PUB).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json(resp).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("3072"),
        "{body}"
    );

    let resp = add(&app, &manage, "junk", "hello world").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    insta::assert_json_snapshot!("garbage_key_422", json(resp).await);

    let two = format!("{ED25519_PUB}\n{ED25519_PUB_2}");
    let resp = add(&app, &manage, "two", &two).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let resp = add(&app, &manage, &"n".repeat(65), ED25519_PUB).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json(resp).await["error"]["field"], "name");
}

#[tokio::test]
async fn another_users_ssh_key_is_404() {
    let app = TestApp::start().await;
    let alice = app.with_user().await;
    let mallory = app.with_user().await;
    let (_, alice_manage) = app.with_api_key(&alice, Tier::Manage).await;
    let (_, mallory_admin) = app.with_api_key(&mallory, Tier::Admin).await;
    let id = json(add(&app, &alice_manage, "laptop", ED25519_PUB).await).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .request(Method::DELETE, &format!("/api/v1/ssh-keys/{id}"))
        .bearer_auth(&mallory_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let list = json(app.get_with_key("/api/v1/ssh-keys", &mallory_admin).await).await;
    assert!(
        list["ssh_keys"].as_array().unwrap().is_empty(),
        "lists are per account"
    );
    assert_eq!(app.core.ssh_keys().list(alice.id()).await.unwrap().len(), 1);
}
