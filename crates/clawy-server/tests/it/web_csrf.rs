//! AUTH-3: every state-changing form needs the CSRF token and a same-site origin; GET
//! never changes state.

use reqwest::StatusCode;
use reqwest::header::COOKIE;

use crate::common::{ED25519_PUB, TestApp};
use crate::web_support::{WebClient, csrf_from};

#[tokio::test]
async fn auth_3_csrf_missing_or_wrong_is_403() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let form = [("name", "laptop"), ("public_key", ED25519_PUB)];

    let resp = web.post_raw("/ssh-keys", &form).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains("This form has expired"));

    let mut wrong = vec![("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
    wrong.extend_from_slice(&form);
    assert_eq!(
        web.post_raw("/ssh-keys", &wrong).await.status(),
        StatusCode::FORBIDDEN
    );

    // Another session's token does not fit this session.
    let other = app.login_session(&user).await;
    let mut foreign = vec![("csrf_token", other.csrf.as_str())];
    foreign.extend_from_slice(&form);
    assert_eq!(
        web.post_raw("/ssh-keys", &foreign).await.status(),
        StatusCode::FORBIDDEN
    );

    assert!(
        app.core
            .ssh_keys()
            .list(user.id())
            .await
            .unwrap()
            .is_empty()
    );

    // With the page's token it works: the refusals above were the token, nothing else.
    let resp = web.submit("/ssh-keys", "/ssh-keys", &form).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.core.ssh_keys().list(user.id()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn auth_3_cross_site_origin_is_403() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (_, html) = web.get_text("/api-keys").await;
    let token = csrf_from(&html);
    let form = [
        ("csrf_token", token.as_str()),
        ("name", "ci"),
        ("tier", "read"),
        ("expires_on", ""),
    ];

    web.origin = Some("https://evil.example".into());
    assert_eq!(
        web.post_raw("/api-keys", &form).await.status(),
        StatusCode::FORBIDDEN
    );

    // Sec-Fetch-Site: cross-site is refused even without an Origin header.
    let cookie = format!("__Host-clawy_session={}", web.session().unwrap());
    let resp = app
        .client
        .post(app.url("/api-keys"))
        .header(COOKIE, cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        app.core
            .api_keys()
            .list(user.id())
            .await
            .unwrap()
            .is_empty()
    );

    web.origin = Some(app.origin());
    assert_eq!(
        web.post_raw("/api-keys", &form).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn auth_3_signed_out_forms_need_the_csrf_cookie() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    // A login POST without having loaded the form (no double-submit cookie) is refused:
    // a cross-site page cannot log a victim into the attacker's account.
    let mut web = WebClient::new(&app);
    let resp = web
        .post_raw(
            "/login",
            &[
                ("csrf_token", "x".repeat(43).as_str()),
                ("email", &user.email),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(web.session().is_none());
    // The cookie set by the form page is __Host-, HttpOnly, SameSite=Strict.
    let resp = web.get("/login").await;
    let set = crate::web_support::set_cookies(resp.headers(), "__Host-clawy_csrf");
    assert_eq!(set.len(), 1);
    assert!(
        set[0].contains("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{set:?}"
    );
}

#[tokio::test]
async fn auth_3_get_never_changes_state() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (key_id, secret) = app.with_api_key(&user, clawy_core::actor::Tier::Read).await;
    let ssh = app
        .core
        .ssh_keys()
        .add(user.id(), "k", ED25519_PUB, &clawy_core::Actor::system())
        .await
        .unwrap();
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let session = web.session().unwrap();
    let sessions = app.core.sessions().list_for_user(user.id()).await.unwrap();

    for path in [
        "/logout".to_owned(),
        format!("/api-keys/{key_id}/revoke"),
        format!("/api-keys/{key_id}/regenerate"),
        format!("/ssh-keys/{}/delete", ssh.id),
        format!("/account/sessions/{}/revoke", sessions[0].id),
        "/account/password".to_owned(),
    ] {
        let status = web.get(&path).await.status();
        assert!(
            status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND,
            "GET {path} answered {status}"
        );
    }
    assert!(app.core.sessions().authenticate(&session).await.is_ok());
    assert_eq!(app.core.api_keys().list(user.id()).await.unwrap().len(), 1);
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.core.ssh_keys().list(user.id()).await.unwrap().len(), 1);
}
