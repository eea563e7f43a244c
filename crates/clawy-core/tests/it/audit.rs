//! ACCESS-3 groundwork: the append-only audit log of account events.

use crate::common::*;
use clawy_core::audit::AuditAction;
use clawy_core::{Actor, ActorKind, ClientInfo};

#[tokio::test]
async fn access_3_audit_log_is_append_only() {
    let t = TestCore::new().await;
    let u = t.user("audit@example.com").await;
    assert!(t.count("SELECT COUNT(*) FROM audit_events").await >= 1);
    let pool = t.core.store().pool();
    // Refused by the append-only trigger, not by any other error (a typo, a lock).
    for sql in [
        "UPDATE audit_events SET detail = 'x'",
        "DELETE FROM audit_events",
    ] {
        let e = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(
            e.to_string().contains("audit_events is append-only"),
            "{sql}: {e}"
        );
    }
    // The rows are all still there.
    assert!(t.count("SELECT COUNT(*) FROM audit_events").await >= 1);
    let events = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&u.id), 10, None)
        .await
        .unwrap();
    assert_eq!(events[0].action, "signup");
}

#[tokio::test]
async fn access_3_events_scoped_newest_first_paged_and_described() {
    let t = TestCore::new().await;
    let alice = t.user("alice@example.com").await;
    let bob = t.user("bob@example.com").await;
    let key = t
        .core
        .api_keys()
        .create(
            &alice.id,
            "ci",
            clawy_core::actor::Tier::Admin,
            None,
            None,
            &caller_for(&alice),
        )
        .await
        .unwrap();
    let by_key = key
        .api_key
        .actor(ClientInfo::new("2001:db8::5".parse().unwrap(), None));
    t.core
        .api_keys()
        .regenerate(
            &alice.id,
            &key.api_key.id,
            Some(clawy_core::actor::Tier::Admin),
            &by_key,
        )
        .await
        .unwrap();
    t.core
        .audit()
        .record(
            Some(&alice.id),
            &Actor::new(
                ActorKind::Operator {
                    user_id: bob.id.clone(),
                    email: bob.email.clone(),
                },
                ClientInfo::none(),
            ),
            AuditAction::OperatorChanged,
            "viewed",
        )
        .await
        .unwrap();
    let all = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&alice.id), 100, None)
        .await
        .unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "operator_changed",
            "api_key_regenerated",
            "api_key_created",
            "signup"
        ]
    );
    assert_eq!(all[0].actor, format!("operator:{}", bob.email));
    assert_eq!(all[1].actor, format!("api_key:{}", key.api_key.prefix));
    assert_eq!(all[1].client_addr.as_deref(), Some("2001:db8::5"));
    assert_eq!(all[2].actor, "user:alice@example.com");
    assert_eq!(all[3].actor, "anonymous");
    assert_eq!(all[2].label(), "API key created");
    // Paging by id.
    let page1 = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&alice.id), 2, None)
        .await
        .unwrap();
    let page2 = t
        .core
        .audit()
        .list(
            clawy_core::audit::Scope::User(&alice.id),
            2,
            Some(page1[1].id),
        )
        .await
        .unwrap();
    assert_eq!(page1.len(), 2);
    assert_eq!(
        page2.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["api_key_created", "signup"]
    );
    // Bob sees only his own.
    let bobs = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&bob.id), 100, None)
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);
    // Never a secret in the log.
    let dump = t.dump_text().await;
    assert!(!dump.contains(key.key.expose()));
    assert!(
        t.core
            .audit()
            .list(clawy_core::audit::Scope::All, 100, None)
            .await
            .unwrap()
            .len()
            >= 5
    );
    for a in AuditAction::ALL {
        assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
    }
}
