//! Login, logout, sessions and passwords through the HTML pages (AUTH-1, AUTH-3, AUTH-5).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use crate::common::{TestApp, strong_password};
use crate::web_support::{SESSION, WebClient, location, set_cookies};

#[tokio::test]
async fn auth_3_login_cookie_flags_exact() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    let resp = web.login(&user).await;
    let lines = set_cookies(resp.headers(), SESSION);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let mut parts = lines[0].split("; ");
    let value = parts
        .next()
        .unwrap()
        .strip_prefix("__Host-clawy_session=")
        .unwrap();
    assert!(value.len() >= 40, "session id too short: {value}");
    let mut attrs: Vec<&str> = parts.collect();
    attrs.sort_unstable();
    // Exactly these: the __Host- prefix needs Secure + Path=/ and no Domain.
    assert_eq!(attrs, vec!["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]);
}

#[tokio::test]
async fn auth_3_session_rotated_at_login() {
    let app = TestApp::start().await;
    let user = app.with_user().await;

    // A valid session planted before login (e.g. by someone with access to the
    // browser) is ended, and the login issues a different id.
    let planted = app.login_session(&user).await;
    let mut web = WebClient::new(&app);
    let (_, html) = web.get_text("/login").await;
    let token = crate::web_support::csrf_from(&html);
    web.cookies.insert(SESSION.into(), planted.raw.clone());
    let resp = web
        .post_raw(
            "/login",
            &[
                ("csrf_token", &token),
                ("email", &user.email),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let fresh = web.session().unwrap();
    assert_ne!(fresh, planted.raw);
    assert!(
        app.core
            .sessions()
            .authenticate(&planted.raw)
            .await
            .is_err()
    );
    assert!(app.core.sessions().authenticate(&fresh).await.is_ok());

    // An attacker-chosen id is never adopted.
    let mut web = WebClient::new(&app);
    web.cookies.insert(
        SESSION.into(),
        "attacker-chosen-session-id-0123456789abcdef".into(),
    );
    web.login(&user).await;
    assert_ne!(
        web.session().unwrap(),
        "attacker-chosen-session-id-0123456789abcdef"
    );
}

#[tokio::test]
async fn auth_3_logout_invalidates_session_server_side() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let old = web.session().unwrap();
    assert_eq!(web.get("/account").await.status(), StatusCode::OK);

    let resp = web.submit("/account", "/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login");
    let cleared = set_cookies(resp.headers(), SESSION);
    assert!(
        cleared.iter().any(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert!(web.session().is_none());

    // Replaying the old cookie does not work: the server deleted the session.
    web.cookies.insert(SESSION.into(), old.clone());
    let resp = web.get("/account").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Faccount");
    assert!(app.core.sessions().authenticate(&old).await.is_err());
}

#[tokio::test]
async fn auth_3_password_change_keeps_this_session_and_ends_others() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut a = WebClient::new(&app);
    let mut b = WebClient::new(&app);
    a.login(&user).await;
    b.login(&user).await;
    let new_password = strong_password();
    let resp = a
        .submit(
            "/account",
            "/account/password",
            &[
                ("current_password", &user.password),
                ("new_password", &new_password),
                ("new_password_confirm", &new_password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/account");
    let (status, html) = a.get_text("/account").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Password changed"), "flash missing");
    assert_eq!(b.get("/account").await.status(), StatusCode::SEE_OTHER);

    // The new password works, the old one does not.
    let mut c = WebClient::new(&app);
    let resp = c
        .submit(
            "/login",
            "/login",
            &[("email", &user.email), ("password", &user.password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .submit(
            "/login",
            "/login",
            &[("email", &user.email), ("password", &new_password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn auth_3_wrong_current_password_keeps_form_and_sessions() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut a = WebClient::new(&app);
    a.login(&user).await;
    let new_password = strong_password();
    let resp = a
        .submit(
            "/account",
            "/account/password",
            &[
                ("current_password", "not-the-password-at-all"),
                ("new_password", &new_password),
                ("new_password_confirm", &new_password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("id=\"e-current_password\""),
        "error not next to the field"
    );
    // AUTH-1: a password is never echoed back into the page.
    assert!(!html.contains(&new_password));
    assert_eq!(a.get("/account").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn auth_3_session_expires_when_idle() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    app.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(web.get("/account").await.status(), StatusCode::OK);
    // Use renewed the idle window; 31 idle minutes end it.
    app.clock.advance(Duration::from_secs(31 * 60));
    let resp = web.get("/account").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(location(&resp).starts_with("/login"));
}

#[tokio::test]
async fn auth_3_session_expires_after_absolute_timeout() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    // Active every 29 minutes: never idle, but 12 h after login it ends anyway.
    let mut elapsed = 0;
    loop {
        app.clock.advance(Duration::from_secs(29 * 60));
        elapsed += 29;
        let status = web.get("/account").await.status();
        if elapsed < 12 * 60 {
            assert_eq!(status, StatusCode::OK, "ended early at {elapsed} min");
        } else {
            assert_eq!(
                status,
                StatusCode::SEE_OTHER,
                "still valid at {elapsed} min"
            );
            break;
        }
    }
}

#[tokio::test]
async fn auth_1_failed_login_is_generic_and_keeps_email() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    let wrong = web
        .submit(
            "/login",
            "/login",
            &[("email", &user.email), ("password", "wrong-password-123")],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong = wrong.text().await.unwrap();
    let unknown = web
        .submit(
            "/login",
            "/login",
            &[
                ("email", "nobody@example.test"),
                ("password", "wrong-password-123"),
            ],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown = unknown.text().await.unwrap();
    let msg = "Email or password is wrong.";
    assert!(wrong.contains(msg) && unknown.contains(msg));
    assert!(
        wrong.contains(&format!("value=\"{}\"", user.email)),
        "email not kept"
    );
    assert!(!wrong.contains("wrong-password-123"), "password echoed");
    assert!(web.session().is_none());
}

#[tokio::test]
async fn auth_5_repeated_failures_get_429_with_retry_after() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    let mut throttled = None;
    for _ in 0..30 {
        let resp = web
            .submit(
                "/login",
                "/login",
                &[("email", &user.email), ("password", "wrong-password-123")],
            )
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = throttled.expect("never throttled");
    let retry: u64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Slow down") && html.contains("/static/app.css"),
        "not the product's 429 page"
    );
    // The right password is refused while locked, and works once the lock has passed.
    let resp = web
        .submit(
            "/login",
            "/login",
            &[("email", &user.email), ("password", &user.password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    app.clock.advance(Duration::from_secs(retry + 1));
    web.login(&user).await;
}

#[tokio::test]
async fn auth_1_signup_creates_account_and_session() {
    let app = TestApp::start().await;
    let mut web = WebClient::new(&app);
    let email = format!(
        "new{}@example.test",
        crate::common::random_suffix(8).to_lowercase()
    );
    let password = strong_password();

    // Weak password: refused next to the field, email kept, password not echoed.
    let resp = web
        .submit(
            "/signup",
            "/signup",
            &[
                ("email", &email),
                ("password", "password1234"),
                ("password_confirm", "password1234"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"e-password\""));
    assert!(html.contains(&format!("value=\"{email}\"")));
    assert!(!html.contains("password1234"));

    // Mismatched repeat.
    let resp = web
        .submit(
            "/signup",
            "/signup",
            &[
                ("email", &email),
                ("password", &password),
                ("password_confirm", "x"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("id=\"e-password_confirm\"")
    );

    let resp = web
        .submit(
            "/signup",
            "/signup",
            &[
                ("email", &email),
                ("password", &password),
                ("password_confirm", &password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let (status, html) = web.get_text("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No instances yet"));
    assert!(html.contains(&email));
}

#[tokio::test]
async fn auth_3_password_reset_by_mail_ends_every_session() {
    let app = TestApp::builder().with_smtp().start().await;
    let user = app.with_user().await;
    let mut old = WebClient::new(&app);
    old.login(&user).await;
    // A key minted before the reset (say, with the stolen session).
    let (key_id, key_secret) = app
        .with_api_key(&user, clawy_core::actor::Tier::Admin)
        .await;
    let key_prefix = app
        .core
        .api_keys()
        .get(user.id(), &key_id)
        .await
        .unwrap()
        .prefix;

    let mut web = WebClient::new(&app);
    let resp = web
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", &user.email)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("we have sent it a link")
    );
    let mail = app
        .smtp
        .as_ref()
        .unwrap()
        .wait_for_containing("/reset-password?token=")
        .await
        .unwrap();
    let start = mail.body.find("/reset-password?token=").unwrap();
    let path: String = mail.body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let new_password = strong_password();
    // The emailed link moves the token into a cookie and drops it from the URL.
    let resp = web.get(&path).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/reset-password");
    let reset_cookie = set_cookies(resp.headers(), "__Host-clawy_reset");
    assert!(
        reset_cookie[0].contains("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{reset_cookie:?}"
    );
    let reset_token = path.split("token=").nth(1).unwrap().to_owned();
    let (status, html) = web.get_text("/reset-password").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(&reset_token), "token in the page");
    // AUTH-2/AUTH-3: the page lists the account's API keys and offers to revoke them.
    assert!(html.contains(&key_prefix), "keys not shown: {html}");
    assert!(html.contains("name=\"revoke_api_keys\""));
    let token = crate::web_support::csrf_from(&html);
    let form = [
        ("csrf_token", token.as_str()),
        ("password", new_password.as_str()),
        ("password_confirm", new_password.as_str()),
        ("revoke_api_keys", "1"),
    ];
    let resp = web.post_raw("/reset-password", &form).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login");
    // "I was compromised": the key minted before the reset is dead.
    assert_eq!(
        app.get_with_key("/api/v1/me", &key_secret).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        old.get("/account").await.status(),
        StatusCode::SEE_OTHER,
        "old session survived reset"
    );
    assert!(
        !web.cookies.contains_key("__Host-clawy_reset"),
        "reset cookie kept"
    );

    // The link works once.
    web.cookies
        .insert("__Host-clawy_reset".into(), reset_token.clone());
    let resp = web.post_raw("/reset-password", &form).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("invalid or has expired")
    );

    let resp = web
        .submit(
            "/login",
            "/login",
            &[("email", &user.email), ("password", &new_password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn auth_5_password_reset_requests_are_rate_limited() {
    let app = TestApp::builder().with_smtp().start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    let mut limited = None;
    for _ in 0..20 {
        let resp = web
            .submit(
                "/forgot-password",
                "/forgot-password",
                &[("email", &user.email)],
            )
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = limited.expect("never rate-limited");
    assert!(resp.headers().contains_key(RETRY_AFTER));
    // An unknown address gets the same answer as a known one (no account discovery).
    let mut other = WebClient::new(&app);
    other.app.clock.advance(Duration::from_secs(3601));
    let known = other
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", &user.email)],
        )
        .await
        .text()
        .await
        .unwrap();
    let unknown = other
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "nobody@example.test")],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(known.contains("we have sent it a link"));
    assert_eq!(
        known.replace(&user.email, "EMAIL"),
        unknown.replace("nobody@example.test", "EMAIL")
    );
}

#[tokio::test]
async fn signup_invite_only_and_email_verification_through_the_pages() {
    let app = TestApp::builder()
        .with_smtp()
        .config(|c| {
            c.signup_mode = clawy_core::config::SignupMode::Invite;
            c.email_verification = true;
        })
        .start()
        .await;
    let password = strong_password();
    let mut web = WebClient::new(&app);
    let form = |invite: &'static str, pw: &'static str| {
        vec![
            ("email", "invited@example.com"),
            ("password", pw),
            ("password_confirm", pw),
            ("invite", invite),
        ]
    };
    let pw: &'static str = Box::leak(password.clone().into_boxed_str());
    // No invitation: refused, the field says why.
    let resp = web.submit("/signup", "/signup", &form("", pw)).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.text().await.unwrap().contains("by invitation only"));
    // The operator's link carries the invitation into the form.
    let invite = app
        .core
        .accounts()
        .create_invite(&clawy_core::Actor::system())
        .await
        .unwrap();
    let code: &'static str = Box::leak(invite.expose().to_owned().into_boxed_str());
    let (_, html) = web.get_text(&format!("/signup?invite={code}")).await;
    assert!(html.contains(&format!("value=\"{code}\"")));
    let resp = web.submit("/signup", "/signup", &form(code, pw)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // Signed in but unconfirmed: the overview says so, instances are refused.
    let (_, html) = web.get_text("/").await;
    assert!(html.contains("Confirm your email address"), "{html}");
    let mail = app
        .smtp
        .as_ref()
        .unwrap()
        .wait_for_containing("/verify-email?token=")
        .await
        .unwrap();
    let start = mail.body.find("/verify-email?token=").unwrap();
    let path: String = mail.body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let resp = web.get(&path).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let (_, html) = web.get_text("/").await;
    assert!(html.contains("Your email address is confirmed"), "{html}");
    assert!(!html.contains("Confirm your email address."));
    // The link works once.
    web.get(&path).await;
    let (_, html) = web.get_text("/").await;
    assert!(html.contains("invalid, expired or already used"));
}
