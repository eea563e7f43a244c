//! The instance pages and the operator's host/instance pages: sign-in and owner
//! scoping, create with errors that keep the input, the detail page (SSH command,
//! charts as inline SVG, events), lifecycle forms with CSRF (AUTH-3), delete only after
//! typing the name, and operator-only pages that are 404 for everyone else.

use reqwest::StatusCode;

use crate::api_instances::{ROOMY, fake_host, force_state, instance_of, ssh_key};
use crate::common::TestApp;
use crate::web_support::{WebClient, csrf_from, esc, location};
use clawy_core::metrics::MetricSample;

#[tokio::test]
async fn instance_pages_require_sign_in_and_scope_to_the_owner() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let owner = app.with_user().await;
    let id = instance_of(&app, &owner, "mine").await;
    let mut web = WebClient::new(&app);
    for path in ["/instances", "/instances/new", &format!("/instances/{id}")] {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&resp).starts_with("/login?next="), "{path}");
    }
    let stranger = app.with_user().await;
    web.login(&stranger).await;
    for path in [
        format!("/instances/{id}"),
        format!("/instances/{id}/delete"),
    ] {
        let (status, _) = web.get_text(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, html) = web.get_text("/instances").await;
    assert!(!html.contains("mine"));
    // A stranger's forged stop on the owner's instance: 404, nothing queued.
    let (_, html) = web.get_text("/instances").await;
    let token = csrf_from(&html);
    let resp = web
        .post_raw(&format!("/instances/{id}/stop"), &[("csrf_token", &token)])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let inst = app.core.instances().get(owner.id(), &id).await.unwrap();
    assert_eq!(inst.desired_power.as_str(), "running");
}

#[tokio::test]
async fn create_from_the_dashboard_and_see_the_detail_page() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let key_id = ssh_key(&app, &user).await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;

    let (status, html) = web.get_text("/instances").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No instances yet"));
    let (_, html) = web.get_text("/").await;
    assert!(html.contains("No instances yet") && html.contains("href=\"/instances/new\""));
    assert!(html.contains("href=\"/instances/new\""));

    let (status, html) = web.get_text("/instances/new").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<option value=\"small\" selected>"));
    assert!(html.contains("<option value=\"DE\" selected>"));
    assert!(html.contains(&format!("name=\"ssh_key_ids\" value=\"{key_id}\" checked")));

    // A bad name: the form comes back with the message and what was typed.
    let resp = web
        .submit(
            "/instances/new",
            "/instances",
            &[
                ("name", "My Gateway"),
                ("plan", "medium"),
                ("region", "DE"),
                ("ssh_key_ids", &key_id),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("An instance name is 1 to 63 lower-case letters"));
    assert!(html.contains("value=\"My Gateway\""));
    assert!(html.contains("<option value=\"medium\" selected>"));

    let resp = web
        .submit(
            "/instances/new",
            "/instances",
            &[
                ("name", "gw"),
                ("plan", "stand-in"),
                ("region", "DE"),
                ("ssh_key_ids", &key_id),
            ],
        )
        .await;
    // DATA-5: the answer shows the generated gateway token once (no-store) and
    // links the instance page, which never shows it.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let created = resp.text().await.unwrap();
    let token = created
        .split("<code id=\"gateway-token\" class=\"secret\">")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 43, "{created}");
    let detail = created
        .split("href=\"/instances/")
        .filter_map(|t| t.split('"').next())
        .find(|id| id.len() == 36)
        .map(|id| format!("/instances/{id}"))
        .unwrap();
    let id = detail.trim_start_matches("/instances/").to_string();
    assert_eq!(app.core.instances().ssh_keys(&id).await.unwrap().len(), 1);
    let (_, page_html) = web.get_text(&detail).await;
    assert!(!page_html.contains(&token));

    let (status, html) = web.get_text(&detail).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>gw</h1>"));
    assert!(html.contains("ssh -p 22000 claw@127.0.0.1"));
    assert!(html.contains("10.77.3.2"));
    assert!(html.contains("badge-state-pending"));
    // Still changing: the page refreshes itself (no script needed).
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"4\">"));
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 4);
    assert!(html.contains("Instance created"));

    // Listed, with a live badge; the same name again is refused on the form.
    let (_, html) = web.get_text("/instances").await;
    assert!(html.contains(&format!("href=\"/instances/{id}\"")));
    // The overview shows it instead of the empty state.
    let (_, html) = web.get_text("/").await;
    assert!(html.contains(&format!("href=\"/instances/{id}\"")));
    assert!(!html.contains("No instances yet"));
    let resp = web
        .submit(
            "/instances/new",
            "/instances",
            &[("name", "gw"), ("plan", "stand-in"), ("region", "DE")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("You already have an instance named gw.")
    );
}

#[tokio::test]
async fn no_capacity_is_explained_on_the_form() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let resp = web
        .submit(
            "/instances/new",
            "/instances",
            &[("name", "gw"), ("plan", "stand-in"), ("region", "DE")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let html = resp.text().await.unwrap();
    assert!(html.contains("There is no capacity in region DE for plan stand-in right now."));
    assert!(html.contains("value=\"gw\""));
}

#[tokio::test]
async fn auth_3_lifecycle_forms_need_the_csrf_token_and_delete_needs_the_name() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "gw").await;
    force_state(&app, &id, "running").await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (_, html) = web.get_text(&format!("/instances/{id}")).await;
    for action in ["stop", "reboot"] {
        assert!(
            html.contains(&format!("action=\"/instances/{id}/{action}\"")),
            "{action}"
        );
    }
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "a settled state does not refresh"
    );
    let token = csrf_from(&html);

    // No token / another origin: refused, nothing queued.
    let resp = web
        .post_raw(&format!("/instances/{id}/stop"), &[("csrf_token", "wrong")])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    web.origin = Some("https://evil.example".into());
    let resp = web
        .post_raw(&format!("/instances/{id}/stop"), &[("csrf_token", &token)])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    web.origin = Some(app.origin());
    assert_eq!(
        app.core
            .instances()
            .get(user.id(), &id)
            .await
            .unwrap()
            .desired_power
            .as_str(),
        "running"
    );

    let resp = web
        .post_raw(&format!("/instances/{id}/stop"), &[("csrf_token", &token)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), format!("/instances/{id}"));
    assert_eq!(
        app.core
            .instances()
            .get(user.id(), &id)
            .await
            .unwrap()
            .desired_power
            .as_str(),
        "stopped"
    );
    let (_, html) = web.get_text(&format!("/instances/{id}")).await;
    assert!(html.contains(&format!("action=\"/instances/{id}/start\"")));
    assert!(html.contains("Stop requested"));

    // Delete: a confirmation page; the wrong name deletes nothing.
    let (status, html) = web.get_text(&format!("/instances/{id}/delete")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Delete gw?"));
    let resp = web
        .submit(
            &format!("/instances/{id}/delete"),
            &format!("/instances/{id}/delete"),
            &[("confirm_name", "gx")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Type gw exactly to confirm.")
    );
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&id), 50, None)
        .await
        .unwrap();
    assert!(
        !events
            .iter()
            .any(|e| e.action == "instance_delete_requested")
    );
    let resp = web
        .submit(
            &format!("/instances/{id}/delete"),
            &format!("/instances/{id}/delete"),
            &[("confirm_name", "gw")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/instances");
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&id), 50, None)
        .await
        .unwrap();
    let deleted = events
        .iter()
        .find(|e| e.action == "instance_delete_requested")
        .unwrap();
    assert_eq!(deleted.actor, format!("user:{}", user.email));
}

#[tokio::test]
async fn access_1_charts_draw_the_stored_samples() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "gw").await;
    force_state(&app, &id, "running").await;
    let now = app.core.now();
    let samples: Vec<MetricSample> = (0..4)
        .map(|i| MetricSample {
            instance_id: id.clone(),
            at: now - chrono::Duration::minutes(40 - i * 10),
            cpu_percent: Some(25.0),
            memory_used_bytes: Some(200 << 20),
            disk_used_bytes: Some(1 << 30),
            net_rx_bytes: Some(60_000 * i as u64),
            net_tx_bytes: Some(30_000 * i as u64),
            uptime_secs: Some(3600 + 600 * i as u64),
        })
        .collect();
    app.core.metrics().insert_samples(&samples).await.unwrap();
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (_, html) = web.get_text(&format!("/instances/{id}")).await;
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 4);
    assert!(
        html.matches("class=\"chart-line series-a\"").count() >= 4,
        "CPU, memory, disk, rx"
    );
    assert!(html.contains("class=\"chart-line series-b\""), "tx");
    assert!(!html.contains("No data yet"));
    assert!(html.contains("<strong>25%</strong>"));
    assert!(html.contains("<strong>200 MiB</strong>"));
    // 60 000 bytes per 10 minutes = 100 B/s.
    assert!(html.contains("100 B/s"));
    // Ranges switch by link; an unknown one falls back to the hour.
    let (status, html) = web.get_text(&format!("/instances/{id}?range=30d")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("href=\"?range=30d\" aria-current=\"page\""));
    let (status, _) = web.get_text(&format!("/instances/{id}?range=zzz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn access_3_operator_pages_404_for_others_list_hosts_and_record_views() {
    let app = TestApp::start().await;
    let host_id = fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "gw").await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    for path in [
        "/operator/hosts",
        "/operator/instances",
        &format!("/operator/instances/{id}"),
    ] {
        let (status, _) = web.get_text(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let op = app.with_operator().await;
    let mut ow = WebClient::new(&app);
    ow.login(&op).await;
    let (status, html) = ow.get_text("/operator/hosts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("fra1-a"));
    assert!(html.contains(&esc("1 / 8 vCPU")));
    assert!(html.contains(&esc("2.0 GiB / 8.0 GiB")));
    assert!(html.contains("<progress class=\"loadbar-bar\""));
    assert!(html.contains("reachable"));
    assert!(
        !html.contains("agent-token-"),
        "DATA-3: the token is never shown"
    );

    // Register: an agent nobody runs is refused with the reason, the input kept.
    let fp = vec!["AB"; 32].join(":");
    let resp = ow
        .submit(
            "/operator/hosts",
            "/operator/hosts",
            &[
                ("url", "https://127.0.0.1:1"),
                ("fingerprint", &fp),
                ("token", "secret-tok"),
                ("location", "DE"),
                ("site", "x"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains(&esc("Cannot reach the agent at https://127.0.0.1:1")));
    assert!(html.contains(&format!("value=\"{}\"", esc("https://127.0.0.1:1"))));
    assert!(!html.contains("secret-tok"));

    // Disable, then the host shows so and takes no new instances.
    let (_, html) = ow.get_text("/operator/hosts").await;
    let token = csrf_from(&html);
    let resp = ow
        .post_raw(
            &format!("/operator/hosts/{host_id}/disable"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, html) = ow.get_text("/operator/hosts").await;
    assert!(html.contains("badge badge-warn\">disabled"));
    assert!(!app.core.hosts().get(&host_id).await.unwrap().enabled);

    let (status, html) = ow.get_text("/operator/instances").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&user.email));
    assert!(html.contains(&format!("href=\"/operator/instances/{id}\"")));
    let (status, html) = ow.get_text(&format!("/operator/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>gw</h1>"));
    // Read-only for operators: no lifecycle forms on someone else's instance.
    assert!(!html.contains(&format!("action=\"/instances/{id}/stop\"")));
    // ACCESS-3: the operator's view is an event the owner can read.
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&id), 50, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "instance_viewed_by_operator" && e.actor.starts_with("operator:")),
        "operator view not in the owner's events: {events:?}"
    );
}

/// ACCESS-1: the hostname, its HTTPS URL and the "DNS records" in the API,
/// the dashboard and (for operators only) the last DNS failure.
#[tokio::test]
async fn access_1_hostname_https_url_and_dns_records_are_shown() {
    let app = TestApp::builder()
        .config(|c| {
            c.instances_domain =
                Some(clawy_core::config::DnsName::parse("claws.example.com", "t", 2).unwrap());
        })
        .start()
        .await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (_, manage) = app
        .with_api_key(&user, clawy_core::actor::Tier::Manage)
        .await;
    let inst = crate::common::json(
        crate::api_instances::create(&app, &manage, serde_json::json!({"name": "web"})).await,
    )
    .await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("web-{}.claws.example.com", &id[..8]);
    assert_eq!(inst["hostname"], host.as_str());
    assert_eq!(inst["https_url"], format!("https://{host}/").as_str());
    assert_eq!(inst["dns_records"], serde_json::json!([]));
    // What the DNS pass stores once published (tested against knot in the
    // orchestrator's dns_jobs tests), with a failure text for operators.
    sqlx::query(
        "UPDATE instances SET dns_state = 'published', dns_a = '192.0.2.10', \
         dns_aaaa = '2001:db8::10', dns_error = 'DNS server 192.0.2.53:53 did not answer within 5 s' \
         WHERE id = $1",
    )
    .bind(&id)
    .execute(app.core.store().pool())
    .await
    .unwrap();
    let one = crate::common::json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &manage)
            .await,
    )
    .await;
    assert_eq!(
        one["dns_records"],
        serde_json::json!([
            {"name": host, "type": "A", "value": "192.0.2.10", "status": "published"},
            {"name": host, "type": "AAAA", "value": "2001:db8::10", "status": "published"},
        ])
    );
    assert!(
        one.get("dns_error").is_none(),
        "owners do not get operator detail"
    );

    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (status, html) = web.get_text(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("DNS records"), "{html}");
    let url = esc(&format!("https://{host}/"));
    assert!(html.contains(&format!("href=\"{url}\"")), "{html}");
    assert!(html.contains(&format!("{host} A 192.0.2.10")), "{html}");

    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, clawy_core::actor::Tier::Admin).await;
    let list =
        crate::common::json(app.get_with_key("/api/v1/admin/instances", &op_key).await).await;
    assert_eq!(
        list["instances"][0]["dns_error"], "DNS server 192.0.2.53:53 did not answer within 5 s",
        "{list}"
    );

    let mut opweb = WebClient::new(&app);
    opweb.login(&op).await;
    let (status, html) = opweb.get_text("/operator/instances").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("DNS server 192.0.2.53:53 did not answer within 5 s"),
        "operators see the DNS failure: {html}"
    );

    // Deleted: no URL any more (the hostname itself stays reserved and shown).
    force_state(&app, &id, "deleted").await;
    let one = crate::common::json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &manage)
            .await,
    )
    .await;
    assert_eq!(one["hostname"], host.as_str());
    assert!(one["https_url"].is_null());
}
