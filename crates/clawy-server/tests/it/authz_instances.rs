//! The authorization matrix for issue 4 (AUTH-2, AUTH-3, ACCESS-3 groundwork): every
//! instance, plan, region, host and operator route × every kind of caller → the
//! expected status. The first user is not an operator; two more columns are an
//! operator's admin key and session, and one an operator's manage key (operator routes
//! need the full rights of the account, so it gets 404 there). Each cell acts on fresh
//! objects, so one cell's change cannot hide a missing check in another.

use crate::api_instances::fake_host;
use crate::common::{TestApp, TestSession, TestUser, random_suffix};
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_proto::agent::Resources;
use reqwest::Method;
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

#[derive(Debug, Clone, Copy)]
enum Target {
    None,
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
    NewInstance,
    /// An agent URL nothing listens on: an authorized caller gets the 422 that proves
    /// the request got past authorization.
    UnreachableHost,
    EnableHost,
    NewPlan,
    PatchPlan,
}

struct Row {
    method: &'static str,
    path: &'static str,
    target: Target,
    body: Body,
    expect: [u16; 12],
}

// Users' routes: an operator is just another user there (their own objects only).
//        anon read mng  adm  other sess+ sess- revkd expd opAdm opSes opMng
const MATRIX: &[Row] = &[
    Row {
        method: "GET",
        path: "/plans",
        target: Target::None,
        body: Body::None,
        expect: [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/regions",
        target: Target::None,
        body: Body::None,
        expect: [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/instances",
        target: Target::None,
        body: Body::None,
        expect: [401, 200, 200, 200, 200, 200, 200, 401, 401, 200, 200, 200],
    },
    Row {
        method: "POST",
        path: "/instances",
        target: Target::None,
        body: Body::NewInstance,
        expect: [401, 403, 201, 201, 201, 201, 403, 401, 401, 201, 201, 201],
    },
    Row {
        method: "GET",
        path: "/instances/{id}",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404],
    },
    Row {
        method: "DELETE",
        path: "/instances/{id}",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404],
    },
    Row {
        method: "POST",
        path: "/instances/{id}/start",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404],
    },
    Row {
        method: "POST",
        path: "/instances/{id}/stop",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 403, 202, 202, 404, 202, 403, 401, 401, 404, 404, 404],
    },
    // A pending instance cannot reboot or retry: authorized callers get the 409.
    Row {
        method: "POST",
        path: "/instances/{id}/reboot",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 403, 409, 409, 404, 409, 403, 401, 401, 404, 404, 404],
    },
    Row {
        method: "POST",
        path: "/instances/{id}/retry",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 403, 409, 409, 404, 409, 403, 401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/instances/{id}/metrics",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/instances/{id}/events",
        target: Target::FirstUsersInstance,
        body: Body::None,
        expect: [401, 200, 200, 200, 404, 200, 200, 401, 401, 404, 404, 404],
    },
    // Operator routes: 404 for everyone but an operator with full rights. A cookie
    // without the CSRF token is refused (403) before the operator check.
    Row {
        method: "GET",
        path: "/admin/hosts",
        target: Target::None,
        body: Body::None,
        expect: [401, 404, 404, 404, 404, 404, 404, 401, 401, 200, 200, 404],
    },
    Row {
        method: "POST",
        path: "/admin/hosts",
        target: Target::None,
        body: Body::UnreachableHost,
        expect: [401, 404, 404, 404, 404, 404, 403, 401, 401, 422, 422, 404],
    },
    Row {
        method: "PATCH",
        path: "/admin/hosts/{id}",
        target: Target::Host,
        body: Body::EnableHost,
        expect: [401, 404, 404, 404, 404, 404, 403, 401, 401, 200, 200, 404],
    },
    Row {
        method: "GET",
        path: "/admin/instances",
        target: Target::None,
        body: Body::None,
        expect: [401, 404, 404, 404, 404, 404, 404, 401, 401, 200, 200, 404],
    },
    Row {
        method: "POST",
        path: "/admin/plans",
        target: Target::None,
        body: Body::NewPlan,
        expect: [401, 404, 404, 404, 404, 404, 403, 401, 401, 201, 201, 404],
    },
    Row {
        method: "PATCH",
        path: "/admin/plans/{id}",
        target: Target::Plan,
        body: Body::PatchPlan,
        expect: [401, 404, 404, 404, 404, 404, 403, 401, 401, 200, 200, 404],
    },
];

/// Routes this matrix covers (the general matrix in `authz_matrix` skips them).
pub fn covers(method: &str, path: &str) -> bool {
    MATRIX.iter().any(|r| r.method == method && r.path == path)
}

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

#[tokio::test]
async fn auth2_auth3_instance_and_operator_authorization_matrix() {
    let app = TestApp::builder()
        .config(|c| {
            c.throttle.api_key_ip_max_failures = 100_000;
            c.instance_quota = 10_000;
        })
        .start()
        .await;
    let c = callers(&app).await;

    // Every issue-4 route has a row: instances, plans, regions and everything admin.
    for (method, path) in clawy_server::api::ROUTES {
        let ours = ["/plans", "/regions", "/instances", "/admin/"]
            .iter()
            .any(|p| path.starts_with(p));
        if ours {
            assert!(covers(method, path), "no matrix row for {method} {path}");
        }
    }

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
