//! `/api/v1/instances`, `/plans`, `/regions`, `/admin/hosts`, `/admin/plans`,
//! `/admin/instances`: validation, quota, the capacity error text, owner scoping,
//! instance events (ACCESS-3), metrics JSON, `unknown` for unreachable hosts, and host
//! registration through a pinned connection to the real agent binary (DATA-3).
//!
//! No job runner runs here, so instances stay `pending` unless a test plays the
//! runner's part with a direct state update (marked where it does).

use crate::common::{TestApp, TestUser, json, random_ed25519_pub};
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_core::hosts::RegisterHost;
use clawy_core::metrics::MetricSample;
use clawy_core::{ExposeSecret, SecretString};
use clawy_proto::agent::{HostInfo, HostNetwork, Resources};
use reqwest::{Method, StatusCode};

/// A host registered straight through core with the capacity and network an agent
/// would report (no agent process: for tests that never reach a VM).
pub async fn fake_host(
    app: &TestApp,
    name: &str,
    region: &str,
    capacity: Resources,
    third_octet: u8,
) -> String {
    let host = app
        .core
        .hosts()
        .register(
            &Actor::system(),
            RegisterHost {
                name: name.to_string(),
                url: format!("https://127.0.0.1:{}", 9000 + u16::from(third_octet)),
                fingerprint: vec!["AB"; 32].join(":"),
                token: SecretString::from(format!("agent-token-{name}")),
                region: region.to_string(),
                site: "lab1".to_string(),
                enabled: true,
            },
        )
        .await
        .unwrap();
    app.core
        .hosts()
        .update_info(
            &host.id,
            &HostInfo {
                hostname: name.to_string(),
                location: format!("{region}-lab1"),
                driver: "qemu".into(),
                accelerator: "tcg".into(),
                cpu_cores: capacity.vcpus,
                memory_mib: capacity.memory_mib,
                disk_gib: capacity.disk_gib,
                capacity,
                allocated: Resources {
                    vcpus: 0,
                    memory_mib: 0,
                    disk_gib: 0,
                },
                vm_count: 0,
                agent_version: "test".into(),
                network: Some(HostNetwork {
                    subnet: format!("10.77.{third_octet}.0/24"),
                    gateway: format!("10.77.{third_octet}.1"),
                    ssh_port_range: [22000, 22099],
                }),
                edge: None,
                heartbeat_refusals: Default::default(),
            },
        )
        .await
        .unwrap();
    host.id
}

/// Room for a few `stand-in` (1 vCPU, 512 MiB, 2 GiB) instances.
pub const ROOMY: Resources = Resources {
    vcpus: 8,
    memory_mib: 8192,
    disk_gib: 100,
};

/// An SSH key of `user`, added through core; returns its id.
pub async fn ssh_key(app: &TestApp, user: &TestUser) -> String {
    app.core
        .ssh_keys()
        .add(user.id(), "laptop", &random_ed25519_pub(), &Actor::system())
        .await
        .unwrap()
        .id
}

pub async fn create(app: &TestApp, key: &str, body: serde_json::Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/instances")
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Creates an instance through core (as `user`), returns its id.
pub async fn instance_of(app: &TestApp, user: &TestUser, name: &str) -> String {
    app.core
        .instances()
        .create(
            &Actor::system(),
            user.id(),
            clawy_core::instances::CreateInstance {
                name: name.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id
}

/// Plays the job runner's part (there is none in these tests): sets the stored state.
pub async fn force_state(app: &TestApp, id: &str, state: &str) {
    sqlx::query("UPDATE instances SET state = $1 WHERE id = $2")
        .bind(state)
        .bind(id)
        .execute(app.core.store().pool())
        .await
        .unwrap();
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    (status, json(resp).await["error"].clone())
}

#[tokio::test]
async fn iso_2_create_places_on_a_host_and_returns_the_instance() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let key_id = ssh_key(&app, &user).await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;

    let resp = create(
        &app,
        &manage,
        serde_json::json!({"name": "web", "ssh_key_ids": [key_id]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let inst = json(resp).await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(inst["name"], "web");
    assert_eq!(inst["state"], "pending");
    assert_eq!(inst["desired_power"], "running");
    assert_eq!(inst["plan"], "small");
    assert_eq!(inst["region"], "DE");
    assert_eq!(inst["host_location"], "DE-lab1");
    // IPAM: the lowest free address after the gateway, the lowest port of the range.
    assert_eq!(inst["private_ip"], "10.77.3.2");
    assert_eq!(inst["ssh_port"], 22000);
    assert_eq!(inst["ssh_command"], "ssh -p 22000 claw@127.0.0.1");
    assert_eq!(inst["health"]["gateway"], "unknown");
    assert_eq!(inst["health"]["services"][0]["name"], "gateway");
    assert!(inst["created_at"].is_string());

    // The next one gets the next address and port (a clock step fixes the list order).
    app.clock.advance(std::time::Duration::from_secs(1));
    let second = json(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "web2", "plan": "stand-in", "region": "de"}),
        )
        .await,
    )
    .await;
    assert_eq!(second["private_ip"], "10.77.3.3");
    assert_eq!(second["ssh_port"], 22001);

    let list = json(app.get_with_key("/api/v1/instances", &manage).await).await;
    let names: Vec<_> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "web2"]);
    let one = json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &manage)
            .await,
    )
    .await;
    assert_eq!(one["id"], id.as_str());
    // AUTH-4: the chosen key was copied into the instance.
    let keys = app.core.instances().ssh_keys(&id).await.unwrap();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn create_validation_names_the_field() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;

    for bad in ["", "Web", "-web", "web-", "a_b", "a.b", &"a".repeat(64)] {
        let (status, err) =
            error_of(create(&app, &manage, serde_json::json!({"name": bad})).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert_eq!(err["code"], "invalid_name");
        assert_eq!(err["field"], "name");
    }
    let resp = create(&app, &manage, serde_json::json!({"name": "web"})).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, err) =
        error_of(create(&app, &manage, serde_json::json!({"name": "web"})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "name_taken");
    assert_eq!(err["message"], "You already have an instance named web.");

    // DATA-2: a country outside the policy is refused before anything is reserved.
    let (status, err) = error_of(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "us1", "region": "US"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["code"], "region_not_allowed");
    assert_eq!(err["field"], "region");

    let (status, err) = error_of(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "p", "plan": "huge"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["message"].as_str().unwrap().contains("huge"));

    // AUTH-4: another user's key id is "no such key", never used.
    let other = app.with_user().await;
    let foreign_key = ssh_key(&app, &other).await;
    let (status, _) = error_of(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "k", "ssh_key_ids": [foreign_key]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Unknown fields are refused, so typos do not silently fall back to defaults.
    let (status, err) = error_of(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "x", "plans": "stand-in"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["code"], "invalid_body");
}

#[tokio::test]
async fn quota_is_enforced_per_user() {
    let app = TestApp::builder()
        .config(|c| c.instance_quota = 2)
        .start()
        .await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    for name in ["a", "b"] {
        assert_eq!(
            create(&app, &manage, serde_json::json!({"name": name}))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let (status, err) =
        error_of(create(&app, &manage, serde_json::json!({"name": "c"})).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "quota_exceeded");
    assert_eq!(
        err["message"],
        "You have reached your limit of 2 instances. Delete one first."
    );
    // Another user has their own quota.
    let other = app.with_user().await;
    let (_, other_key) = app.with_api_key(&other, Tier::Manage).await;
    assert_eq!(
        create(&app, &other_key, serde_json::json!({"name": "a"}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn iso_2_no_capacity_has_a_clear_message() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    // No host at all.
    let (status, err) =
        error_of(create(&app, &manage, serde_json::json!({"name": "a"})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "no_capacity");
    assert_eq!(err["message"], "no capacity in region DE for plan small");

    // Room for exactly one instance of the default plan: never overcommitted.
    fake_host(
        &app,
        "stand-in",
        "DE",
        Resources {
            vcpus: 1,
            memory_mib: 2048,
            disk_gib: 10,
        },
        4,
    )
    .await;
    assert_eq!(
        create(&app, &manage, serde_json::json!({"name": "a"}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let (status, err) =
        error_of(create(&app, &manage, serde_json::json!({"name": "b"})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["message"], "no capacity in region DE for plan small");
    let (_, err) = error_of(
        create(
            &app,
            &manage,
            serde_json::json!({"name": "c", "plan": "medium"}),
        )
        .await,
    )
    .await;
    assert_eq!(err["message"], "no capacity in region DE for plan medium");
}

#[tokio::test]
async fn another_users_instance_is_404_everywhere() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let owner = app.with_user().await;
    let id = instance_of(&app, &owner, "mine").await;
    let stranger = app.with_user().await;
    let (_, admin) = app.with_api_key(&stranger, Tier::Admin).await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/instances/{id}")),
        (Method::DELETE, format!("/api/v1/instances/{id}")),
        (Method::POST, format!("/api/v1/instances/{id}/start")),
        (Method::POST, format!("/api/v1/instances/{id}/stop")),
        (Method::POST, format!("/api/v1/instances/{id}/reboot")),
        (Method::POST, format!("/api/v1/instances/{id}/retry")),
        (Method::GET, format!("/api/v1/instances/{id}/metrics")),
        (Method::GET, format!("/api/v1/instances/{id}/events")),
    ] {
        let resp = app
            .request(method.clone(), &path)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
        // Exactly the body of an id that does not exist.
        let unknown = app
            .request(
                method.clone(),
                &path.replace(&id, "00000000-0000-0000-0000-000000000000"),
            )
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(json(resp).await, json(unknown).await);
    }
    let list = json(app.get_with_key("/api/v1/instances", &admin).await).await;
    assert_eq!(list["instances"].as_array().unwrap().len(), 0);
    // Nothing was queued for the owner's instance.
    let inst = app.core.instances().get(owner.id(), &id).await.unwrap();
    assert_eq!(inst.desired_power.as_str(), "running");
}

#[tokio::test]
async fn access_3_every_action_is_an_event_with_its_actor() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (key_id, manage) = app.with_api_key(&user, Tier::Manage).await;
    let prefix = app
        .core
        .api_keys()
        .list(user.id())
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == key_id)
        .unwrap()
        .prefix;
    let inst = json(create(&app, &manage, serde_json::json!({"name": "web"})).await).await;
    let id = inst["id"].as_str().unwrap();

    let resp = app
        .request(Method::POST, &format!("/api/v1/instances/{id}/stop"))
        .bearer_auth(&manage)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(json(resp).await["desired_power"], "stopped");
    let resp = app
        .request(Method::POST, &format!("/api/v1/instances/{id}/start"))
        .bearer_auth(&manage)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // Reboot needs a running VM; retry needs an error: refused with the reason.
    let (status, err) = error_of(
        app.request(Method::POST, &format!("/api/v1/instances/{id}/reboot"))
            .bearer_auth(&manage)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "invalid_state");
    let (status, _) = error_of(
        app.request(Method::POST, &format!("/api/v1/instances/{id}/retry"))
            .bearer_auth(&manage)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A browser session acts as the person (CSRF and origin checked).
    let s = app.login_session(&user).await;
    let resp = app
        .request(Method::DELETE, &format!("/api/v1/instances/{id}"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .header("origin", app.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // Deleting again is harmless.
    let resp = app
        .request(Method::DELETE, &format!("/api/v1/instances/{id}"))
        .bearer_auth(&manage)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // An operator's action on it names the operator.
    let (_, read) = app.with_api_key(&user, Tier::Read).await;
    let page = json(
        app.get_with_key(&format!("/api/v1/instances/{id}/events"), &read)
            .await,
    )
    .await;
    let events: Vec<(String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let api = format!("api_key:{prefix}");
    let web = format!("user:{}", user.email);
    for expected in [
        ("instance_created", api.as_str()),
        ("instance_stop_requested", api.as_str()),
        ("instance_start_requested", api.as_str()),
        ("instance_delete_requested", web.as_str()),
    ] {
        assert!(
            events
                .iter()
                .any(|(k, a)| k == expected.0 && a == expected.1),
            "missing {expected:?} in {events:?}"
        );
    }
    // Newest first.
    assert_eq!(events[0].0, "instance_delete_requested");
}

#[tokio::test]
async fn access_1_metrics_json_per_range() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "web").await;
    let now = app.core.now();
    let samples: Vec<MetricSample> = (0..3)
        .map(|i| MetricSample {
            instance_id: id.clone(),
            at: now - chrono::Duration::minutes(30 - i * 10),
            cpu_percent: Some(10.0 * (i + 1) as f64),
            memory_used_bytes: Some(100 << 20),
            disk_used_bytes: Some(1 << 30),
            net_rx_bytes: Some(1000 * i as u64),
            net_tx_bytes: Some(500 * i as u64),
            uptime_secs: Some(600 * (i as u64 + 1)),
        })
        .collect();
    app.core.metrics().insert_samples(&samples).await.unwrap();
    let (_, read) = app.with_api_key(&user, Tier::Read).await;
    let m = json(
        app.get_with_key(&format!("/api/v1/instances/{id}/metrics"), &read)
            .await,
    )
    .await;
    assert_eq!(m["range"], "1h");
    assert_eq!(m["instance_id"], id.as_str());
    let pts = m["points"].as_array().unwrap();
    assert_eq!(pts.len(), 3);
    assert_eq!(pts[2]["cpu_percent"], 30.0);
    assert_eq!(pts[0]["memory_used_bytes"], 100 << 20);
    let day = json(
        app.get_with_key(&format!("/api/v1/instances/{id}/metrics?range=24h"), &read)
            .await,
    )
    .await;
    assert_eq!(day["points"].as_array().unwrap().len(), 3);
    let (status, err) = error_of(
        app.get_with_key(&format!("/api/v1/instances/{id}/metrics?range=7d"), &read)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "range");
}

#[tokio::test]
async fn unreachable_host_reports_unknown_with_last_contact() {
    let app = TestApp::start().await;
    let host_id = fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "web").await;
    force_state(&app, &id, "running").await;
    let (_, read) = app.with_api_key(&user, Tier::Read).await;
    let inst = json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &read)
            .await,
    )
    .await;
    assert_eq!(inst["state"], "running");
    let contact = inst["last_contact_at"].clone();
    assert!(contact.is_string());

    app.core
        .hosts()
        .mark_contact(&host_id, Err("connection refused"))
        .await
        .unwrap();
    let inst = json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &read)
            .await,
    )
    .await;
    assert_eq!(inst["state"], "unknown", "never the stale state");
    assert_eq!(inst["last_contact_at"], contact);
    assert_eq!(inst["health"]["gateway"], "unknown");
    let list = json(app.get_with_key("/api/v1/instances", &read).await).await;
    assert_eq!(list["instances"][0]["state"], "unknown");
}

#[tokio::test]
async fn plans_and_regions() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let (_, read) = app.with_api_key(&user, Tier::Read).await;
    let plans = json(app.get_with_key("/api/v1/plans", &read).await).await;
    let got: Vec<(String, u64, u64, u64, bool)> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["vcpus"].as_u64().unwrap(),
                p["memory_mib"].as_u64().unwrap(),
                p["disk_gib"].as_u64().unwrap(),
                p["is_default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("stand-in".to_string(), 1, 512, 2, false),
            ("small".to_string(), 1, 2048, 10, true),
            ("medium".to_string(), 2, 2048, 10, false),
            ("large".to_string(), 4, 8192, 40, false),
        ]
    );
    // DATA-2: no host yet, no region; a host outside the allowed countries adds none.
    let regions = json(app.get_with_key("/api/v1/regions", &read).await).await;
    assert_eq!(regions["regions"].as_array().unwrap().len(), 0);
    fake_host(&app, "us-a", "US", ROOMY, 5).await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let regions = json(app.get_with_key("/api/v1/regions", &read).await).await;
    assert_eq!(
        regions["regions"],
        serde_json::json!([{"code": "DE", "hosts": 1, "has_capacity": true, "is_default": true}])
    );
}

#[tokio::test]
async fn operator_manages_plans_others_get_404() {
    let app = TestApp::start().await;
    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, Tier::Admin).await;
    let user = app.with_user().await;
    let (_, user_admin) = app.with_api_key(&user, Tier::Admin).await;
    let body = serde_json::json!({"name": "xl", "vcpus": 8, "memory_mib": 16384, "disk_gib": 80});
    let resp = app
        .request(Method::POST, "/api/v1/admin/plans")
        .bearer_auth(&user_admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app
        .request(Method::POST, "/api/v1/admin/plans")
        .bearer_auth(&op_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(json(resp).await["name"], "xl");
    let resp = app
        .request(Method::PATCH, "/api/v1/admin/plans/xl")
        .bearer_auth(&op_key)
        .json(&serde_json::json!({"disk_gib": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let p = json(resp).await;
    assert_eq!(
        (p["vcpus"].as_u64(), p["disk_gib"].as_u64()),
        (Some(8), Some(120))
    );
    let (status, err) = error_of(
        app.request(Method::PATCH, "/api/v1/admin/plans/xl")
            .bearer_auth(&op_key)
            .json(&serde_json::json!({"vcpus": 0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "vcpus");
    let resp = app
        .request(Method::PATCH, "/api/v1/admin/plans/nope")
        .bearer_auth(&op_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let plans = json(app.get_with_key("/api/v1/plans", &user_admin).await).await;
    assert!(
        plans["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "xl")
    );
}

#[tokio::test]
async fn operator_lists_all_instances_in_pages() {
    let app = TestApp::builder()
        .config(|c| c.instance_quota = 10)
        .start()
        .await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let a = app.with_user().await;
    let b = app.with_user().await;
    // Oldest first: a clock step between creates makes the order certain.
    for n in ["a1", "a2", "a3"] {
        instance_of(&app, &a, n).await;
        app.clock.advance(std::time::Duration::from_secs(1));
    }
    instance_of(&app, &b, "b1").await;
    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, Tier::Admin).await;
    let first = json(
        app.get_with_key("/api/v1/admin/instances?limit=3", &op_key)
            .await,
    )
    .await;
    assert_eq!(first["instances"].as_array().unwrap().len(), 3);
    assert_eq!(first["instances"][0]["owner_email"], a.email.as_str());
    assert!(first["instances"][0]["host_id"].is_string());
    let after = first["next_after"].as_str().unwrap();
    let second = json(
        app.get_with_key(
            &format!("/api/v1/admin/instances?limit=3&after={after}"),
            &op_key,
        )
        .await,
    )
    .await;
    assert_eq!(second["instances"].as_array().unwrap().len(), 1);
    assert_eq!(second["instances"][0]["name"], "b1");
    assert_eq!(second["instances"][0]["owner_email"], b.email.as_str());
    assert!(second["next_after"].is_null());
    // A non-operator's admin key: the route does not exist for them.
    let (_, a_admin) = app.with_api_key(&a, Tier::Admin).await;
    assert_eq!(
        app.get_with_key("/api/v1/admin/instances", &a_admin)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn data_3_host_registration_refuses_what_it_cannot_verify() {
    let app = TestApp::start().await;
    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, Tier::Admin).await;
    let post = |body: serde_json::Value| {
        app.request(Method::POST, "/api/v1/admin/hosts")
            .bearer_auth(&op_key)
            .json(&body)
            .send()
    };
    let fp = vec!["AB"; 32].join(":");
    // Nothing listens on port 1.
    let (status, err) = error_of(post(serde_json::json!({"url": "https://127.0.0.1:1", "fingerprint": fp, "token": "t", "location": "DE"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["code"], "agent_unreachable");
    assert_eq!(err["field"], "url");
    let (status, err) = error_of(post(serde_json::json!({"url": "http://127.0.0.1:1", "fingerprint": fp, "token": "t", "location": "DE"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "url");
    let (status, err) = error_of(post(serde_json::json!({"url": "https://127.0.0.1:1", "fingerprint": "abc", "token": "t", "location": "DE"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "fingerprint");
    assert_eq!(
        json(app.get_with_key("/api/v1/admin/hosts", &op_key).await).await["hosts"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn operator_disables_a_host_and_placement_stops_using_it() {
    let app = TestApp::start().await;
    let host_id = fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, Tier::Admin).await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    assert_eq!(
        create(&app, &manage, serde_json::json!({"name": "a"}))
            .await
            .status(),
        StatusCode::CREATED
    );

    let hosts = json(app.get_with_key("/api/v1/admin/hosts", &op_key).await).await;
    let h = &hosts["hosts"][0];
    assert_eq!(h["name"], "fra1-a");
    assert_eq!(h["location"], "DE");
    assert_eq!(
        h["capacity"],
        serde_json::json!({"vcpus": 8, "memory_mib": 8192, "disk_gib": 100})
    );
    assert_eq!(
        h["allocated"],
        serde_json::json!({"vcpus": 1, "memory_mib": 2048, "disk_gib": 10})
    );
    assert_eq!(h["instance_count"], 1);
    assert_eq!(h["reachable"], true);
    // DATA-3: the token is never part of the answer.
    assert!(!hosts.to_string().contains("agent-token-"));
    assert!(h.get("token").is_none());

    let resp = app
        .request(Method::PATCH, &format!("/api/v1/admin/hosts/{host_id}"))
        .bearer_auth(&op_key)
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["enabled"], false);
    let (status, err) =
        error_of(create(&app, &manage, serde_json::json!({"name": "b"})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "no_capacity");
    // The change is in the audit log under the operator's name.
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::All, 50, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "host_updated" && e.actor == format!("operator:{}", op.email))
    );
}

/// DATA-3 end to end: the real agent binary, its printed fingerprint and token.
#[tokio::test]
async fn data_3_registers_a_real_agent_over_the_pinned_connection() {
    let bin = clawy_bin();
    let agent = clawy_testkit::agent::TestAgent::start(&bin, Default::default(), None)
        .await
        .expect("agent");
    let app = TestApp::start().await;
    let op = app.with_operator().await;
    let (_, op_key) = app.with_api_key(&op, Tier::Admin).await;
    let post = |fingerprint: String, token: String| {
        app.request(Method::POST, "/api/v1/admin/hosts")
            .bearer_auth(&op_key)
            .json(&serde_json::json!({"url": agent.base_url, "fingerprint": fingerprint, "token": token, "location": "DE", "site": "lab1"}))
            .send()
    };
    // Another certificate's fingerprint: refused, nothing stored.
    let wrong_fp = vec!["0F"; 32].join(":");
    let (status, err) = error_of(post(wrong_fp, agent.token.clone()).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["code"], "fingerprint_mismatch");
    assert_eq!(err["field"], "fingerprint");
    // A wrong token: refused.
    let (status, err) = error_of(
        post(agent.fingerprint.clone(), "clawy-agent-wrong".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["field"], "token");
    // Right ones: stored with what the agent reported.
    let resp = post(agent.fingerprint.clone(), agent.token.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let h = json(resp).await;
    assert_eq!(h["location"], "DE");
    assert_eq!(h["site"], "lab1");
    assert_eq!(h["reachable"], true);
    assert_eq!(h["accelerator"], "tcg");
    assert!(h["capacity"]["vcpus"].as_u64().unwrap() > 0);
    assert!(!h.to_string().contains(&agent.token));
    // DATA-4: the token is stored sealed, not in plain text.
    let (id, url, fp, raw): (String, String, String, String) =
        sqlx::query_as("SELECT id, url, fingerprint, token_sealed FROM hosts")
            .fetch_one(app.core.store().pool())
            .await
            .unwrap();
    assert!(!raw.contains(&agent.token));
    // Sealed, not merely encoded: the operator key (read from its file) opens it,
    // bound to this host row; a fresh key does not.
    let ctx = clawy_core::hosts::token_context(&id, &url, &fp);
    let operator_key =
        clawy_core::SecretKey::load_or_create(&app.core.config().secret_key_file).unwrap();
    assert_eq!(
        operator_key.open_bound(&raw, &ctx).unwrap().expose_secret(),
        agent.token
    );
    assert!(
        clawy_core::SecretKey::generate()
            .open_bound(&raw, &ctx)
            .is_err()
    );
    let hosts = json(app.get_with_key("/api/v1/admin/hosts", &op_key).await).await;
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 1);
    // DATA-3: neither the refused nor the accepted token reached the logs.
    let logs = crate::common::captured_logs();
    assert!(!logs.contains(&agent.token));
    assert!(!logs.contains("clawy-agent-wrong"));
}

/// The `clawy` binary (built by `cargo test --workspace` / `scripts/test-all` before
/// any test runs), next to this test binary's `deps` directory.
pub fn clawy_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("clawy");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p clawy-cli` (scripts/test-all does)",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn data5_secrets_are_checked_sealed_and_the_gateway_token_shown_once() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    const TG: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ";
    const MK: &str = "sk-ant-api03-ThisIsTheOwnersModelKey0123456789";
    clawy_testkit::secrets::register(TG);
    clawy_testkit::secrets::register(MK);

    // Formats are checked; the answer names the field and never echoes the value.
    for (body, field) in [
        (
            serde_json::json!({"name": "a", "telegram_bot_token": "123:short-and-wrong"}),
            "telegram_bot_token",
        ),
        (
            serde_json::json!({"name": "a", "model_provider": "anthropic", "model_key": "sk-live-wrong-prefix-0123456789"}),
            "model_key",
        ),
        (
            serde_json::json!({"name": "a", "model_key": MK}),
            "model_provider",
        ),
    ] {
        let (status, err) = error_of(create(&app, &manage, body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err["code"], "invalid_secret");
        assert_eq!(err["field"], field);
        let text = err.to_string();
        assert!(
            !text.contains("short-and-wrong") && !text.contains("wrong-prefix"),
            "{text}"
        );
    }

    let resp = create(
        &app,
        &manage,
        serde_json::json!({"name": "gw", "telegram_bot_token": TG,
            "model_provider": "anthropic", "model_key": MK}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let inst = json(resp).await;
    let token = inst["gateway_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    clawy_testkit::secrets::register(&token);
    let id = inst["id"].as_str().unwrap().to_string();
    // Shown once: no later answer holds it.
    let again = json(
        app.get_with_key(&format!("/api/v1/instances/{id}"), &manage)
            .await,
    )
    .await;
    assert!(again.get("gateway_token").is_none(), "{again}");
    let list = json(app.get_with_key("/api/v1/instances", &manage).await).await;
    assert!(!list.to_string().contains(&token));

    // Sealed, bound to the instance: no plain copy anywhere in the database.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT instance_id, sealed FROM instance_guest_secrets")
            .fetch_all(app.core.store().pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, id);
    for plain in [TG, MK, token.as_str()] {
        assert!(!rows[0].1.contains(plain));
    }
    let opened = app
        .core
        .guest_secrets()
        .pending(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.gateway_token, token);
    assert_eq!(opened.telegram_bot_token.as_deref(), Some(TG));
    assert_eq!(opened.model_key.as_ref().unwrap().key, MK);

    // Erased on delivery: nothing left, delivery time recorded, idempotent.
    assert!(app.core.guest_secrets().erase(&id).await.unwrap());
    assert!(
        app.core
            .guest_secrets()
            .pending(&id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        app.core
            .guest_secrets()
            .delivered_at(&id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(!app.core.guest_secrets().erase(&id).await.unwrap());
}

/// ACCESS-1: the API shows each service the guest's heartbeat reports, with its
/// state and age; once the heartbeat is older than three intervals every one of
/// them is `unknown` (the injected clock moves, nothing else).
#[tokio::test]
async fn access_1_api_shows_heartbeat_services_with_age_and_stale_as_unknown() {
    use clawy_core::Clock as _;
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let (_, manage) = app.with_api_key(&user, Tier::Manage).await;
    let inst = json(create(&app, &manage, serde_json::json!({"name": "hb"})).await).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let services = |v: &serde_json::Value| -> Vec<(String, String, Option<u64>)> {
        v["health"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["state"].as_str().unwrap().to_string(),
                    s["age_secs"].as_u64(),
                )
            })
            .collect()
    };
    // Before any heartbeat: all unknown.
    let before = services(&inst);
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.iter().all(|(_, s, _)| s == "unknown"), "{before:?}");

    let facts = r#"{"v":1,"image":"clawy-openclaw-2026.9.6-1","boot_id":"unknown","booted_at":"2026-11-30T20:00:00Z","sent_at":"2026-11-30T20:01:30Z","config_applied":true,"cloud_init":"done","services":{"openclaw_gateway":{"state":"active","ready":true},"sshd":{"state":"active"},"ufw":{"state":"active","default_incoming":"deny"},"fail2ban":{"state":"failed","jails":[]}}}"#;
    let now = app.clock.now();
    app.core
        .metrics()
        .record_health(&clawy_core::metrics::HealthUpdate {
            instance_id: id.clone(),
            checked_at: now,
            vm_state: Some("running".into()),
            tcp_ok: Some(true),
            http_status: Some(200),
            latency_ms: Some(1),
            uptime_secs: Some(60),
            heartbeat: Some((facts.to_string(), now - chrono::Duration::seconds(5))),
        })
        .await
        .unwrap();
    let get = || async {
        json(
            app.get_with_key(&format!("/api/v1/instances/{id}"), &manage)
                .await,
        )
        .await
    };
    let fresh = services(&get().await);
    let s = |n: &str, st: &str, a: Option<u64>| (n.to_string(), st.to_string(), a);
    assert_eq!(
        fresh[1..],
        [
            s("openclaw_gateway", "ok", Some(5)),
            s("sshd", "ok", Some(5)),
            s("ufw", "ok", Some(5)),
            s("fail2ban", "down", Some(5)),
        ]
    );
    app.clock.advance(std::time::Duration::from_secs(86));
    let stale = services(&get().await);
    assert!(
        stale[1..]
            .iter()
            .all(|(_, st, age)| st == "unknown" && *age == Some(91)),
        "{stale:?}"
    );
}
