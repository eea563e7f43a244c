//! AUTH-5: login throttling per client address and per account (soft lock).

use crate::common::*;
use clawy_core::accounts::AccountError;
use clawy_core::actor::Tier;
use clawy_core::api_keys::ApiKeyError;
use clawy_core::audit::AuditAction;
use clawy_core::{Actor, DomainError, ErrorKind};
use std::time::Duration;

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

#[tokio::test]
async fn auth_5_client_address_throttled_after_n_failures() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 5;
        c.throttle.ip_window_seconds = 600;
    })
    .await;
    t.user("victim@example.com").await;
    let attacker = Actor::anonymous(client("203.0.113.66"));
    let acc = t.core.accounts();
    for i in 0..5 {
        // Different accounts, so only the per-address limit applies.
        let e = acc
            .authenticate(
                &format!("guess{i}@example.com"),
                &pw("Wrong-Guess-0000"),
                &attacker,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, AccountError::InvalidCredentials));
        t.clock.advance(Duration::from_secs(10));
    }
    let e = acc
        .authenticate("victim@example.com", &pw(GOOD_PW), &attacker)
        .await
        .unwrap_err();
    let AccountError::Throttled { retry_after } = e else {
        panic!("expected throttled, got {e:?}")
    };
    assert_eq!(e_kind(&retry_after), ErrorKind::Throttled { retry_after });
    // The oldest failure leaves the 600 s window 600 - 50 = 550 s from now.
    assert_eq!(secs(retry_after), 550);
    // Other addresses are not affected.
    acc.authenticate(
        "victim@example.com",
        &pw(GOOD_PW),
        &Actor::anonymous(client("198.51.100.1")),
    )
    .await
    .unwrap();
    // The event is in the audit log.
    let victim = acc
        .find_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();
    let events = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&victim.id), 50, None)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.action == "login_throttled"),
        "{events:?}"
    );
    // After the window the address may try again.
    t.clock.advance(retry_after);
    acc.authenticate("victim@example.com", &pw(GOOD_PW), &attacker)
        .await
        .unwrap();
}

fn e_kind(retry_after: &Duration) -> ErrorKind {
    AccountError::Throttled {
        retry_after: *retry_after,
    }
    .kind()
}

#[tokio::test]
async fn auth_5_account_soft_lock_escalates_expires_and_resets() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 1000;
        c.throttle.account_lock_threshold = 3;
        c.throttle.account_lock_base_seconds = 60;
        c.throttle.account_lock_max_seconds = 240;
    })
    .await;
    let owner = t.user("owner@example.com").await;
    let acc = t.core.accounts();
    // The attacker rotates addresses; the per-account lock still applies.
    let mut n = 0;
    let mut attacker = || {
        n += 1;
        Actor::anonymous(client(&format!("203.0.113.{n}")))
    };
    let bad = pw("Attacker-Guess-123");
    for _ in 0..2 {
        assert!(matches!(
            acc.authenticate("owner@example.com", &bad, &attacker())
                .await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    // Third failure locks for 60 s.
    assert!(matches!(
        acc.authenticate("owner@example.com", &bad, &attacker())
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    let locked = |r: Result<clawy_core::User, AccountError>| match r {
        Err(AccountError::Throttled { retry_after }) => retry_after.as_secs(),
        other => panic!("expected throttled, got {other:?}"),
    };
    // Even the right password is refused during the lock (and the attempt is not counted).
    assert_eq!(
        locked(
            acc.authenticate("owner@example.com", &pw(GOOD_PW), &attacker())
                .await
        ),
        60
    );
    t.clock.advance(Duration::from_secs(61));
    // Each further failure doubles the lock: 120, 240, then capped at 240.
    for expected in [120, 240, 240] {
        assert!(matches!(
            acc.authenticate("owner@example.com", &bad, &attacker())
                .await,
            Err(AccountError::InvalidCredentials)
        ));
        assert_eq!(
            locked(
                acc.authenticate("owner@example.com", &bad, &attacker())
                    .await
            ),
            expected
        );
        t.clock.advance(Duration::from_secs(expected + 1));
    }
    // Never permanent: after the lock the real owner signs in, which resets the counter.
    acc.authenticate(
        "owner@example.com",
        &pw(GOOD_PW),
        &Actor::anonymous(client("192.0.2.200")),
    )
    .await
    .unwrap();
    assert!(matches!(
        acc.authenticate("owner@example.com", &bad, &attacker())
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    acc.authenticate(
        "owner@example.com",
        &pw(GOOD_PW),
        &Actor::anonymous(client("192.0.2.200")),
    )
    .await
    .unwrap();
    let events = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&owner.id), 100, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action_kind() == Some(AuditAction::AccountLocked))
    );
    assert!(
        events
            .iter()
            .any(|e| e.action_kind() == Some(AuditAction::LoginThrottled))
    );
    assert!(
        events
            .iter()
            .any(|e| e.action_kind() == Some(AuditAction::LoginFailed))
    );
    assert!(
        events
            .iter()
            .any(|e| e.action_kind() == Some(AuditAction::LoginOk))
    );
}

#[tokio::test]
async fn auth_5_unknown_accounts_lock_the_same_way() {
    let t = TestCore::with(|c| c.throttle.account_lock_threshold = 2).await;
    let acc = t.core.accounts();
    let c = Actor::anonymous(client("203.0.113.9"));
    for _ in 0..2 {
        assert!(matches!(
            acc.authenticate("ghost@example.com", &pw("Whatever-Guess-1"), &c)
                .await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        acc.authenticate("ghost@example.com", &pw("Whatever-Guess-1"), &c)
            .await,
        Err(AccountError::Throttled { .. })
    ));
}

#[tokio::test]
async fn auth_5_api_key_failures_throttled_per_address() {
    let t = TestCore::with(|c| c.throttle.api_key_ip_max_failures = 3).await;
    let u = t.user("keys@example.com").await;
    let good = t
        .core
        .api_keys()
        .create(&u.id, "k", Tier::Read, None, None, &caller_for(&u))
        .await
        .unwrap();
    let keys = t.core.api_keys();
    let bad_ip = client("203.0.113.77");
    let forged = clawy_core::api_keys::generate_key(Tier::Admin);
    for _ in 0..3 {
        assert!(matches!(
            keys.authenticate(forged.expose(), &bad_ip).await,
            Err(ApiKeyError::InvalidKey)
        ));
    }
    let err = keys
        .authenticate(good.key.expose(), &bad_ip)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiKeyError::Throttled { .. }), "{err:?}");
    assert_eq!(err.code(), "too_many_attempts");
    keys.authenticate(good.key.expose(), &client("198.51.100.3"))
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(15 * 60 + 1));
    keys.authenticate(good.key.expose(), &bad_ip).await.unwrap();
}
