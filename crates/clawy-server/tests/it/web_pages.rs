//! The dashboard pages: sign-in required, owner scoping, API keys shown once, SSH keys,
//! operator pages, static files and the HTML error pages.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::common::{ED25519_PUB, RSA_2048_PUB, TestApp, pasted_private_key};
use crate::web_support::{WebClient, csrf_from, esc, location};

#[tokio::test]
async fn dashboard_pages_require_sign_in() {
    let app = TestApp::start().await;
    let mut web = WebClient::new(&app);
    for path in ["/account", "/ssh-keys", "/api-keys", "/activity"] {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&resp).starts_with("/login?next="), "{path}");
    }
    // Signed out, `/` is the product landing page.
    let (status, html) = web.get_text("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("href=\"/signup\"") && html.contains("href=\"/security\""));
}

#[tokio::test]
async fn login_returns_to_the_page_asked_for() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    let (_, html) = web.get_text("/login?next=%2Fapi-keys").await;
    let token = csrf_from(&html);
    assert!(html.contains(&format!("name=\"next\" value=\"{}\"", esc("/api-keys"))));
    let resp = web
        .post_raw(
            "/login",
            &[
                ("csrf_token", &token),
                ("next", "/api-keys"),
                ("email", &user.email),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(location(&resp), "/api-keys");
    // Never off-site.
    web.cookies.clear();
    let (_, html) = web.get_text("/login").await;
    let token = csrf_from(&html);
    let resp = web
        .post_raw(
            "/login",
            &[
                ("csrf_token", &token),
                ("next", "//evil.example/"),
                ("email", &user.email),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(location(&resp), "/");
}

#[tokio::test]
async fn auth_2_api_key_is_shown_once() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let resp = web
        .submit(
            "/api-keys",
            "/api-keys",
            &[
                ("name", "deploy <script>"),
                ("tier", "manage"),
                ("expires_on", ""),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains("deploy &lt;script&gt;"), "name not escaped");
    let start = html.find("clawy_m_").expect("key not shown");
    let secret: String = html[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::OK
    );

    let (_, list) = web.get_text("/api-keys").await;
    assert!(!list.contains(&secret), "secret shown again");
    let key = &app.core.api_keys().list(user.id()).await.unwrap()[0];
    assert!(list.contains(&key.prefix));

    // Regenerate: a new secret once, the old one dead.
    let (_, page) = web.get_text("/api-keys").await;
    let token = csrf_from(&page);
    let resp = web
        .post_raw(
            &format!("/api-keys/{}/regenerate", key.id),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let start = html.find("clawy_m_").unwrap();
    let new_secret: String = html[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert_ne!(new_secret, secret);
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_with_key("/api/v1/me", &new_secret).await.status(),
        StatusCode::OK
    );

    // Revoke.
    let resp = web
        .post_raw(
            &format!("/api-keys/{}/revoke", key.id),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get_with_key("/api/v1/me", &new_secret).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, list) = web.get_text("/api-keys").await;
    assert!(list.contains("API key revoked") && list.contains("No API keys yet"));
}

#[tokio::test]
async fn api_key_form_keeps_input_on_error() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let resp = web
        .submit(
            "/api-keys",
            "/api-keys",
            &[
                ("name", "nightly backup"),
                ("tier", "admin"),
                ("expires_on", "2001-01-01"),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(!html.contains(&user.password), "password echoed");
    assert!(html.contains("id=\"e-expires_on\""));
    assert!(html.contains("value=\"nightly backup\""));
    assert!(html.contains("<option value=\"admin\" selected>"));
    assert!(
        app.core
            .api_keys()
            .list(user.id())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ssh_keys_add_list_delete_and_refusals() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;

    let resp = web
        .submit(
            "/ssh-keys",
            "/ssh-keys",
            &[("name", "work laptop"), ("public_key", RSA_2048_PUB)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"e-public_key\"") && html.contains("3072"));
    assert!(html.contains("value=\"work laptop\"") && html.contains(&esc(RSA_2048_PUB)));

    // A pasted private key: refused, never echoed back.
    let private = pasted_private_key();
    let resp = web
        .submit(
            "/ssh-keys",
            "/ssh-keys",
            &[("name", "oops"), ("public_key", &private)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("PRIVATE key"));
    assert!(!html.contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"));

    let resp = web
        .submit(
            "/ssh-keys",
            "/ssh-keys",
            &[("name", "work laptop"), ("public_key", ED25519_PUB)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let key = &app.core.ssh_keys().list(user.id()).await.unwrap()[0];
    let (_, html) = web.get_text("/ssh-keys").await;
    assert!(
        html.contains("SSH key added")
            && html.contains(&esc(&key.fingerprint))
            && key.fingerprint.starts_with("SHA256:")
    );

    // Another user cannot delete it: 404, and it stays.
    let other = app.with_user().await;
    let mut web2 = WebClient::new(&app);
    web2.login(&other).await;
    let (_, page) = web2.get_text("/ssh-keys").await;
    let token = csrf_from(&page);
    let resp = web2
        .post_raw(
            &format!("/ssh-keys/{}/delete", key.id),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.core.ssh_keys().list(user.id()).await.unwrap().len(), 1);

    let (_, page) = web.get_text("/ssh-keys").await;
    let token = csrf_from(&page);
    let resp = web
        .post_raw(
            &format!("/ssh-keys/{}/delete", key.id),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
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
async fn account_lists_sessions_and_revokes_another() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut a = WebClient::new(&app);
    let mut b = WebClient::new(&app);
    a.login(&user).await;
    b.login(&user).await;
    let (_, html) = a.get_text("/account").await;
    assert_eq!(html.matches(">this session<").count(), 1);
    assert!(html.contains("127.0.0.1"));
    let sessions = app.core.sessions().list_for_user(user.id()).await.unwrap();
    assert_eq!(sessions.len(), 2);
    let b_raw = b.session().unwrap();
    let b_id = &app
        .core
        .sessions()
        .authenticate(&b_raw)
        .await
        .unwrap()
        .session
        .id;
    let token = csrf_from(&html);
    let resp = a
        .post_raw(
            &format!("/account/sessions/{b_id}/revoke"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get("/account").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(a.get("/account").await.status(), StatusCode::OK);
    // The activity page shows what happened.
    let (_, html) = a.get_text("/activity").await;
    assert!(html.contains("Session revoked") && html.contains("Signed in"));
}

#[tokio::test]
async fn operator_pages_are_404_for_everyone_else() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let operator = app.with_operator().await;
    let mut anon = WebClient::new(&app);
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    for path in ["/operator/users", "/operator/reports"] {
        assert_eq!(
            anon.get(path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        let (status, html) = web.get_text(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(html.contains("Page not found"));
    }
    let (_, html) = web.get_text("/").await;
    assert!(
        !html.contains("href=\"/operator/users\""),
        "operator link shown to a user"
    );

    let mut op = WebClient::new(&app);
    op.login(&operator).await;
    let (status, html) = op.get_text("/operator/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&user.email) && html.contains(&operator.email));
    assert_eq!(op.get("/operator/reports").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn static_assets_have_types_and_long_cache() {
    let app = TestApp::start().await;
    for (path, ty) in [
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/logo.svg", "image/svg+xml"),
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()[CONTENT_TYPE], ty);
        assert!(
            resp.headers()[CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    let resp = app
        .client
        .get(app.url("/static/nope.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_carry_security_headers_and_no_inline_code() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    for path in [
        "/",
        "/account",
        "/ssh-keys",
        "/api-keys",
        "/activity",
        "/security",
        "/security/report",
    ] {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store", "{path}");
        // Same-origin referrers keep the real `Origin` on our own form posts (AUTH-3).
        assert_eq!(resp.headers()["referrer-policy"], "same-origin", "{path}");
        let html = resp.text().await.unwrap();
        assert!(
            !html.contains(" style=") && !html.contains("<style") && !html.contains(" onclick="),
            "{path}"
        );
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/static/").count(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn plain_http_base_url_warns_that_sign_in_cannot_work() {
    // AUTH-3 keeps the cookie Secure; on plain http (not localhost) browsers drop it, so
    // the pages say why sign-in fails instead of looping back to the login form.
    let app = TestApp::builder()
        .base_url("http://clawy.example")
        .start()
        .await;
    let mut web = WebClient::new(&app);
    let (_, html) = web.get_text("/login").await;
    assert!(html.contains("Signing in cannot work at this address"));
    let app = TestApp::start().await;
    let mut web = WebClient::new(&app);
    let (_, html) = web.get_text("/login").await;
    assert!(!html.contains("Signing in cannot work at this address"));
}

/// The secret shown on a "key created" page.
fn secret_in(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)?;
    Some(
        html[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

#[tokio::test]
async fn auth2_admin_key_from_a_session_needs_the_password_again() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let form = |pw: &'static str| {
        vec![
            ("name", "root"),
            ("tier", "admin"),
            ("expires_on", ""),
            ("password", pw),
        ]
    };
    // A stolen session cookie alone: no admin key.
    for pw in ["", "Wrong-Guess-0000"] {
        let resp = web.submit("/api-keys", "/api-keys", &form(pw)).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = resp.text().await.unwrap();
        assert!(html.contains("id=\"e-password\""), "{html}");
        assert!(secret_in(&html, "clawy_a_").is_none());
    }
    assert!(
        app.core
            .api_keys()
            .list(user.id())
            .await
            .unwrap()
            .is_empty()
    );
    // Lower tiers need no password.
    let resp = web
        .submit(
            "/api-keys",
            "/api-keys",
            &[("name", "ci"), ("tier", "read"), ("expires_on", "")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // With the password: created.
    let pw: &'static str = Box::leak(user.password.clone().into_boxed_str());
    let resp = web.submit("/api-keys", "/api-keys", &form(pw)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(!html.contains(&user.password), "password echoed");
    let secret = secret_in(&html, "clawy_a_").expect("admin key shown");
    // Regenerating it asks again.
    let key = app
        .core
        .api_keys()
        .list(user.id())
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.tier == clawy_core::actor::Tier::Admin)
        .unwrap();
    let (_, page) = web.get_text("/api-keys").await;
    let token = csrf_from(&page);
    let path = format!("/api-keys/{}/regenerate", key.id);
    let resp = web.post_raw(&path, &[("csrf_token", &token)]).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::OK,
        "not regenerated"
    );
    let resp = web
        .post_raw(
            &path,
            &[("csrf_token", &token), ("password", &user.password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
