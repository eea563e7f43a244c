//! The operator's dashboard actions that touch trust and failure detail: rotating a
//! host's agent credentials (DATA-3; operator only, CSRF, the operator's password
//! again) and the failed job attempts' detail (operators see it; owners keep the
//! generic reason).

use clawy_core::hosts::RegisterHost;
use clawy_core::instances::InstanceState;
use clawy_core::{Actor, ExposeSecret, SecretString};
use clawy_testkit::fake_agent::FakeAgent;
use reqwest::StatusCode;

use crate::api_instances::{ROOMY, fake_host, instance_of};
use crate::common::TestApp;
use crate::web_support::{WebClient, csrf_from, esc};

async fn host_of(app: &TestApp, agent: &FakeAgent) -> String {
    app.core
        .hosts()
        .register(
            &Actor::system(),
            RegisterHost {
                name: "fra1-rot".into(),
                url: agent.base_url.clone(),
                fingerprint: agent.fingerprint.clone(),
                token: SecretString::from(agent.token.clone()),
                region: "DE".into(),
                site: "fra1".into(),
                enabled: true,
            },
        )
        .await
        .unwrap()
        .id
}

fn stored_token(t: &clawy_core::hosts::AgentTarget) -> String {
    t.token.expose_secret().to_owned()
}

#[tokio::test]
async fn data_3_auth_3_operator_rotates_host_credentials_from_the_dashboard() {
    let app = TestApp::start().await;
    let agent = FakeAgent::start("DE-fra1", ROOMY, "10.93.1", [22000, 22999])
        .await
        .unwrap();
    let host = host_of(&app, &agent).await;
    let page = format!("/operator/hosts/{host}/credentials");

    // Not an operator: the ordinary 404, for the page and the action alike.
    let user = app.with_user().await;
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (status, _) = web.get_text(&page).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, html) = web.get_text("/account").await;
    let token = csrf_from(&html);
    let new = agent.add_token();
    let resp = web
        .post_raw(
            &page,
            &[
                ("csrf_token", &token),
                ("token", &new),
                ("password", &user.password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let stored = stored_token(&app.core.hosts().agent_target(&host).await.unwrap());
    assert_eq!(stored, agent.token, "a non-operator changed the token");

    let op = app.with_operator().await;
    let mut ow = WebClient::new(&app);
    ow.login(&op).await;
    let (status, html) = ow.get_text("/operator/hosts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!("href=\"{page}\"")),
        "no rotate link: {html}"
    );
    let (status, html) = ow.get_text(&page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&agent.fingerprint), "{html}");
    assert!(
        !html.contains(&agent.token),
        "DATA-3: the token is never shown"
    );

    // AUTH-3: no CSRF token, no change.
    let resp = ow
        .post_raw(&page, &[("token", &new), ("password", &op.password)])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Re-authentication: a session alone does not rotate (wrong or no password).
    for password in ["", "not-the-password-at-all"] {
        let resp = ow
            .submit(&page, &page, &[("token", &new), ("password", password)])
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password:?}"
        );
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("Enter your current password to rotate"),
            "{html}"
        );
        assert!(!html.contains(&new), "the token is not echoed");
    }
    assert_eq!(
        stored_token(&app.core.hosts().agent_target(&host).await.unwrap()),
        agent.token
    );
    // Nothing entered: said so.
    let resp = ow.submit(&page, &page, &[("password", &op.password)]).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Enter a new agent token")
    );
    // A token the agent refuses is not stored.
    let bogus = "fake-this-token-the-agent-never-made";
    let resp = ow
        .submit(
            &page,
            &page,
            &[("token", bogus), ("password", &op.password)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains(&esc("The agent refused the token")), "{html}");
    assert!(!html.contains(bogus));
    // A wrong fingerprint is refused before anything is stored.
    let wrong_fp = vec!["AB"; 32].join(":");
    let resp = ow
        .submit(
            &page,
            &page,
            &[
                ("token", &new),
                ("fingerprint", &wrong_fp),
                ("password", &op.password),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let target = app.core.hosts().agent_target(&host).await.unwrap();
    assert_eq!(stored_token(&target), agent.token);
    assert_eq!(target.fingerprint, agent.fingerprint);

    // The real thing: the new token, the operator's password; then the old token is
    // revoked on the agent and stops working, and the control plane manages the host
    // with the new one.
    let resp = ow
        .submit(&page, &page, &[("token", &new), ("password", &op.password)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        stored_token(&app.core.hosts().agent_target(&host).await.unwrap()),
        new
    );
    agent.revoke_token(&agent.token);
    let old =
        clawy_agent_client::AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token)
            .unwrap();
    assert!(old.host().await.is_err(), "the old token still works");
    let target = app.core.hosts().agent_target(&host).await.unwrap();
    let current = clawy_agent_client::AgentClient::new(
        &target.url,
        &target.fingerprint,
        target.token.expose_secret(),
    )
    .unwrap();
    assert!(current.host().await.is_ok());
    // ACCESS-3 / DATA-3: the rotation is in the audit log, without the token.
    let events = app
        .core
        .audit()
        .list(clawy_core::audit::Scope::All, 50, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("token rotated") && e.actor.contains(&op.email)),
        "no rotation event: {events:?}"
    );
    assert!(events.iter().all(|e| !e.detail.contains(&new)));
}

#[tokio::test]
async fn access_3_operators_see_failed_job_detail_owners_the_generic_reason() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let user = app.with_user().await;
    let id = instance_of(&app, &user, "gw").await;
    // The worker's part: the create job fails for good with an agent message that
    // names another tenant's VM and the agent's URL.
    sqlx::query("UPDATE jobs SET max_attempts = 1 WHERE instance_id = $1")
        .bind(&id)
        .execute(app.core.store().pool())
        .await
        .unwrap();
    let job = app
        .core
        .jobs()
        .claim("w1", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the create job");
    let detail = "agent https://10.0.0.5:8443: conflict: vm inst-OTHER-TENANT-7 holds 10.77.0.10";
    app.core.jobs().fail(&job, "w1", detail).await.unwrap();
    let inst = app.core.instances().get(user.id(), &id).await.unwrap();
    assert_eq!(inst.state, InstanceState::Error);

    // The owner: the generic reason, never the detail.
    let mut web = WebClient::new(&app);
    web.login(&user).await;
    let (status, html) = web.get_text(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("The cause is recorded for the operator"),
        "{html}"
    );
    assert!(!html.contains("inst-OTHER-TENANT-7"), "{html}");
    assert!(!html.contains("10.0.0.5"), "{html}");
    assert!(!html.contains("Failed attempts"));

    // The operator: the detail, escaped, with the job and attempt.
    let op = app.with_operator().await;
    let mut ow = WebClient::new(&app);
    ow.login(&op).await;
    let (status, html) = ow.get_text(&format!("/operator/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Failed attempts"), "{html}");
    assert!(html.contains(&esc(detail)), "{html}");
}
