//! AUTH-2: API key format, tiers, no escalation, regenerate, revoke, expiry.

use crate::common::*;
use clawy_core::actor::Tier;
use clawy_core::api_keys::*;
use clawy_core::crypto::sha256_hex;
use clawy_core::{Actor, DomainError, ErrorKind};
use std::str::FromStr;
use std::time::Duration;

#[test]
fn auth_2_key_format_checksum_and_tiers() {
    for tier in Tier::ALL {
        let k = generate_key(tier);
        let s = k.expose();
        assert_eq!(s.len(), 46);
        assert!(s.starts_with(&format!("clawy_{}_", tier.letter())), "{s}");
        assert!(looks_like_key(s) && verify_checksum(s));
        assert_eq!(tier_of_key(s), Some(tier));
        // Any single-character change breaks the checksum (offline detection).
        for i in [8, 20, 39, 45] {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).unwrap();
            assert!(!verify_checksum(&changed), "{changed}");
        }
    }
    assert!(!looks_like_key(
        "clawy_x_0123456789012345678901234567890123456"
    ));
    assert!(!looks_like_key("ghp_abc"));
    assert!(!verify_checksum(""));
    assert!(Tier::Read < Tier::Manage && Tier::Manage < Tier::Admin);
    assert!(Tier::Admin.allows(Tier::Read) && !Tier::Read.allows(Tier::Manage));
    assert_eq!(Tier::from_str("Manage").unwrap(), Tier::Manage);
    assert_eq!(
        Tier::from_str("root").unwrap_err().kind(),
        ErrorKind::Invalid { field: "tier" }
    );
    assert_eq!(serde_json::to_string(&Tier::Admin).unwrap(), "\"admin\"");
}

#[tokio::test]
async fn auth_2_create_verify_stored_hashed_with_prefix() {
    let t = TestCore::new().await;
    let u = t.user("k@example.com").await;
    let new = t
        .core
        .api_keys()
        .create(
            &u.id,
            "ci deploy",
            Tier::Manage,
            None,
            None,
            &caller_for(&u),
        )
        .await
        .unwrap();
    let raw = new.key.expose().to_string();
    assert_eq!(new.api_key.prefix, &raw[..12]);
    assert_eq!(new.api_key.tier, Tier::Manage);
    assert_eq!(new.api_key.name, "ci deploy");
    let dump = t.dump_text().await;
    assert!(
        !dump.contains(&raw),
        "raw key is not stored (nor in the audit log)"
    );
    assert!(dump.contains(&sha256_hex(&raw)));
    let (user, key) = t.core.api_keys().verify(&raw).await.unwrap().unwrap();
    assert_eq!(user.id, u.id);
    assert_eq!(key.id, new.api_key.id);
    assert!(key.last_used_at.is_some());
    // Wrong, malformed, and well-formed-but-unknown keys.
    assert!(t.core.api_keys().verify("nope").await.unwrap().is_none());
    assert!(
        t.core
            .api_keys()
            .verify(generate_key(Tier::Manage).expose())
            .await
            .unwrap()
            .is_none()
    );
    // Listing never shows the secret.
    let list = t.core.api_keys().list(&u.id).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(!format!("{list:?}").contains(&raw));
    assert_eq!(format!("{:?}", new.key), "[redacted]");
    assert_eq!(
        t.core
            .api_keys()
            .create(&u.id, "  ", Tier::Read, None, None, &caller_for(&u))
            .await
            .unwrap_err()
            .code(),
        "invalid_name"
    );
}

#[tokio::test]
async fn auth_2_no_escalation_to_a_higher_tier() {
    let t = TestCore::new().await;
    let u = t.user("esc@example.com").await;
    let keys = t.core.api_keys();
    let c = caller_for(&u);
    let read = keys
        .create(&u.id, "r", Tier::Read, None, None, &c)
        .await
        .unwrap();
    let admin = keys
        .create(&u.id, "a", Tier::Admin, None, None, &c)
        .await
        .unwrap();
    for (creator, requested, ok) in [
        (Tier::Read, Tier::Read, true),
        (Tier::Read, Tier::Manage, false),
        (Tier::Read, Tier::Admin, false),
        (Tier::Manage, Tier::Manage, true),
        (Tier::Manage, Tier::Admin, false),
        (Tier::Admin, Tier::Admin, true),
    ] {
        let r = keys
            .create(&u.id, "x", requested, None, Some(creator), &c)
            .await;
        assert_eq!(r.is_ok(), ok, "{creator} creating {requested}");
        if let Err(e) = r {
            assert!(matches!(e, ApiKeyError::TierTooHigh { .. }));
            assert_eq!(e.kind(), ErrorKind::Forbidden);
        }
    }
    // Regenerating a higher-tier key would hand out its secret: refused too.
    let e = keys
        .regenerate(&u.id, &admin.api_key.id, Some(Tier::Read), &c)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiKeyError::TierTooHigh { .. }));
    keys.regenerate(&u.id, &read.api_key.id, Some(Tier::Read), &c)
        .await
        .unwrap();
}

#[tokio::test]
async fn auth_2_regenerate_kills_old_secret_at_once_and_revoke() {
    let t = TestCore::new().await;
    let u = t.user("regen@example.com").await;
    let keys = t.core.api_keys();
    let c = caller_for(&u);
    let k = keys
        .create(&u.id, "laptop", Tier::Admin, None, None, &c)
        .await
        .unwrap();
    let again = keys
        .regenerate(&u.id, &k.api_key.id, None, &c)
        .await
        .unwrap();
    assert_eq!(again.api_key.id, k.api_key.id);
    assert_eq!(again.api_key.tier, Tier::Admin);
    assert_ne!(again.key, k.key);
    assert!(
        keys.verify(k.key.expose()).await.unwrap().is_none(),
        "old secret is dead"
    );
    assert!(keys.verify(again.key.expose()).await.unwrap().is_some());
    keys.revoke(&u.id, &k.api_key.id, &c).await.unwrap();
    assert!(
        keys.verify(again.key.expose()).await.unwrap().is_none(),
        "revoked"
    );
    assert!(keys.list(&u.id).await.unwrap().is_empty());
    assert!(matches!(
        keys.revoke(&u.id, &k.api_key.id, &c).await,
        Err(ApiKeyError::NotFound)
    ));
    assert!(matches!(
        keys.regenerate(&u.id, &k.api_key.id, None, &c).await,
        Err(ApiKeyError::NotFound)
    ));
}

#[tokio::test]
async fn auth_2_other_users_keys_are_not_found() {
    let t = TestCore::new().await;
    let alice = t.user("a@example.com").await;
    let bob = t.user("b@example.com").await;
    let keys = t.core.api_keys();
    let k = keys
        .create(
            &alice.id,
            "alice",
            Tier::Read,
            None,
            None,
            &caller_for(&alice),
        )
        .await
        .unwrap();
    let c = caller_for(&bob);
    assert!(matches!(
        keys.get(&bob.id, &k.api_key.id).await,
        Err(ApiKeyError::NotFound)
    ));
    assert!(matches!(
        keys.revoke(&bob.id, &k.api_key.id, &c).await,
        Err(ApiKeyError::NotFound)
    ));
    assert!(matches!(
        keys.regenerate(&bob.id, &k.api_key.id, None, &c).await,
        Err(ApiKeyError::NotFound)
    ));
    assert!(keys.list(&bob.id).await.unwrap().is_empty());
    assert!(
        keys.verify(k.key.expose()).await.unwrap().is_some(),
        "still alive"
    );
}

#[tokio::test]
async fn auth_2_expiry_and_last_used_once_a_minute() {
    let t = TestCore::new().await;
    let u = t.user("exp@example.com").await;
    let keys = t.core.api_keys();
    let c = caller_for(&u);
    let past = t.core.now() - chrono::Duration::seconds(1);
    assert!(matches!(
        keys.create(&u.id, "old", Tier::Read, Some(past), None, &c)
            .await,
        Err(ApiKeyError::ExpiryInPast)
    ));
    let in_1h = t.core.now() + chrono::Duration::hours(1);
    let k = keys
        .create(&u.id, "short", Tier::Read, Some(in_1h), None, &c)
        .await
        .unwrap();
    let (_, first) = keys.verify(k.key.expose()).await.unwrap().unwrap();
    t.clock.advance(Duration::from_secs(30));
    keys.verify(k.key.expose()).await.unwrap().unwrap();
    assert_eq!(
        keys.get(&u.id, &k.api_key.id).await.unwrap().last_used_at,
        first.last_used_at,
        "not rewritten within a minute"
    );
    t.clock.advance(Duration::from_secs(31));
    keys.verify(k.key.expose()).await.unwrap().unwrap();
    assert_eq!(
        keys.get(&u.id, &k.api_key.id).await.unwrap().last_used_at,
        Some(t.core.now())
    );
    t.clock.advance(Duration::from_secs(3600));
    assert!(
        keys.verify(k.key.expose()).await.unwrap().is_none(),
        "expired"
    );
    let err = keys
        .authenticate(k.key.expose(), &client("192.0.2.1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    // Expired keys are still listed (so the owner sees why it stopped working).
    assert!(keys.list(&u.id).await.unwrap()[0].is_expired_at(t.core.now()));
    let _ = Actor::system();
}

#[tokio::test]
async fn api_keys_per_account_are_capped_counting_live_keys() {
    use clawy_core::actor::Tier;
    use clawy_core::api_keys::{ApiKeyError, MAX_KEYS_PER_USER};
    let t = TestCore::new().await;
    let u = t.user("many@example.com").await;
    let keys = t.core.api_keys();
    let mut last = None;
    for i in 0..MAX_KEYS_PER_USER {
        last = Some(
            keys.create(
                &u.id,
                &format!("k{i}"),
                Tier::Read,
                None,
                None,
                &caller_for(&u),
            )
            .await
            .unwrap(),
        );
    }
    let e = keys
        .create(
            &u.id,
            "one too many",
            Tier::Read,
            None,
            None,
            &caller_for(&u),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ApiKeyError::TooMany), "{e:?}");
    // Revoking one makes room.
    let last = last.unwrap();
    keys.revoke(&u.id, &last.api_key.id, &caller_for(&u))
        .await
        .unwrap();
    keys.create(&u.id, "room again", Tier::Read, None, None, &caller_for(&u))
        .await
        .unwrap();
}

/// The cap holds under concurrency: 45 keys, then 20 creates at once, and exactly
/// 50 are live (on PostgreSQL two `INSERT … WHERE count < max` both pass without the
/// account lock).
#[tokio::test]
async fn api_keys_cap_holds_for_concurrent_creates() {
    use clawy_core::actor::Tier;
    use clawy_core::api_keys::{ApiKeyError, MAX_KEYS_PER_USER};
    let t = TestCore::new().await;
    let u = t.user("racer@example.com").await;
    let keys = t.core.api_keys();
    for i in 0..MAX_KEYS_PER_USER - 5 {
        keys.create(
            &u.id,
            &format!("k{i}"),
            Tier::Read,
            None,
            None,
            &caller_for(&u),
        )
        .await
        .unwrap();
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (core, u) = (t.core.clone(), u.clone());
        set.spawn(async move {
            core.api_keys()
                .create(
                    &u.id,
                    &format!("c{i}"),
                    Tier::Read,
                    None,
                    None,
                    &caller_for(&u),
                )
                .await
        });
    }
    let results: Vec<_> = set.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, ApiKeyError::TooMany))
    );
    assert_eq!(
        keys.list(&u.id).await.unwrap().len() as i64,
        MAX_KEYS_PER_USER
    );
}
