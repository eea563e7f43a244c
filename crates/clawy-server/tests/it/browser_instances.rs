//! Headless Chromium through the instance pages (AUTH-3 forms, ACCESS-1 charts,
//! ACCESS-3 events). Screenshots at desktop and phone widths go to
//! `artifacts/browser/instances-*.png`.
//!
//! 1. Without a VM: log in, the empty state, the create form and its error, create, the
//!    detail page and the list, the delete confirmation, and the operator pages.
//! 2. With the real agent (in a test network namespace, TCG guest) and the real
//!    orchestrator: create through the dashboard and watch it become `running` and
//!    healthy, see the charts fill, stop it, delete it.

use std::path::Path;
use std::time::{Duration, Instant};

use clawy_core::Actor;
use clawy_core::SecretString;
use clawy_core::hosts::RegisterHost;
use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::browser::Browser;
use clawy_testkit::netns::Netns;
use fantoccini::{Client, Locator};

use crate::api_instances::{ROOMY, clawy_bin, fake_host, ssh_key};
use crate::browser::{WAIT, click, fill, shot, wait_h1};
use crate::common::{ED25519_PUB, TestApp, TestUser};

async fn login(app: &TestApp, c: &Client, user: &TestUser) {
    c.goto(&app.url("/login")).await.unwrap();
    wait_h1(c, "Log in").await;
    fill(c, "#f-email", &user.email).await;
    fill(c, "#f-password", &user.password).await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Overview").await;
}

/// The state badge's text on the current page.
async fn badge(c: &Client) -> String {
    match c.find(Locator::Css("main .badge-state")).await {
        Ok(el) => el.text().await.unwrap_or_default().trim().to_lowercase(),
        Err(_) => String::new(),
    }
}

/// Reloads the page until the state badge reads `want` (bounded).
async fn wait_state(c: &Client, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = badge(c).await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let src = c.source().await.unwrap_or_default();
            panic!("state is {got:?}, not {want:?}, after {timeout:?}; page:\n{src}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.refresh().await.unwrap();
    }
}

#[tokio::test]
async fn browser_instance_pages_and_operator_pages() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    fake_host(&app, "fra1-b", "DE", ROOMY, 4).await;
    let user = app.with_user().await;
    ssh_key(&app, &user).await;
    app.core
        .ssh_keys()
        .add(user.id(), "work laptop", ED25519_PUB, &Actor::system())
        .await
        .unwrap();
    let browser = Browser::start().await.expect("chromium via chromedriver");
    let c = browser.client.clone();
    let result = walk(&app, &browser, &c, &user).await;
    browser.close().await.unwrap();
    result.unwrap();
}

async fn walk(app: &TestApp, browser: &Browser, c: &Client, user: &TestUser) -> anyhow::Result<()> {
    login(app, c, user).await;
    c.goto(&app.url("/instances")).await?;
    wait_h1(c, "Instances").await;
    assert!(c.source().await?.contains("No instances yet"));
    shot(browser, "instances-01-empty").await;

    click(c, "main a.btn-primary[href='/instances/new']").await;
    wait_h1(c, "Create instance").await;
    shot(browser, "instances-02-new").await;
    // A name that is not a DNS label: the form comes back with the reason, input kept.
    fill(c, "#f-name", "My Gateway").await;
    click(c, "main form[action='/instances'] button[type=submit]").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#e-name"))
        .await?;
    let src = c.source().await?;
    assert!(src.contains("An instance name is 1 to 63 lower-case letters"));
    shot(browser, "instances-03-new-error").await;

    fill(c, "#f-name", "my-gateway").await;
    c.find(Locator::Css("#f-plan"))
        .await?
        .select_by_value("stand-in")
        .await?;
    click(c, "main form[action='/instances'] button[type=submit]").await;
    // DATA-5: the gateway token, once, then on to the instance.
    wait_h1(c, "Instance my-gateway created").await;
    let token = c.find(Locator::Css("#gateway-token")).await?.text().await?;
    assert_eq!(token.len(), 43);
    shot(browser, "instances-04a-created-token").await;
    click(c, "main a.btn-primary").await;
    wait_h1(c, "my-gateway").await;
    assert_eq!(badge(c).await, "pending");
    assert!(!c.source().await?.contains(&token));
    let src = c.source().await?;
    assert!(src.contains("ssh -p 22000 claw@127.0.0.1"));
    assert_eq!(src.matches("<svg class=\"chart\"").count(), 4);
    shot(browser, "instances-04-detail-pending").await;

    // A second one, then the list with both.
    c.goto(&app.url("/instances/new")).await?;
    fill(c, "#f-name", "lab").await;
    click(c, "main form[action='/instances'] button[type=submit]").await;
    wait_h1(c, "Instance lab created").await;
    click(c, "main a.btn-primary").await;
    wait_h1(c, "lab").await;
    c.goto(&app.url("/instances")).await?;
    wait_h1(c, "Instances").await;
    let src = c.source().await?;
    assert!(src.contains("my-gateway") && src.contains("lab"));
    shot(browser, "instances-05-list").await;
    c.goto(&app.url("/")).await?;
    wait_h1(c, "Overview").await;
    assert!(c.source().await?.contains("my-gateway"));
    shot(browser, "instances-06-overview").await;

    // Delete needs the typed name.
    c.goto(&app.url("/instances")).await?;
    c.find(Locator::LinkText("lab")).await?.click().await?;
    wait_h1(c, "lab").await;
    click(c, "main a[href$='/delete']").await;
    wait_h1(c, "Delete lab?").await;
    shot(browser, "instances-07-delete-confirm").await;
    fill(c, "#f-confirm_name", "lab").await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Instances").await;

    // The operator's pages.
    let op = app.with_operator().await;
    click(c, "form.logout button[type=submit]").await;
    wait_h1(c, "Log in").await;
    login(app, c, &op).await;
    c.goto(&app.url("/operator/hosts")).await?;
    wait_h1(c, "Operator").await;
    assert!(c.source().await?.contains("fra1-b"));
    shot(browser, "instances-08-operator-hosts").await;
    c.goto(&app.url("/operator/instances")).await?;
    wait_h1(c, "Operator").await;
    assert!(c.source().await?.contains(&user.email));
    shot(browser, "instances-09-operator-instances").await;
    Ok(())
}

/// A host namespace with an uplink namespace, and the real agent inside it.
struct RealHost {
    agent: TestAgent,
    _ns: Netns,
    _inet: Netns,
}

async fn real_host() -> RealHost {
    let image = clawy_testkit::guest::test_guest_image().expect("test guest image");
    let ns = Netns::new("h8b").expect("netns");
    let inet = Netns::new("h8bn").expect("netns");
    Netns::veth_pair(
        &ns,
        "up0",
        "203.0.113.1/24",
        &inet,
        "peer0",
        "203.0.113.2/24",
    )
    .expect("veth");
    let opts = AgentOptions {
        images_dir: Some(image.parent().unwrap().to_path_buf()),
        extra_toml: String::new(),
        network_toml: Some(
            "subnet = \"10.83.1.0/24\"\nuplink = \"up0\"\nssh_port_range = \"23000-23099\"\n"
                .to_string(),
        ),
        stop_timeout_secs: 3,
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(Path::new(&clawy_bin()), opts, Some(&ns))
        .await
        .expect("agent");
    RealHost {
        agent,
        _ns: ns,
        _inet: inet,
    }
}

#[tokio::test]
async fn browser_instance_becomes_running_on_a_real_agent() {
    let image = clawy_testkit::guest::test_guest_image().expect("test guest image");
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    let app = TestApp::builder()
        .config(move |c| {
            c.base_image = image_name;
            c.metrics_interval_secs = 1;
            c.reconcile_interval_secs = 2;
        })
        .start()
        .await;
    let host = real_host().await;
    let registered = app
        .core
        .hosts()
        .register(
            &Actor::system(),
            RegisterHost {
                name: "lab-1".into(),
                url: host.agent.base_url.clone(),
                fingerprint: host.agent.fingerprint.clone(),
                token: SecretString::from(host.agent.token.clone()),
                region: "DE".into(),
                site: "lab".into(),
                enabled: true,
            },
        )
        .await
        .unwrap();
    let client = clawy_agent_client::AgentClient::new(
        &host.agent.base_url,
        &host.agent.fingerprint,
        &host.agent.token,
    )
    .unwrap();
    let info = client.host().await.unwrap();
    app.core
        .hosts()
        .update_info(&registered.id, &info)
        .await
        .unwrap();
    // Smallest plan that boots the test guest quickly under TCG.
    app.core
        .plans()
        .create(
            &Actor::system(),
            clawy_core::plans::PlanSpec {
                name: "tiny".into(),
                vcpus: 1,
                memory_mib: 256,
                disk_gib: 1,
            },
        )
        .await
        .unwrap();
    let orchestrator = clawy_orchestrator::Orchestrator::start(
        app.core.clone(),
        clawy_orchestrator::OrchestratorConfig::from_core(&app.core),
    );
    let user = app.with_user().await;
    ssh_key(&app, &user).await;
    let browser = Browser::start().await.expect("chromium via chromedriver");
    let c = browser.client.clone();
    let result = watch_real(&app, &browser, &c, &user).await;
    browser.close().await.unwrap();
    orchestrator.shutdown().await;
    if result.is_err() {
        eprintln!("agent log:\n{}", host.agent.log());
    }
    result.unwrap();
    // Nothing left on the agent.
    assert!(client.list_vms().await.unwrap().vms.is_empty());
}

async fn watch_real(
    app: &TestApp,
    browser: &Browser,
    c: &Client,
    user: &TestUser,
) -> anyhow::Result<()> {
    login(app, c, user).await;
    c.goto(&app.url("/instances/new")).await?;
    wait_h1(c, "Create instance").await;
    fill(c, "#f-name", "real-gw").await;
    c.find(Locator::Css("#f-plan"))
        .await?
        .select_by_value("tiny")
        .await?;
    click(c, "main form[action='/instances'] button[type=submit]").await;
    wait_h1(c, "Instance real-gw created").await;
    click(c, "main a.btn-primary").await;
    wait_h1(c, "real-gw").await;
    let url = c.current_url().await?.to_string();
    let id = url.rsplit('/').next().unwrap().to_string();
    wait_state(c, "running", Duration::from_secs(180)).await;
    // Healthy: the host-side probe reaches the gateway port.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let src = c.source().await?;
        if src.contains("badge badge-ok\">healthy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway never healthy; page:\n{src}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.refresh().await?;
    }
    // Metrics: the poller samples once a second; step the (manual) clock between
    // samples so they have distinct times and the charts draw lines. No job is
    // running now, so no lease can expire under our feet.
    for _ in 0..6 {
        app.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    c.refresh().await?;
    wait_h1(c, "real-gw").await;
    let src = c.source().await?;
    assert!(
        src.contains("class=\"chart-line series-a\""),
        "no chart line:\n{src}"
    );
    assert!(src.contains("Instance created"));
    shot(browser, "instances-10-real-running").await;

    click(c, &format!("form[action='/instances/{id}/stop'] button")).await;
    wait_state(c, "stopped", Duration::from_secs(120)).await;
    shot(browser, "instances-11-real-stopped").await;

    c.goto(&app.url(&format!("/instances/{id}/delete"))).await?;
    wait_h1(c, "Delete real-gw?").await;
    fill(c, "#f-confirm_name", "real-gw").await;
    click(c, "main form button[type=submit]").await;
    wait_h1(c, "Instances").await;
    // Gone from the list once the delete job confirmed the VM is gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let inst = app.core.instances().get(user.id(), &id).await?;
        if inst.state.as_str() == "deleted" {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted: {:?}", inst.state);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    c.refresh().await?;
    assert!(!c.source().await?.contains("real-gw"));
    shot(browser, "instances-12-real-deleted").await;
    Ok(())
}
