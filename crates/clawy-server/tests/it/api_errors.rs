//! The one JSON error shape, for every way a request can fail (snapshots keep the
//! messages deliberate).

use crate::common::{TestApp, json};
use clawy_core::actor::Tier;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn unknown_api_route_is_json_404() {
    let app = TestApp::start().await;
    let resp = app
        .request(Method::GET, "/api/v1/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    insta::assert_json_snapshot!("unknown_route_404", json(resp).await);
}

#[tokio::test]
async fn wrong_method_is_json_405_with_allow() {
    let app = TestApp::start().await;
    let resp = app.request(Method::PUT, "/api/v1/me").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        resp.headers().get("allow").is_some(),
        "405 keeps the Allow header"
    );
    insta::assert_json_snapshot!("wrong_method_405", json(resp).await);
}

#[tokio::test]
async fn page_404_is_html_not_json() {
    let app = TestApp::start().await;
    let resp = app
        .request(Method::GET, "/no-such-page")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn anonymous_is_401_with_actionable_message() {
    let app = TestApp::start().await;
    let resp = app.request(Method::GET, "/api/v1/me").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("www-authenticate").is_some());
    insta::assert_json_snapshot!("anonymous_401", json(resp).await);
}

#[tokio::test]
async fn malformed_authorization_header_is_401() {
    let app = TestApp::start().await;
    let resp = app
        .request(Method::GET, "/api/v1/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    insta::assert_json_snapshot!("basic_auth_401", json(resp).await);
}

#[tokio::test]
async fn json_body_rejections_are_json_and_actionable() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, key) = app.with_api_key(&user, Tier::Admin).await;

    // Not JSON at all.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "invalid_json");

    // Missing field.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    insta::assert_json_snapshot!("missing_field_422", json(resp).await);

    // Unknown tier.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "x", "tier": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json(resp).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tier"),
        "{body}"
    );

    // Wrong content type.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body(r#"{"name":"x","tier":"read"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    insta::assert_json_snapshot!("wrong_content_type_415", json(resp).await);
}

#[tokio::test]
async fn body_over_64k_is_json_413() {
    let app = TestApp::start().await;
    let big = "x".repeat(70 * 1024);
    let resp = app
        .request(Method::POST, "/api/v1/security-reports")
        .json(&serde_json::json!({"title": "big", "details": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The unread rest of the body makes the connection unusable: clients are told.
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    insta::assert_json_snapshot!("body_too_large_413", json(resp).await);
}

#[tokio::test]
async fn body_over_64k_without_content_length_is_json_413() {
    // Chunked upload, no Content-Length: only the streaming limit can catch it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start().await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/security-reports HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..80 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close early
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"payload_too_large\""), "{text}");
}

#[tokio::test]
async fn bad_query_string_is_json_400() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, key) = app.with_api_key(&user, Tier::Read).await;
    let resp = app.get_with_key("/api/v1/audit?limit=lots", &key).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "invalid_query");
    let resp = app.get_with_key("/api/v1/audit?limit=0", &key).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json(resp).await;
    assert_eq!(body["error"]["field"], "limit");
}

#[tokio::test]
async fn internal_error_is_generic_500_with_detail_only_in_logs() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, key) = app.with_api_key(&user, Tier::Read).await;
    // Break the database under the running server.
    app.core.store().close().await;
    let resp = app.get_with_key("/api/v1/me", &key).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "internal");
    let msg = body["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        !msg.contains("pool") && !msg.contains("sqlx") && !msg.contains("database"),
        "{msg}"
    );
    insta::assert_json_snapshot!("internal_500", body);
    // The detail went to the log (and the key did not).
    let logs = crate::common::captured_logs();
    assert!(logs.contains("request failed"), "500 detail logged");
    assert!(!logs.contains(&key));
}
