//! `GET /api/v1/audit` (ACCESS-3 groundwork): own events only, newest first, paged.

use crate::common::{ED25519_PUB, TestApp, json};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn access_3_audit_lists_own_events_newest_first_without_secrets() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let other = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    let (_, other_admin) = app.with_api_key(&other, Tier::Admin).await;

    let created = json(
        app.request(Method::POST, "/api/v1/api-keys")
            .bearer_auth(&admin)
            .json(&serde_json::json!({"name": "deploy", "tier": "read"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let resp = app
        .request(Method::POST, "/api/v1/ssh-keys")
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "laptop", "public_key": ED25519_PUB}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let resp = app.get_with_key("/api/v1/audit", &admin).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&secret), "audit never carries a key");
    assert!(!text.contains(&admin));
    let page: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "ssh_key_added", "{kinds:?}");
    assert_eq!(kinds[1], "api_key_created", "{kinds:?}");
    assert!(kinds.contains(&"user_created"), "{kinds:?}");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(events[0]["actor"].as_str().unwrap().starts_with("api_key:"));
    assert_eq!(events[0]["client_addr"], "127.0.0.1");

    // The other account sees only its own.
    let theirs = json(app.get_with_key("/api/v1/audit", &other_admin).await).await;
    let theirs = theirs["events"].as_array().unwrap();
    assert!(!theirs.is_empty());
    for e in theirs {
        assert_ne!(e["kind"], "ssh_key_added");
        assert!(
            !e["detail"].as_str().unwrap_or("").contains("deploy"),
            "{e}"
        );
    }
}

/// The one pagination rule on the audit log (the cursor was `before`/`next_before`
/// before every list shared the rule; the assertions are the same).
#[tokio::test]
async fn audit_pages_with_limit_and_before() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, admin) = app.with_api_key(&user, Tier::Admin).await;
    for i in 0..5 {
        let resp = app
            .request(Method::POST, "/api/v1/api-keys")
            .bearer_auth(&admin)
            .json(&serde_json::json!({"name": format!("k{i}"), "tier": "read"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let first = json(app.get_with_key("/api/v1/audit?limit=2", &admin).await).await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let cursor: i64 = first["next_after"].as_str().unwrap().parse().unwrap();
    assert_eq!(cursor, first["events"][1]["id"].as_i64().unwrap());
    let second = json(
        app.get_with_key(&format!("/api/v1/audit?limit=2&after={cursor}"), &admin)
            .await,
    )
    .await;
    let second_ids: Vec<i64> = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(second_ids.len(), 2);
    assert!(second_ids.iter().all(|id| *id < cursor));
    // Past the end: empty page, no cursor.
    let end = json(app.get_with_key("/api/v1/audit?after=1", &admin).await).await;
    assert!(end["events"].as_array().unwrap().is_empty());
    assert!(end["next_after"].is_null());
    // The same rule on every list: a limit outside 1–500 is refused, not clamped.
    for path in [
        "/api/v1/audit",
        "/api/v1/instances",
        "/api/v1/ssh-keys",
        "/api/v1/api-keys",
        "/api/v1/plans",
        "/api/v1/regions",
    ] {
        let resp = app.get_with_key(&format!("{path}?limit=501"), &admin).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(json(resp).await["error"]["field"], "limit", "{path}");
    }
}
