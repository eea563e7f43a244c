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
    // Over the limit: failures get 429 ...
    let err = keys
        .authenticate(forged.expose(), &bad_ip)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiKeyError::Throttled { .. }), "{err:?}");
    assert_eq!(err.code(), "too_many_attempts");
    // ... but a valid key from the same address is never refused.
    keys.authenticate(good.key.expose(), &bad_ip).await.unwrap();
    keys.authenticate(good.key.expose(), &client("198.51.100.3"))
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert!(matches!(
        keys.authenticate(forged.expose(), &bad_ip).await,
        Err(ApiKeyError::InvalidKey)
    ));
}

/// Runs `n` logins for `email` at once and returns how many reached the password
/// check (InvalidCredentials: bcrypt ran) and how many were throttled before it.
async fn concurrent_wrong_logins(
    t: &TestCore,
    email: &str,
    n: usize,
    addr: impl Fn(usize) -> String,
) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let core = t.core.clone();
        let email = email.to_string();
        let actor = Actor::anonymous(client(&addr(i)));
        tasks.push(tokio::spawn(async move {
            core.accounts()
                .authenticate(&email, &pw("Wrong-Guess-0000"), &actor)
                .await
        }));
    }
    let (mut checked, mut throttled) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Err(AccountError::InvalidCredentials) => checked += 1,
            Err(AccountError::Throttled { .. }) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    (checked, throttled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_5_concurrent_wrong_logins_for_one_account_reach_bcrypt_at_most_threshold_times() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 1000;
        c.throttle.account_lock_threshold = 5;
    })
    .await;
    t.user("victim@example.com").await;
    // 50 addresses, so only the account's counter applies.
    let (checked, throttled) =
        concurrent_wrong_logins(&t, "victim@example.com", 50, |i| format!("203.0.113.{i}")).await;
    assert!(
        checked <= 5,
        "{checked} passwords checked for a threshold of 5"
    );
    assert_eq!(checked + throttled, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_5_concurrent_wrong_logins_from_one_address_reach_bcrypt_at_most_limit_times() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 7;
        c.throttle.account_lock_threshold = 1000;
    })
    .await;
    let (checked, _) =
        concurrent_wrong_logins(&t, "anyone@example.com", 50, |_| "198.51.100.7".into()).await;
    assert!(checked <= 7, "{checked} passwords checked for a limit of 7");
}

#[tokio::test]
async fn auth_5_right_password_is_not_counted_against_the_address() {
    let t = TestCore::with(|c| c.throttle.ip_max_failures = 3).await;
    t.user("office@example.com").await;
    let nat = Actor::anonymous(client("198.51.100.20"));
    // Many good logins from one address (an office NAT) never add up to a throttle.
    for _ in 0..10 {
        t.core
            .accounts()
            .authenticate("office@example.com", &pw(GOOD_PW), &nat)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn auth_5_ipv6_addresses_in_one_64_share_a_bucket() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 3;
        c.throttle.account_lock_threshold = 1000;
    })
    .await;
    t.user("v6@example.com").await;
    let acc = t.core.accounts();
    // Three failures from three addresses of one /64 ...
    for host in ["1", "abcd:1", "ffff:ffff:fffe"] {
        let a = Actor::anonymous(client(&format!("2001:db8:1:2::{host}")));
        assert!(matches!(
            acc.authenticate("v6@example.com", &pw("Wrong-Guess-0000"), &a)
                .await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    // ... throttle a fourth address of the same /64,
    let same64 = Actor::anonymous(client("2001:db8:1:2:9:9:9:9"));
    assert!(matches!(
        acc.authenticate("v6@example.com", &pw(GOOD_PW), &same64)
            .await,
        Err(AccountError::Throttled { .. })
    ));
    // but not the neighbouring /64.
    let other64 = Actor::anonymous(client("2001:db8:1:3::1"));
    acc.authenticate("v6@example.com", &pw(GOOD_PW), &other64)
        .await
        .unwrap();
}

#[tokio::test]
async fn auth_5_ipv6_bucket_prefix_is_configurable() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 1;
        c.throttle.account_lock_threshold = 1000;
        c.throttle.ipv6_bucket_prefix = 128;
    })
    .await;
    let acc = t.core.accounts();
    let a = Actor::anonymous(client("2001:db8:1:2::1"));
    let b = Actor::anonymous(client("2001:db8:1:2::2"));
    assert!(matches!(
        acc.authenticate("x@example.com", &pw("Wrong-Guess-0000"), &a)
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    // With /128 the neighbour is its own bucket.
    assert!(matches!(
        acc.authenticate("x@example.com", &pw("Wrong-Guess-0000"), &b)
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    assert!(matches!(
        acc.authenticate("x@example.com", &pw("Wrong-Guess-0000"), &a)
            .await,
        Err(AccountError::Throttled { .. })
    ));
}

#[tokio::test]
async fn auth_5_throttled_logins_are_aggregated_in_the_audit_log() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 2;
        c.throttle.account_lock_threshold = 1000;
    })
    .await;
    let acc = t.core.accounts();
    let bot = Actor::anonymous(client("203.0.113.99"));
    for i in 0..40 {
        let _ = acc
            .authenticate(&format!("u{i}@example.com"), &pw("Wrong-Guess-0000"), &bot)
            .await;
    }
    // One row when the limit started to apply, one for the refusals of the window:
    // not 38 rows of anonymous traffic.
    let n = t
        .count("SELECT COUNT(*) FROM audit_events WHERE action = 'login_throttled'")
        .await;
    assert!(n <= 2, "{n} login_throttled rows");
    assert!(n >= 1);
    // A new window gets a new row.
    t.clock.advance(Duration::from_secs(16 * 60));
    for i in 0..5 {
        let _ = acc
            .authenticate(&format!("w{i}@example.com"), &pw("Wrong-Guess-0000"), &bot)
            .await;
    }
    let later = t
        .count("SELECT COUNT(*) FROM audit_events WHERE action = 'login_throttled'")
        .await;
    assert!(later > n && later <= n + 2, "{n} -> {later}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signup_limited_per_address() {
    let t = TestCore::with(|c| c.throttle.signups_per_hour = 10).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let core = t.core.clone();
        tasks.push(tokio::spawn(async move {
            core.accounts()
                .signup(
                    &format!("farm{i}@example.com"),
                    &pw(GOOD_PW),
                    &Actor::anonymous(client("203.0.113.50")),
                )
                .await
        }));
    }
    let (mut ok, mut throttled) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AccountError::Throttled { .. }) => throttled += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, throttled), (10, 40));
    assert_eq!(t.count("SELECT COUNT(*) FROM users").await, 10);
    // Another address is not affected; an hour later this one may sign up again.
    t.core
        .accounts()
        .signup(
            "elsewhere@example.com",
            &pw(GOOD_PW),
            &Actor::anonymous(client("198.51.100.50")),
        )
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(3601));
    t.core
        .accounts()
        .signup(
            "later@example.com",
            &pw(GOOD_PW),
            &Actor::anonymous(client("203.0.113.50")),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn auth_5_lockout_abuse_owner_keeps_a_way_in_from_a_known_device() {
    let t = TestCore::with(|c| {
        c.throttle.ip_max_failures = 1000;
        c.throttle.account_lock_threshold = 3;
        c.throttle.account_lock_base_seconds = 900;
        c.throttle.account_lock_max_seconds = 900;
    })
    .await;
    let owner = t.user("owner@example.com").await;
    let other = t.user("other@example.com").await;
    let acc = t.core.accounts();
    // The owner signed in from this browser last week.
    let device = acc.issue_device_token(&owner);
    let foreign_device = acc.issue_device_token(&other);
    t.clock.advance(Duration::from_secs(7 * 24 * 3600));
    // The attacker locks the account from addresses of their own.
    for i in 0..3 {
        let _ = acc
            .authenticate(
                "owner@example.com",
                &pw("Attacker-Guess-123"),
                &Actor::anonymous(client(&format!("203.0.113.{i}"))),
            )
            .await;
    }
    let home = Actor::anonymous(client("192.0.2.10"));
    // Locked for a browser without the token, and for another account's token ...
    for token in [None, Some(foreign_device.expose()), Some("v2.forged")] {
        assert!(matches!(
            acc.authenticate_from("owner@example.com", &pw(GOOD_PW), &home, token)
                .await,
            Err(AccountError::Throttled { .. })
        ));
    }
    // ... but the owner's known device gets in.
    acc.authenticate_from(
        "owner@example.com",
        &pw(GOOD_PW),
        &home,
        Some(device.expose()),
    )
    .await
    .unwrap();
    // A stolen device token is no free pass: it has its own failure limit.
    for _ in 0..3 {
        assert!(matches!(
            acc.authenticate_from(
                "owner@example.com",
                &pw("Attacker-Guess-123"),
                &home,
                Some(device.expose())
            )
            .await,
            Err(AccountError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        acc.authenticate_from(
            "owner@example.com",
            &pw(GOOD_PW),
            &home,
            Some(device.expose())
        )
        .await,
        Err(AccountError::Throttled { .. })
    ));
    // A password change retires every device token issued before it.
    t.clock.advance(Duration::from_secs(3600));
    acc.change_password(&owner.id, &pw(GOOD_PW), &pw(OTHER_GOOD_PW), None, &home)
        .await
        .unwrap();
    for i in 0..3 {
        let _ = acc
            .authenticate(
                "owner@example.com",
                &pw("Attacker-Guess-123"),
                &Actor::anonymous(client(&format!("203.0.113.{i}"))),
            )
            .await;
    }
    assert!(matches!(
        acc.authenticate_from(
            "owner@example.com",
            &pw(OTHER_GOOD_PW),
            &home,
            Some(device.expose())
        )
        .await,
        Err(AccountError::Throttled { .. })
    ));
}
