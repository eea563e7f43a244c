//! AUTH-1 / AUTH-2: a full account flow, then a search of everything this test binary
//! logged (debug level, all crates) for every secret the flow created.

use crate::common::{TestApp, captured_logs, json, strong_password};
use clawy_core::Actor;
use clawy_core::SecretString;
use reqwest::{Method, StatusCode};

/// Every secret a full flow handled.
#[derive(Debug, Default)]
pub struct FlowSecrets {
    pub passwords: Vec<String>,
    pub session_tokens: Vec<String>,
    pub csrf_tokens: Vec<String>,
    pub api_keys: Vec<String>,
    pub reset_tokens: Vec<String>,
}

impl FlowSecrets {
    pub fn all(&self) -> Vec<(&'static str, &String)> {
        let mut v = Vec::new();
        v.extend(self.passwords.iter().map(|s| ("password", s)));
        v.extend(self.session_tokens.iter().map(|s| ("session token", s)));
        v.extend(self.csrf_tokens.iter().map(|s| ("csrf token", s)));
        v.extend(self.api_keys.iter().map(|s| ("api key", s)));
        v.extend(self.reset_tokens.iter().map(|s| ("reset token", s)));
        v
    }
}

/// Signup, failed and good login, API key create (by session) and regenerate (by key),
/// failed key use, password change, password reset through the mailed link.
pub async fn full_flow(app: &TestApp) -> FlowSecrets {
    let mut secrets = FlowSecrets::default();
    let client = TestApp::client_info();
    let email = format!(
        "flow-{}@example.test",
        crate::common::random_suffix(8).to_lowercase()
    );
    let p1 = strong_password();
    secrets.passwords.push(p1.clone());
    let user = app
        .core
        .accounts()
        .signup(
            &email,
            &SecretString::from(p1.clone()),
            &Actor::anonymous(client.clone()),
        )
        .await
        .unwrap();

    // A failed login with a wrong password, then the right one.
    let wrong = strong_password();
    secrets.passwords.push(wrong.clone());
    assert!(
        app.core
            .accounts()
            .authenticate(
                &email,
                &SecretString::from(wrong),
                &Actor::anonymous(client.clone())
            )
            .await
            .is_err()
    );
    let user = app
        .core
        .accounts()
        .authenticate(
            &email,
            &SecretString::from(p1.clone()),
            &Actor::anonymous(client.clone()),
        )
        .await
        .map(|_| user)
        .unwrap();
    let s = app.core.sessions().create(&user, &client).await.unwrap();
    let cookie = format!(
        "{}={}",
        clawy_core::sessions::SESSION_COOKIE,
        s.token.expose()
    );
    secrets.session_tokens.push(s.token.expose().to_owned());
    secrets.csrf_tokens.push(s.csrf_token.clone());

    // The session uses the API: create an admin key.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .header("cookie", &cookie)
        .header("x-csrf-token", &s.csrf_token)
        .header("origin", app.origin())
        // AUTH-2: a session re-authenticates for an admin key (the password must not
        // reach a log either).
        .json(&serde_json::json!({"name": "flow", "tier": "admin", "password": p1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = json(resp).await;
    let k1 = created["key"].as_str().unwrap().to_owned();
    secrets.api_keys.push(k1.clone());
    let id = created["id"].as_str().unwrap().to_owned();

    // The key regenerates itself.
    let resp = app
        .request(Method::POST, &format!("/api/v1/api-keys/{id}/regenerate"))
        .bearer_auth(&k1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let k2 = json(resp).await["key"].as_str().unwrap().to_owned();
    secrets.api_keys.push(k2.clone());
    assert_eq!(
        app.get_with_key("/api/v1/me", &k1).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_with_key("/api/v1/me", &k2).await.status(),
        StatusCode::OK
    );

    // A session-authenticated read, and a CSRF failure (logged as a rejection).
    let resp = app
        .request(Method::DELETE, &format!("/api/v1/api-keys/{id}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Password change (ends other sessions).
    let p2 = strong_password();
    secrets.passwords.push(p2.clone());
    app.core
        .accounts()
        .change_password(
            user.id.as_str(),
            &SecretString::from(p1.clone()),
            &SecretString::from(p2.clone()),
            None,
            &user.actor(client.clone()),
        )
        .await
        .unwrap();

    // Password reset by the mailed link.
    app.core
        .accounts()
        .request_password_reset(&email, &Actor::anonymous(client.clone()))
        .await
        .unwrap();
    let mail = app
        .smtp
        .as_ref()
        .expect("full_flow needs TestApp::builder().with_smtp()")
        .wait_for_containing("reset-password?token=")
        .await
        .unwrap();
    let token = mail
        .body
        .split("reset-password?token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    secrets.reset_tokens.push(token.clone());
    // The link is opened (a GET with the token in the query string) …
    let _ = app
        .client
        .get(app.url(&format!("/reset-password?token={token}")))
        .send()
        .await
        .unwrap();
    // … and used.
    let p3 = strong_password();
    secrets.passwords.push(p3.clone());
    app.core
        .accounts()
        .complete_password_reset(
            &SecretString::from(token),
            &SecretString::from(p3.clone()),
            &Actor::anonymous(client.clone()),
        )
        .await
        .unwrap();
    // Signup, login and the reset link through the real pages as well (form posts with
    // the double-submit CSRF token a browser would carry).
    let page_email = format!(
        "page-{}@example.test",
        crate::common::random_suffix(8).to_lowercase()
    );
    let page_password = strong_password();
    secrets.passwords.push(page_password.clone());
    let csrf = crate::common::random_suffix(40);
    secrets.csrf_tokens.push(csrf.clone());
    let form_post = |path: &'static str, form: Vec<(&'static str, String)>| {
        app.request(Method::POST, path)
            .header("cookie", format!("__Host-clawy_csrf={csrf}"))
            .header("origin", app.origin())
            .form(&form)
            .send()
    };
    let creds = vec![
        ("csrf_token", csrf.clone()),
        ("email", page_email.clone()),
        ("password", page_password.clone()),
        ("password_confirm", page_password.clone()),
    ];
    let resp = form_post("/signup", creds.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "signup page");
    let resp = form_post("/login", creds).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login page");
    for cookie in resp.headers().get_all("set-cookie") {
        let c = cookie.to_str().unwrap();
        if let Some(v) = c.strip_prefix(&format!("{}=", clawy_core::sessions::SESSION_COOKIE)) {
            secrets
                .session_tokens
                .push(v.split(';').next().unwrap().to_owned());
        }
    }
    assert_eq!(
        secrets.session_tokens.len(),
        2,
        "the login page set a session cookie"
    );

    // The old session is dead after the reset.
    let resp = app
        .request(Method::GET, "/api/v1/me")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    secrets
}

#[tokio::test]
async fn auth_1_auth_2_no_secret_in_logs() {
    let app = TestApp::builder().with_smtp().start().await;
    let secrets = full_flow(&app).await;
    // Background mail senders log after the sink has the mail: wait (bounded) until
    // every mail this test's sink received has its "mail sent" line, so the scan
    // below covers everything the flow logged, however late.
    let smtp = app.smtp.as_ref().unwrap();
    let mails = smtp.messages();
    assert!(!mails.is_empty(), "the flow sends mail");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logs = loop {
        let logs = captured_logs();
        let unlogged: Vec<&str> = mails
            .iter()
            .map(|m| m.to.trim_matches(|c| c == '<' || c == '>'))
            .filter(|to| {
                !logs
                    .lines()
                    .any(|l| l.contains("mail sent") && l.contains(*to))
            })
            .collect();
        if unlogged.is_empty() {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no \"mail sent\" line for {unlogged:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        logs.contains("request"),
        "log capture is working: {}",
        logs.len()
    );
    for (what, secret) in secrets.all() {
        assert!(
            !logs.contains(secret.as_str()),
            "a {what} appears in the logs"
        );
    }
}
