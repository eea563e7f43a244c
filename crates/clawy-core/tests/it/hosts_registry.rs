//! Hosts: registration, sealed agent tokens (DATA-3/DATA-4), HostInfo, reachability.

use crate::common::*;
use crate::instances_support::*;
use clawy_core::hosts::{HostError, RegisterHost};
use clawy_core::{DomainError, ExposeSecret, SecretKey, SecretString};
use sqlx::Row;
use std::time::Duration;

fn reg(name: &str) -> RegisterHost {
    RegisterHost {
        name: name.into(),
        url: "https://10.1.2.3:8443/".into(),
        fingerprint: FP.to_lowercase(),
        token: SecretString::from("tok-PLAINTEXT-agent-secret-4f9a1c".to_string()),
        region: "de".into(),
        site: "fra1".into(),
        enabled: true,
    }
}

/// DATA-4: the one host row's sealed token opens with the operator key as the
/// operator holds it (its file), bound to that row, to `plain`, and with no other key.
async fn assert_sealed_by_operator_key(tc: &TestCore, plain: &str) {
    let row = sqlx::query("SELECT id, url, fingerprint, token_sealed FROM hosts")
        .fetch_one(tc.core.store().pool())
        .await
        .unwrap();
    let (id, url, fp, sealed): (String, String, String, String) = (
        row.try_get(0).unwrap(),
        row.try_get(1).unwrap(),
        row.try_get(2).unwrap(),
        row.try_get(3).unwrap(),
    );
    assert!(!sealed.contains(plain));
    let ctx = clawy_core::hosts::token_context(&id, &url, &fp);
    let key = SecretKey::load_or_create(&tc.core.config().secret_key_file).unwrap();
    assert_eq!(
        key.open_bound(&sealed, &ctx).unwrap().expose_secret(),
        plain
    );
    assert!(SecretKey::generate().open_bound(&sealed, &ctx).is_err());
}

#[tokio::test]
async fn data_3_host_token_is_sealed_and_never_read_back() {
    let tc = TestCore::new().await;
    let h = tc
        .core
        .hosts()
        .register(&operator(), reg("fra1-a"))
        .await
        .unwrap();
    assert_eq!(h.region, "DE");
    assert_eq!(h.url, "https://10.1.2.3:8443");
    assert_eq!(h.fingerprint, FP, "normalised to upper case");
    assert_eq!(h.location_label(), "DE-fra1");
    // Read models never carry it.
    let json = serde_json::to_string(&tc.core.hosts().list_with_load().await.unwrap()).unwrap();
    assert!(!json.contains("PLAINTEXT"), "{json}");
    assert!(!format!("{h:?}").contains("PLAINTEXT"));
    // DATA-4: nothing in the database holds the token in plain text.
    let rows = sqlx::query("SELECT * FROM hosts")
        .fetch_all(tc.core.store().pool())
        .await
        .unwrap();
    let mut seen_sealed = false;
    for r in &rows {
        for i in 0..r.len() {
            if let Ok(Some(s)) = r.try_get::<Option<String>, _>(i) {
                assert!(
                    !s.contains("PLAINTEXT"),
                    "plaintext token in hosts column {i}"
                );
                seen_sealed |= s.len() > 40 && i > 3;
            }
        }
    }
    assert!(seen_sealed);
    // Sealed, not merely encoded: the operator key (read from its file) opens the
    // stored value, and a fresh key does not.
    let sealed: String = sqlx::query("SELECT token_sealed FROM hosts")
        .fetch_one(tc.core.store().pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let _ = sealed;
    assert_sealed_by_operator_key(&tc, "tok-PLAINTEXT-agent-secret-4f9a1c").await;
    assert!(!tc.dump_text().await.contains("PLAINTEXT"));
    // Only the orchestrator's target opens it; its Debug is redacted.
    let t = tc.core.hosts().agent_target(&h.id).await.unwrap();
    assert_eq!(t.token.expose_secret(), "tok-PLAINTEXT-agent-secret-4f9a1c");
    assert!(!format!("{t:?}").contains("PLAINTEXT"));
    assert_eq!(tc.core.hosts().agent_targets().await.unwrap().len(), 1);
}

#[tokio::test]
async fn host_registration_validates_each_field() {
    let tc = TestCore::new().await;
    let hosts = tc.core.hosts();
    let cases: Vec<(RegisterHost, &str)> = vec![
        (
            RegisterHost {
                url: "http://10.1.2.3:8443".into(),
                ..reg("a")
            },
            "invalid_url",
        ),
        (
            RegisterHost {
                url: "https://u:p@10.1.2.3".into(),
                ..reg("a")
            },
            "invalid_url",
        ),
        (
            RegisterHost {
                fingerprint: "AA:BB".into(),
                ..reg("a")
            },
            "invalid_fingerprint",
        ),
        (
            RegisterHost {
                region: "DEU".into(),
                ..reg("a")
            },
            "invalid_country",
        ),
        (
            RegisterHost {
                name: "Bad Name".into(),
                ..reg("a")
            },
            "invalid_name",
        ),
        (
            RegisterHost {
                token: SecretString::from(" ".to_string()),
                ..reg("a")
            },
            "invalid_token",
        ),
        (
            RegisterHost {
                site: "a/b".into(),
                ..reg("a")
            },
            "invalid_site",
        ),
    ];
    for (r, code) in cases {
        let e = hosts.register(&operator(), r).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
    }
    hosts.register(&operator(), reg("a")).await.unwrap();
    assert!(matches!(
        hosts.register(&operator(), reg("a")).await.unwrap_err(),
        HostError::Duplicate
    ));
    assert!(matches!(
        hosts.get("nope").await.unwrap_err(),
        HostError::NotFound
    ));
}

#[tokio::test]
async fn host_info_sets_capacity_and_network_and_load_counts_instances() {
    let tc = TestCore::new().await;
    let h = tc
        .core
        .hosts()
        .register(&operator(), reg("a"))
        .await
        .unwrap();
    // Until the agent reported, the host has nothing to give.
    assert_eq!(h.capacity.vcpus, 0);
    assert!(h.network.is_none());
    assert!(!h.reachable);
    let h = tc
        .core
        .hosts()
        .update_info(
            &h.id,
            &host_info((4, 4096, 40), "10.9.8.0/24", [23000, 23010]),
        )
        .await
        .unwrap();
    assert_eq!(h.capacity.memory_mib, 4096);
    let net = h.network.clone().unwrap();
    assert_eq!(
        (
            net.subnet.as_str(),
            net.gateway.as_str(),
            net.ssh_port_range
        ),
        ("10.9.8.0/24", "10.9.8.1", [23000, 23010])
    );
    assert!(h.reachable);
    assert_eq!(h.accelerator.as_deref(), Some("tcg"));
    let alice = tc.user("alice@example.com").await;
    create(&tc, &alice, "one").await;
    create(&tc, &alice, "two").await;
    let load = tc.core.hosts().get_with_load(&h.id).await.unwrap();
    assert_eq!(load.instance_count, 2);
    assert_eq!(
        (
            load.allocated.vcpus,
            load.allocated.memory_mib,
            load.allocated.disk_gib
        ),
        (2, 4096, 20)
    );
    assert_eq!(load.free().memory_mib, 0, "two 2 GiB instances fill 4 GiB");
}

#[tokio::test]
async fn unreachable_host_reports_its_instances_unknown_with_last_contact() {
    let tc = TestCore::new().await;
    let h = de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    drain_jobs(&tc).await;
    let i = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(i.reported_state(), "running");
    let contact = i.host_last_contact_at.unwrap();
    tc.clock.advance(Duration::from_secs(90));
    tc.core
        .hosts()
        .mark_contact(&h.id, Err("connection refused"))
        .await
        .unwrap();
    let i = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(i.reported_state(), "unknown");
    assert_eq!(i.state.as_str(), "running", "stored state untouched");
    assert_eq!(i.host_last_contact_at, Some(contact));
    let host = tc.core.hosts().get(&h.id).await.unwrap();
    assert_eq!(host.last_error.as_deref(), Some("connection refused"));
    tc.core.hosts().mark_contact(&h.id, Ok(())).await.unwrap();
    let i = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(i.reported_state(), "running");
    assert!(i.host_last_contact_at.unwrap() > contact);
}

#[tokio::test]
async fn disabling_a_host_stops_placement_there() {
    let tc = TestCore::new().await;
    let h = de_host(&tc, "a", 1).await;
    tc.core
        .hosts()
        .set_enabled(&operator(), &h.id, false)
        .await
        .unwrap();
    let alice = tc.user("alice@example.com").await;
    let e = tc
        .core
        .instances()
        .create(&caller_for(&alice), &alice.id, req("web"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "no_capacity");
    assert!(tc.core.regions().list().await.unwrap().is_empty());
    tc.core
        .hosts()
        .set_enabled(&operator(), &h.id, true)
        .await
        .unwrap();
    create(&tc, &alice, "web").await;
}

#[tokio::test]
async fn data_3_agent_credentials_rotate_and_stay_sealed() {
    let tc = TestCore::new().await;
    let h = tc
        .core
        .hosts()
        .register(&operator(), reg("a"))
        .await
        .unwrap();
    let new_fp = FP.replace("AA:BB", "11:22");
    let new_tok = SecretString::from("tok-ROTATED-agent-secret-77aa".to_string());
    let h2 = tc
        .core
        .hosts()
        .rotate_credentials(&operator(), &h.id, Some(&new_fp), Some(&new_tok))
        .await
        .unwrap();
    assert_eq!(h2.fingerprint, new_fp);
    let t = tc.core.hosts().agent_target(&h.id).await.unwrap();
    assert_eq!(t.token.expose_secret(), "tok-ROTATED-agent-secret-77aa");
    assert_eq!(t.fingerprint, new_fp);
    let sealed: String = sqlx::query("SELECT token_sealed FROM hosts")
        .fetch_one(tc.core.store().pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(!sealed.contains("ROTATED"));
    let _ = sealed;
    assert_sealed_by_operator_key(&tc, "tok-ROTATED-agent-secret-77aa").await;
    assert!(
        !tc.dump_text().await.contains("ROTATED"),
        "not in the audit log either"
    );
    // Fingerprint only: the token stays.
    tc.core
        .hosts()
        .rotate_credentials(&operator(), &h.id, Some(FP), None)
        .await
        .unwrap();
    assert_eq!(
        tc.core
            .hosts()
            .agent_target(&h.id)
            .await
            .unwrap()
            .token
            .expose_secret(),
        "tok-ROTATED-agent-secret-77aa"
    );
    let blank = SecretString::from(String::new());
    assert_eq!(
        tc.core
            .hosts()
            .rotate_credentials(&operator(), &h.id, None, Some(&blank))
            .await
            .unwrap_err()
            .code(),
        "invalid_token"
    );
    assert_eq!(
        tc.core
            .hosts()
            .rotate_credentials(&operator(), &h.id, Some("zz"), None)
            .await
            .unwrap_err()
            .code(),
        "invalid_fingerprint"
    );
}

async fn sealed_of(tc: &TestCore, id: &str) -> String {
    sqlx::query("SELECT token_sealed FROM hosts WHERE id = $1")
        .bind(id)
        .fetch_one(tc.core.store().pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn set_column(tc: &TestCore, id: &str, col: &str, value: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE hosts SET {col} = $1 WHERE id = $2"
    )))
    .bind(value)
    .bind(id)
    .execute(tc.core.store().pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn data3_sealed_token_is_bound_to_its_host_row() {
    let tc = TestCore::new().await;
    let hosts = tc.core.hosts();
    let a = hosts.register(&operator(), reg("fra1-a")).await.unwrap();
    let mut rb = reg("fra1-b");
    rb.url = "https://10.1.2.4:8443/".into();
    rb.token = SecretString::from("tok-OTHER-host-secret-0000".to_string());
    let b = hosts.register(&operator(), rb).await.unwrap();
    // A's token copied into B's row does not open there (B's agent would get A's token).
    let a_sealed = sealed_of(&tc, &a.id).await;
    let b_sealed = sealed_of(&tc, &b.id).await;
    set_column(&tc, &b.id, "token_sealed", &a_sealed).await;
    assert!(matches!(
        hosts.agent_target(&b.id).await,
        Err(HostError::TokenUnreadable)
    ));
    set_column(&tc, &b.id, "token_sealed", &b_sealed).await;
    hosts.agent_target(&b.id).await.unwrap();
    // A row redirected to another URL, or pinned to another certificate, cannot send
    // its token there.
    set_column(&tc, &a.id, "url", "https://203.0.113.66:8443").await;
    assert!(matches!(
        hosts.agent_target(&a.id).await,
        Err(HostError::TokenUnreadable)
    ));
    set_column(&tc, &a.id, "url", "https://10.1.2.3:8443").await;
    hosts.agent_target(&a.id).await.unwrap();
    set_column(&tc, &a.id, "fingerprint", &"AB:".repeat(31)).await;
    assert!(hosts.agent_target(&a.id).await.is_err());
}

#[tokio::test]
async fn data3_legacy_unbound_tokens_are_bound_on_upgrade() {
    let tc = TestCore::new().await;
    let hosts = tc.core.hosts();
    let a = hosts.register(&operator(), reg("fra1-a")).await.unwrap();
    // A row as written before binding: sealed without associated data.
    let legacy = tc
        .core
        .secret_key()
        .seal_str("tok-PLAINTEXT-agent-secret-4f9a1c");
    assert!(legacy.starts_with("v1."));
    set_column(&tc, &a.id, "token_sealed", &legacy).await;
    assert!(
        hosts.agent_target(&a.id).await.is_err(),
        "unbound is refused"
    );
    assert_eq!(hosts.bind_legacy_tokens().await.unwrap(), 1);
    assert!(sealed_of(&tc, &a.id).await.starts_with("v2."));
    let t = hosts.agent_target(&a.id).await.unwrap();
    assert_eq!(t.token.expose_secret(), "tok-PLAINTEXT-agent-secret-4f9a1c");
    assert_eq!(hosts.bind_legacy_tokens().await.unwrap(), 0);
}

/// DATA-1 / NET-4 on `/security`: the installation counts an HTTPS edge only
/// while a registered, enabled, reachable host's agent reports Caddy running
/// the edge config. Configured-but-broken, unreachable or disabled does not
/// count, and an agent without an edge clears what an earlier report said.
#[tokio::test]
async fn data_1_net_4_edge_counts_only_while_a_reachable_host_reports_it_working() {
    use clawy_core::installation::{InstallationFacts, status_of};
    use clawy_proto::agent::HostEdge;
    let tc = TestCore::new().await;
    async fn facts(tc: &TestCore) -> InstallationFacts {
        InstallationFacts::gather(&tc.core).await.unwrap()
    }
    // No host at all.
    assert!(!facts(&tc).await.edge_configured);
    let h = de_host(&tc, "h1", 1).await;
    assert!(h.edge.is_none());
    assert!(!facts(&tc).await.edge_configured, "a host without an edge");
    let mut info = host_info((8, 16384, 100), "10.77.1.0/24", [22000, 22999]);
    // Configured, but Caddy does not run the edge config.
    info.edge = Some(HostEdge {
        instances_apex: "claws.example.com".into(),
        working: false,
        error: Some("Caddy's admin socket /run/caddy/admin.sock: connection refused".into()),
    });
    let stored = tc.core.hosts().update_info(&h.id, &info).await.unwrap();
    assert_eq!(stored.edge, info.edge, "stored as reported");
    let f = facts(&tc).await;
    assert!(!f.edge_configured, "a broken edge is no edge");
    assert!(!status_of("NET-4", &f).is_active());
    // Working.
    info.edge = Some(HostEdge {
        instances_apex: "claws.example.com".into(),
        working: true,
        error: None,
    });
    let stored = tc.core.hosts().update_info(&h.id, &info).await.unwrap();
    assert_eq!(stored.edge, info.edge);
    let f = facts(&tc).await;
    assert!(f.edge_configured);
    assert!(status_of("NET-4", &f).is_active());
    // The host stops answering: its edge is not counted.
    tc.core
        .hosts()
        .mark_contact(&h.id, Err("connection refused"))
        .await
        .unwrap();
    assert!(!facts(&tc).await.edge_configured, "unreachable host");
    tc.core.hosts().update_info(&h.id, &info).await.unwrap();
    assert!(facts(&tc).await.edge_configured);
    // Disabled by the operator.
    tc.core
        .hosts()
        .set_enabled(&operator(), &h.id, false)
        .await
        .unwrap();
    assert!(!facts(&tc).await.edge_configured, "disabled host");
    tc.core
        .hosts()
        .set_enabled(&operator(), &h.id, true)
        .await
        .unwrap();
    // The agent restarted without `[edge]`: the stored edge is gone.
    info.edge = None;
    let stored = tc.core.hosts().update_info(&h.id, &info).await.unwrap();
    assert!(stored.edge.is_none());
    assert!(!facts(&tc).await.edge_configured);
}
