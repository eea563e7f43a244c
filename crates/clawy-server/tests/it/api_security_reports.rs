//! `POST /api/v1/security-reports` (REPORT-1): no auth, tracking id, rate limit per
//! address, security contact notified by mail.

use crate::common::{TestApp, json};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn report_1_report_is_stored_acknowledged_and_mailed() {
    let app = TestApp::builder()
        .with_smtp()
        .config(|c| c.security_contact = "security@clawy.test".into())
        .start()
        .await;
    let resp = app
        .request(Method::POST, "/api/v1/security-reports")
        .json(&serde_json::json!({
            "contact": "finder@example.test",
            "title": "XSS in key name",
            "details": "Steps: create a key named <script>…"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = json(resp).await;
    let tracking = body["tracking_id"].as_str().unwrap().to_owned();
    assert!(tracking.starts_with("CLAWY-"), "{tracking}");
    assert!(body["message"].as_str().unwrap().contains(&tracking));

    let op = app.with_operator().await;
    let stored = app.core.reports().list(&op.user).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].tracking_id, tracking);
    assert_eq!(stored[0].client_addr.as_deref(), Some("127.0.0.1"));

    let mail = app
        .smtp
        .as_ref()
        .unwrap()
        .wait_for_containing(&tracking)
        .await
        .unwrap();
    assert!(mail.to.contains("security@clawy.test"), "{}", mail.to);
}

#[tokio::test]
async fn report_1_submissions_are_rate_limited_per_address() {
    let app = TestApp::builder()
        .config(|c| c.throttle.reports_per_hour = 2)
        .start()
        .await;
    let send = || {
        app.request(Method::POST, "/api/v1/security-reports")
            .json(&serde_json::json!({"title": "t", "details": "d"}))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600, "{retry}");
    let body = json(resp).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Try again")
    );
    // After the hour, accepted again (injected clock, no sleep).
    app.clock.advance(std::time::Duration::from_secs(retry + 1));
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn report_1_invalid_report_names_the_problem() {
    let app = TestApp::start().await;
    let resp = app
        .request(Method::POST, "/api/v1/security-reports")
        .json(&serde_json::json!({"title": "", "details": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    insta::assert_json_snapshot!("report_empty_title_422", json(resp).await);
}
