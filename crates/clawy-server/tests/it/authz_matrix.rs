//! The authorization matrix (AUTH-2, AUTH-3): every API route × every kind of caller →
//! the expected status, from the one route table (`clawy_server::api::ROUTES`, which
//! also builds the router). The first user is not an operator; the last three columns
//! are an operator's admin key, session and manage key (operator routes need the full
//! rights of the account, so the manage key gets 404 there). Each cell acts on fresh
//! objects, so one cell's change cannot hide a missing check in another. Removing or
//! weakening any authorization check changes at least one cell and fails this test.
//!
//! (One table since the two matrices, this file's and `authz_instances.rs`'s
//! `auth_2_auth_3_instance_and_operator_authorization_matrix`, were merged; their rows
//! and expectations are unchanged, the account routes gained the operator columns.)

use crate::api_instances::fake_host;
use crate::common::{TestApp, TestSession, TestUser, json, random_ed25519_pub, random_suffix};
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_proto::agent::Resources;
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    ReadKey,
    ManageKey,
    AdminKey,
    /// Another (non-operator) user's admin key, on the first user's objects.
    OtherAdminKey,
    SessionWithCsrf,
    SessionWithoutCsrf,
    RevokedKey,
    ExpiredKey,
    OperatorAdminKey,
    OperatorSession,
    OperatorManageKey,
}

const WHO: [Who; 12] = [
    Who::Anonymous,
    Who::ReadKey,
    Who::ManageKey,
    Who::AdminKey,
    Who::OtherAdminKey,
    Who::SessionWithCsrf,
    Who::SessionWithoutCsrf,
    Who::RevokedKey,
    Who::ExpiredKey,
    Who::OperatorAdminKey,
    Who::OperatorSession,
    Who::OperatorManageKey,
];

/// What a route acts on.
#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    /// A fresh API key of the first user (its id goes into `{id}`).
    FirstUsersApiKey,
    /// A fresh SSH key of the first user.
    FirstUsersSshKey,
    /// A fresh instance of the first user.
    FirstUsersInstance,
    /// A registered host.
    Host,
    /// The seeded `medium` plan.
    Plan,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    NewApiKey,
    NewSshKey,
    Report,
    NewInstance,
    /// An agent URL nothing listens on: an authorized caller gets the 422 that proves
    /// the request got past authorization.
    UnreachableHost,
    EnableHost,
    /// A new token for a host whose agent does not answer: an authorized caller gets
    /// the 422 that proves the request got past authorization.
    RotateUnreachable,
    NewPlan,
    PatchPlan,
}

struct Row {
    method: &'static str,
    path: &'static str,
    target: Target,
    body: Body,
    /// Expected status per `WHO`, same order.
    expect: [u16; 12],
}

const fn row(
    method: &'static str,
    path: &'static str,
    target: Target,
    body: Body,
    expect: [u16; 12],
) -> Row {
    Row {
        method,
        path,
        target,
        body,
        expect,
    }
}

use Body as B;
use Target as T;

// Users' routes: an operator is just another user there (their own objects only).
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //                                                                        anon read mng  adm  other sess+ sess- revkd expd opAdm opSes opMng
    row("GET", "/me", T::None, B::None,                                      [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    row("GET", "/api-keys", T::None, B::None,                                [401, 403, 403, 200, 200, 200, 200, 401, 401, 200, 200, 403]),
    row("POST", "/api-keys", T::None, B::NewApiKey,                          [401, 403, 403, 201, 201, 201, 403, 401, 401, 201, 201, 403]),
    row("DELETE", "/api-keys/{id}", T::FirstUsersApiKey, B::None,            [401, 403, 403, 204, 404, 204, 403, 401, 401, 404, 404, 403]),
    row("POST", "/api-keys/{id}/regenerate", T::FirstUsersApiKey, B::None,   [401, 403, 403, 200, 404, 200, 403, 401, 401, 404, 404, 403]),
    row("GET", "/ssh-keys", T::None, B::None,                                [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    row("POST", "/ssh-keys", T::None, B::NewSshKey,                          [401, 403, 201, 201, 201, 201, 403, 401, 401, 201, 201, 201]),
    row("DELETE", "/ssh-keys/{id}", T::FirstUsersSshKey, B::None,            [401, 403, 204, 204, 404, 204, 403, 401, 401, 404, 404, 404]),
    row("GET", "/audit", T::None, B::None,                                   [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    // Public by design (REPORT-1): credentials are not even looked at.
    row("POST", "/security-reports", T::None, B::Report,                     [201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201]),
    row("GET", "/openapi.json", T::None, B::None,                            [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("GET", "/plans", T::None, B::None,                                   [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    row("GET", "/regions", T::None, B::None,                                 [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    row("GET", "/instances", T::None, B::None,                               [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200]),
    row("POST", "/instances", T::None, B::NewInstance,                       [401, 403, 201, 201, 201, 201, 403, 401, 401, 201, 201, 201]),
    row("GET", "/instances/{id}", T::FirstUsersInstance, B::None,            [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404]),
    row("DELETE", "/instances/{id}", T::FirstUsersInstance, B::None,         [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404]),
    row("POST", "/instances/{id}/start", T::FirstUsersInstance, B::None,     [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404]),
    row("POST", "/instances/{id}/stop", T::FirstUsersInstance, B::None,      [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404]),
    // A pending instance cannot reboot or retry: authorized callers get the 409.
    row("POST", "/instances/{id}/reboot", T::FirstUsersInstance, B::None,    [401, 403, 409, 409, 404, 409, 403, 401, 401, 404, 404, 404]),
    row("POST", "/instances/{id}/retry", T::FirstUsersInstance, B::None,     [401, 403, 409, 409, 404, 409, 403, 401, 401, 404, 404, 404]),
    row("GET", "/instances/{id}/metrics", T::FirstUsersInstance, B::None,    [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404]),
    row("GET", "/instances/{id}/events", T::FirstUsersInstance, B::None,     [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404]),
    // Operator routes: 404 for everyone but an operator with full rights. A cookie
    // without the CSRF token is refused (403) before the operator check.
    row("GET", "/admin/hosts", T::None, B::None,                             [401, 404, 404, 404, 404, 404, 404, 401, 401, 200, 200, 404]),
    row("POST", "/admin/hosts", T::None, B::UnreachableHost,                 [401, 404, 404, 404, 404, 404, 403, 401, 401, 422, 422, 404]),
    row("PATCH", "/admin/hosts/{id}", T::Host, B::EnableHost,                [401, 404, 404, 404, 404, 404, 403, 401, 401, 200, 200, 404]),
    row("POST", "/admin/hosts/{id}/credentials", T::Host, B::RotateUnreachable, [401, 404, 404, 404, 404, 404, 403, 401, 401, 422, 422, 404]),
    row("GET", "/admin/instances", T::None, B::None,                         [401, 404, 404, 404, 404, 404, 404, 401, 401, 200, 200, 404]),
    row("POST", "/admin/plans", T::None, B::NewPlan,                         [401, 404, 404, 404, 404, 404, 403, 401, 401, 201, 201, 404]),
    row("PATCH", "/admin/plans/{id}", T::Plan, B::PatchPlan,                 [401, 404, 404, 404, 404, 404, 403, 401, 401, 200, 200, 404]),
];

struct Callers {
    first: TestUser,
    read: String,
    manage: String,
    admin: String,
    other_admin: String,
    revoked: String,
    expired: String,
    session: TestSession,
    op_admin: String,
    op_manage: String,
    op_session: TestSession,
    host_id: String,
}

async fn callers(app: &TestApp) -> Callers {
    let first = app.with_user().await;
    let other = app.with_user().await;
    let op = app.with_operator().await;
    // Expired key first: the clock moves past its expiry before any session exists.
    let expires = app.core.now() + chrono::Duration::minutes(5);
    let (_, expired) = app
        .with_expiring_api_key(&first, Tier::Admin, expires)
        .await;
    app.clock.advance(Duration::from_secs(6 * 60));
    let (revoked_id, revoked) = app.with_api_key(&first, Tier::Admin).await;
    app.core
        .api_keys()
        .revoke(first.id(), &revoked_id, &Actor::system())
        .await
        .unwrap();
    // Room for every instance the cells create (three hosts: ports and addresses too).
    let big = Resources {
        vcpus: 10_000,
        memory_mib: 10_000_000,
        disk_gib: 100_000,
    };
    let host_id = fake_host(app, "authz-a", "DE", big, 10).await;
    fake_host(app, "authz-b", "DE", big, 11).await;
    fake_host(app, "authz-c", "DE", big, 12).await;
    Callers {
        read: app.with_api_key(&first, Tier::Read).await.1,
        manage: app.with_api_key(&first, Tier::Manage).await.1,
        admin: app.with_api_key(&first, Tier::Admin).await.1,
        other_admin: app.with_api_key(&other, Tier::Admin).await.1,
        session: app.login_session(&first).await,
        op_admin: app.with_api_key(&op, Tier::Admin).await.1,
        op_manage: app.with_api_key(&op, Tier::Manage).await.1,
        op_session: app.login_session(&op).await,
        revoked,
        expired,
        first,
        host_id,
    }
}

async fn run_cell(app: &TestApp, c: &Callers, row: &Row, who: Who) -> u16 {
    let id = match row.target {
        Target::None => String::new(),
        Target::FirstUsersApiKey => app.with_api_key(&c.first, Tier::Read).await.0,
        Target::FirstUsersSshKey => {
            app.core
                .ssh_keys()
                .add(
                    c.first.id(),
                    "victim",
                    &random_ed25519_pub(),
                    &Actor::system(),
                )
                .await
                .unwrap()
                .id
        }
        Target::FirstUsersInstance => {
            crate::api_instances::instance_of(
                app,
                &c.first,
                &format!("v{}", random_suffix(8).to_lowercase()),
            )
            .await
        }
        Target::Host => c.host_id.clone(),
        Target::Plan => "medium".to_string(),
    };
    let path = format!("/api/v1{}", row.path.replace("{id}", &id));
    let mut req = app.request(row.method.parse::<Method>().unwrap(), &path);
    req = match row.body {
        Body::None => req,
        Body::NewApiKey => req.json(&serde_json::json!({"name": "matrix", "tier": "read"})),
        Body::NewSshKey => {
            req.json(&serde_json::json!({"name": "matrix", "public_key": random_ed25519_pub()}))
        }
        Body::Report => req.json(&serde_json::json!({"title": "matrix", "details": "cell"})),
        Body::NewInstance => {
            req.json(&serde_json::json!({"name": format!("n{}", random_suffix(8).to_lowercase())}))
        }
        Body::UnreachableHost => req.json(&serde_json::json!({
            "url": "https://127.0.0.1:1",
            "fingerprint": vec!["AB"; 32].join(":"),
            "token": "t",
            "location": "DE",
        })),
        Body::EnableHost => req.json(&serde_json::json!({"enabled": true})),
        Body::RotateUnreachable => req.json(&serde_json::json!({"token": "new-agent-token"})),
        Body::NewPlan => req.json(&serde_json::json!({
            "name": format!("p{}", random_suffix(8).to_lowercase()),
            "vcpus": 1, "memory_mib": 256, "disk_gib": 1,
        })),
        Body::PatchPlan => req.json(&serde_json::json!({"disk_gib": 10})),
    };
    let with_session = |req: reqwest::RequestBuilder, s: &TestSession, csrf: bool| {
        let req = req
            .header("cookie", &s.cookie)
            .header("origin", app.origin());
        if csrf {
            req.header("x-csrf-token", &s.csrf)
        } else {
            req
        }
    };
    req = match who {
        Who::Anonymous => req,
        Who::ReadKey => req.bearer_auth(&c.read),
        Who::ManageKey => req.bearer_auth(&c.manage),
        Who::AdminKey => req.bearer_auth(&c.admin),
        Who::OtherAdminKey => req.bearer_auth(&c.other_admin),
        Who::RevokedKey => req.bearer_auth(&c.revoked),
        Who::ExpiredKey => req.bearer_auth(&c.expired),
        Who::SessionWithCsrf => with_session(req, &c.session, true),
        Who::SessionWithoutCsrf => with_session(req, &c.session, false),
        Who::OperatorAdminKey => req.bearer_auth(&c.op_admin),
        Who::OperatorSession => with_session(req, &c.op_session, true),
        Who::OperatorManageKey => req.bearer_auth(&c.op_manage),
    };
    req.send().await.unwrap().status().as_u16()
}

/// The one matrix over every route of `clawy_server::api::ROUTES`. Merges
/// `auth_2_auth_3_instance_and_operator_authorization_matrix` (formerly in
/// `authz_instances.rs`) into this test.
#[tokio::test]
async fn auth_2_auth_3_authorization_matrix() {
    let app = TestApp::builder()
        // Hundreds of deliberate failures from 127.0.0.1 must not trip AUTH-5 here.
        .config(|c| {
            c.throttle.api_key_ip_max_failures = 100_000;
            c.throttle.reports_per_hour = 100_000;
            c.instance_quota = 10_000;
        })
        .start()
        .await;
    let c = callers(&app).await;

    // Exactly one row per route of the table the router is built from: a route cannot
    // be served without a row, and no row tests a route that does not exist.
    for (method, path) in clawy_server::api::ROUTES {
        let rows = MATRIX
            .iter()
            .filter(|r| r.method == *method && r.path == *path)
            .count();
        assert_eq!(rows, 1, "matrix rows for {method} {path}");
    }
    assert_eq!(MATRIX.len(), clawy_server::api::ROUTES.len());

    let mut failures = Vec::new();
    for row in MATRIX {
        for (i, who) in WHO.iter().enumerate() {
            let got = run_cell(&app, &c, row, *who).await;
            if got != row.expect[i] {
                failures.push(format!(
                    "{} {} as {:?}: expected {}, got {}",
                    row.method, row.path, who, row.expect[i], got
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn auth_3_cookie_state_change_needs_same_origin() {
    let app = TestApp::start().await;
    let user = app.with_user().await;
    let s = app.login_session(&user).await;
    let post = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut r = app
            .request(Method::POST, "/api/v1/api-keys")
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .json(&serde_json::json!({"name": "x", "tier": "read"}));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(f) = fetch_site {
            r = r.header("sec-fetch-site", f);
        }
        r.send()
    };
    let resp = post(Some("https://evil.example"), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(resp).await["error"]["code"], "cross_site_request");
    let resp = post(None, Some("cross-site")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post(Some(&app.origin()), Some("same-origin"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // A wrong token is as bad as none.
    let resp = app
        .request(Method::POST, "/api/v1/api-keys")
        .header("cookie", &s.cookie)
        .header("x-csrf-token", "not-the-token")
        .json(&serde_json::json!({"name": "x", "tier": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    insta::assert_json_snapshot!("csrf_missing_403", json(resp).await);
}
