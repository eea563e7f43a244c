//! A real headless Chromium walks through the dashboard: sign up, log out, log in,
//! create an API key and see it exactly once, add an SSH key, log out. Screenshots at
//! desktop and phone widths go to `artifacts/browser/` (AUTH-2, AUTH-3, REPORT-1).

use std::time::Duration;

use clawy_testkit::browser::Browser;
use fantoccini::{Client, Locator};
use reqwest::StatusCode;

use crate::common::{ED25519_PUB, TestApp, random_suffix, strong_password};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) async fn fill(c: &Client, css: &str, text: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

pub(crate) async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits for a heading with exactly this text (the page after a navigation).
pub(crate) async fn wait_h1(c: &Client, text: &str) {
    let xpath = format!("//h1[normalize-space()='{text}']");
    if let Err(e) = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&xpath))
        .await
    {
        let src = c.source().await.unwrap_or_default();
        panic!("no <h1>{text}</h1> ({e}); page is:\n{src}");
    }
}

/// Full-page screenshots at desktop and phone widths, as `<name>-desktop.png` and
/// `<name>-mobile.png` under `artifacts/browser/`.
pub(crate) async fn shot(b: &Browser, name: &str) {
    b.screenshot_full(&format!("{name}-desktop"), 1440)
        .await
        .unwrap();
    b.screenshot_full(&format!("{name}-mobile"), 375)
        .await
        .unwrap();
    b.client.set_window_size(1440, 900).await.unwrap();
}

#[tokio::test]
async fn browser_signup_login_api_key_once_ssh_key_logout() {
    let app = TestApp::start().await;
    let browser = Browser::start().await.expect("chromium via chromedriver");
    let c = browser.client.clone();
    let result = walk(&app, &browser, &c).await;
    browser.close().await.unwrap();
    result.unwrap();
}

async fn walk(app: &TestApp, browser: &Browser, c: &Client) -> anyhow::Result<()> {
    let email = format!("browser{}@example.test", random_suffix(6).to_lowercase());
    let password = strong_password();

    // The landing page, styled: the stylesheet and script load under the CSP.
    c.goto(&app.url("/")).await?;
    wait_h1(
        c,
        "Your AI gateway on a virtual machine that is yours alone.",
    )
    .await;
    let font = c
        .execute("return getComputedStyle(document.body).fontFamily", vec![])
        .await?;
    assert!(
        font.as_str().unwrap_or_default().contains("system-ui"),
        "app.css not applied: {font}"
    );
    let js = c
        .execute(
            "return document.documentElement.classList.contains('js')",
            vec![],
        )
        .await?;
    assert_eq!(js, serde_json::Value::Bool(true), "app.js did not run");
    shot(browser, "01-landing").await;

    c.goto(&app.url("/security")).await?;
    wait_h1(c, "What Clawy promises, and how each promise is kept").await;
    shot(browser, "02-security").await;

    // Sign up.
    c.goto(&app.url("/signup")).await?;
    wait_h1(c, "Create your account").await;
    fill(c, "#f-email", &email).await;
    fill(c, "#f-password", &password).await;
    fill(c, "#f-password_confirm", &password).await;
    shot(browser, "03-signup").await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Overview").await;
    assert!(c.source().await?.contains("No instances yet"));
    shot(browser, "04-overview").await;

    // AUTH-3: the browser accepted the session cookie with its flags.
    let cookies = c.get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|k| k.name() == "__Host-clawy_session")
        .expect("session cookie stored by the browser");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Lax)");
    let first_session = session.value().to_owned();

    // Log out, log in again: a new session id.
    click(c, "form.logout button[type=submit]").await;
    wait_h1(c, "Log in").await;
    assert!(c.source().await?.contains("You have been signed out"));
    assert!(
        app.core
            .sessions()
            .authenticate(&first_session)
            .await
            .is_err()
    );
    fill(c, "#f-email", &email).await;
    fill(c, "#f-password", "wrong password, surely").await;
    click(c, "main form button[type=submit]").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(".alert-error"))
        .await?;
    shot(browser, "05-login-failed").await;
    fill(c, "#f-password", &password).await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Overview").await;
    let cookies = c.get_all_cookies().await?;
    let second = cookies
        .iter()
        .find(|k| k.name() == "__Host-clawy_session")
        .expect("session");
    assert_ne!(
        second.value(),
        first_session,
        "session id not rotated at login"
    );

    // API key: shown once.
    c.goto(&app.url("/api-keys")).await?;
    wait_h1(c, "API keys").await;
    shot(browser, "06-api-keys-empty").await;
    fill(c, "#f-name", "laptop CLI").await;
    c.find(Locator::Css("#f-tier"))
        .await?
        .select_by_value("manage")
        .await?;
    click(c, "main form[action='/api-keys'] button[type=submit]").await;
    wait_h1(c, "API key created").await;
    let secret = c.find(Locator::Css("#new-api-key")).await?.text().await?;
    assert!(secret.starts_with("clawy_m_"), "{secret}");
    assert!(
        c.find(Locator::Css("[data-copy='new-api-key']"))
            .await?
            .is_displayed()
            .await?,
        "copy button hidden"
    );
    shot(browser, "07-api-key-created").await;
    assert_eq!(
        app.get_with_key("/api/v1/me", &secret).await.status(),
        StatusCode::OK
    );
    click(c, "main a.btn-primary[href='/api-keys']").await;
    wait_h1(c, "API keys").await;
    let list = c.source().await?;
    assert!(!list.contains(&secret), "the key was shown a second time");
    assert!(list.contains("laptop CLI"));
    c.refresh().await?;
    wait_h1(c, "API keys").await;
    assert!(!c.source().await?.contains(&secret));
    shot(browser, "08-api-keys-list").await;

    // SSH key.
    c.goto(&app.url("/ssh-keys")).await?;
    wait_h1(c, "SSH keys").await;
    fill(c, "#f-name", "work laptop").await;
    fill(c, "#f-public_key", ED25519_PUB).await;
    click(c, "main form[action='/ssh-keys'] button[type=submit]").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("code.fingerprint"))
        .await?;
    let fp = c
        .find(Locator::Css("code.fingerprint"))
        .await?
        .text()
        .await?;
    assert!(fp.starts_with("SHA256:"), "{fp}");
    shot(browser, "09-ssh-keys").await;

    c.goto(&app.url("/account")).await?;
    wait_h1(c, "Account").await;
    shot(browser, "10-account").await;
    c.goto(&app.url("/activity")).await?;
    wait_h1(c, "Activity").await;
    assert!(c.source().await?.contains("API key created"));
    shot(browser, "11-activity").await;

    // Log out: the dashboard is closed again.
    click(c, "form.logout button[type=submit]").await;
    wait_h1(c, "Log in").await;
    c.goto(&app.url("/account")).await?;
    wait_h1(c, "Log in").await;
    shot(browser, "12-logged-out").await;

    c.goto(&app.url("/no-such-page")).await?;
    shot(browser, "13-not-found").await;

    // Dark mode (prefers-color-scheme): the same pages must stay readable.
    browser.emulate_dark_mode(true).await?;
    let bg = c
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await?;
    assert_eq!(
        bg.as_str(),
        Some("rgb(14, 16, 24)"),
        "dark theme not applied"
    );
    shot(browser, "14-not-found-dark").await;
    c.goto(&app.url("/")).await?;
    shot(browser, "15-landing-dark").await;
    c.goto(&app.url("/login")).await?;
    shot(browser, "16-login-dark").await;
    browser.emulate_dark_mode(false).await?;

    // Response headers of a page, as the browser got them.
    let resp = app.client.get(app.url("/login")).send().await?;
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str()?;
    assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("referrer-policy"));
    Ok(())
}
