//! AUTH-3: server-side sessions with idle and absolute timeouts (injected clock).

use crate::common::*;
use clawy_core::crypto::sha256_hex;
use clawy_core::sessions::{SessionError, csrf_token_for, verify_csrf};
use clawy_core::{DomainError, ErrorKind};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn auth_3_session_stores_only_a_hash_and_authenticates() {
    let t = TestCore::new().await;
    let u = t.user("s1@example.com").await;
    let new = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.10"))
        .await
        .unwrap();
    let raw = new.token.expose().to_string();
    assert_eq!(raw.len(), 43, "256-bit base64url");
    assert_eq!(format!("{:?}", new.token), "[redacted]");
    let dump = t.core_dump().await;
    assert!(!dump.contains(&raw), "raw session id is not stored");
    assert!(dump.contains(&sha256_hex(&raw)));
    let auth = t.core.sessions().authenticate(&raw).await.unwrap();
    assert_eq!(auth.user.id, u.id);
    assert_eq!(auth.session.id, new.session.id);
    assert_ne!(auth.session.id, raw, "public id is not the secret");
    assert_eq!(auth.session.client_addr.as_deref(), Some("192.0.2.10"));
    assert_eq!(auth.session.user_agent.as_deref(), Some("test-agent/1.0"));
    assert_eq!(auth.csrf_token, new.csrf_token);
    assert!(auth.verify_csrf(&new.csrf_token));
    assert!(!auth.verify_csrf("forged"));
    assert!(!auth.verify_csrf(""));
    assert!(!verify_csrf("", ""));
    assert_eq!(csrf_token_for(&raw), new.csrf_token);
    assert!(
        !dump.contains(&new.csrf_token),
        "CSRF token is derived, not stored"
    );
    let err = t
        .core
        .sessions()
        .authenticate("not-a-session")
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::Invalid));
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(err.code(), "session_invalid");
}

impl TestCore {
    async fn core_dump(&self) -> String {
        self.dump_text().await
    }
}

#[tokio::test]
async fn auth_3_idle_timeout_with_injected_clock() {
    let t = TestCore::new().await;
    let u = t.user("idle@example.com").await;
    let s = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.1"))
        .await
        .unwrap();
    let raw = s.token.expose();
    t.clock.advance(29 * MIN);
    t.core.sessions().authenticate(raw).await.unwrap(); // touches last_seen
    t.clock.advance(29 * MIN);
    t.core
        .sessions()
        .authenticate(raw)
        .await
        .expect("use keeps the session alive");
    t.clock.advance(30 * MIN);
    assert!(matches!(
        t.core.sessions().authenticate(raw).await,
        Err(SessionError::Invalid)
    ));
    assert_eq!(
        t.count("SELECT COUNT(*) FROM sessions").await,
        0,
        "expired session deleted"
    );
}

#[tokio::test]
async fn auth_3_absolute_timeout_even_when_active() {
    let t = TestCore::with(|c| {
        c.session_absolute_hours = 2;
    })
    .await;
    let u = t.user("abs@example.com").await;
    let s = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(
        s.session.absolute_expires_at - s.session.created_at,
        chrono::Duration::hours(2)
    );
    for _ in 0..5 {
        t.clock.advance(20 * MIN);
        t.core
            .sessions()
            .authenticate(s.token.expose())
            .await
            .unwrap();
    }
    t.clock.advance(19 * MIN); // 1 h 59 min
    t.core
        .sessions()
        .authenticate(s.token.expose())
        .await
        .unwrap();
    t.clock.advance(MIN); // 2 h
    assert!(
        t.core
            .sessions()
            .authenticate(s.token.expose())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn auth_3_last_seen_written_at_most_once_a_minute() {
    let t = TestCore::new().await;
    let u = t.user("touch@example.com").await;
    let s = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.1"))
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(30));
    let a = t
        .core
        .sessions()
        .authenticate(s.token.expose())
        .await
        .unwrap();
    assert_eq!(
        a.session.last_seen_at, s.session.last_seen_at,
        "not touched within a minute"
    );
    t.clock.advance(Duration::from_secs(31));
    let b = t
        .core
        .sessions()
        .authenticate(s.token.expose())
        .await
        .unwrap();
    assert_eq!(b.session.last_seen_at, t.clock_now());
}

impl TestCore {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use clawy_core::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn auth_3_list_revoke_scoped_to_owner_and_logout() {
    let t = TestCore::new().await;
    let alice = t.user("alice@example.com").await;
    let bob = t.user("bob@example.com").await;
    let sessions = t.core.sessions();
    let a1 = sessions.create(&alice, &client("192.0.2.1")).await.unwrap();
    t.clock.advance(MIN);
    let a2 = sessions.create(&alice, &client("192.0.2.2")).await.unwrap();
    t.clock.advance(MIN);
    let a3 = sessions.create(&alice, &client("192.0.2.3")).await.unwrap();
    let b1 = sessions.create(&bob, &client("192.0.2.4")).await.unwrap();
    let list = sessions.list_for_user(&alice.id).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].id, a3.session.id, "most recent first");
    // Bob cannot revoke Alice's session: it is "not found" for him.
    let err = sessions
        .revoke(&bob.id, &a1.session.id, &caller_for(&bob))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::NotFound));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    sessions.authenticate(a1.token.expose()).await.unwrap();
    sessions
        .revoke(&alice.id, &a1.session.id, &caller_for(&alice))
        .await
        .unwrap();
    assert!(sessions.authenticate(a1.token.expose()).await.is_err());
    // Revoke all except the current one.
    let n = sessions
        .revoke_others(&alice.id, &a3.session.id, &caller_for(&alice))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(sessions.authenticate(a2.token.expose()).await.is_err());
    sessions.authenticate(a3.token.expose()).await.unwrap();
    sessions.authenticate(b1.token.expose()).await.unwrap();
    // Logout deletes the session.
    sessions
        .logout(a3.token.expose(), &caller_for(&alice))
        .await
        .unwrap();
    assert!(sessions.authenticate(a3.token.expose()).await.is_err());
    sessions
        .logout("unknown", &caller_for(&alice))
        .await
        .unwrap();
    assert_eq!(sessions.revoke_all(&bob.id).await.unwrap(), 1);
    assert!(sessions.authenticate(b1.token.expose()).await.is_err());
    // Each login gets a new id (no fixation).
    let x = sessions.create(&alice, &client("192.0.2.1")).await.unwrap();
    let y = sessions.create(&alice, &client("192.0.2.1")).await.unwrap();
    assert_ne!(x.token, y.token);
    assert_ne!(x.session.id, y.session.id);
}

/// AUTH-3: the expiry times a session reports are the ones enforced (idle from its
/// last use, absolute from its creation), the account page lists only live sessions
/// (expired rows are removed, not just hidden), and housekeeping removes exactly the
/// expired rows, at the same boundaries `authenticate` uses. Written against the
/// mutants that survived the sessions group: nothing checked the purges, the
/// page, or the times after a touch.
#[tokio::test]
async fn auth_3_expired_sessions_are_purged_and_reported_expiry_is_enforced() {
    let t = TestCore::with(|c| {
        c.session_idle_minutes = 30;
        c.session_absolute_hours = 2;
    })
    .await;
    let idle = chrono::Duration::minutes(30);
    let absolute = chrono::Duration::hours(2);
    let u = t.user("purge@example.com").await;
    let sessions = t.core.sessions();
    // `old` is created first and used every 20 minutes: only its absolute timeout ends it.
    let old = sessions.create(&u, &client("192.0.2.1")).await.unwrap();
    assert_eq!(old.session.idle_expires_at, t.clock_now() + idle);
    assert_eq!(old.session.absolute_expires_at, t.clock_now() + absolute);
    t.clock.advance(10 * MIN);
    let idler = sessions.create(&u, &client("192.0.2.2")).await.unwrap();
    t.clock.advance(10 * MIN);
    // A touch (more than a minute since the last use) moves the idle expiry with it.
    let a = sessions.authenticate(old.token.expose()).await.unwrap();
    assert_eq!(a.session.last_seen_at, t.clock_now());
    assert_eq!(a.session.idle_expires_at, t.clock_now() + idle);
    assert_eq!(
        a.session.absolute_expires_at,
        old.session.absolute_expires_at
    );
    // The list reports the same times, read back from the rows.
    let list = sessions.list_for_user(&u.id).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], a.session, "most recently used first");
    assert_eq!(list[1], idler.session);
    let page = sessions
        .page_for_user(&u.id, &clawy_core::page::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(page.items, list);
    // One millisecond before `idler`'s idle timeout it is still listed ...
    t.clock.advance(20 * MIN - Duration::from_millis(1));
    assert_eq!(sessions.list_for_user(&u.id).await.unwrap().len(), 2);
    assert_eq!(sessions.purge_expired().await.unwrap(), 0);
    // ... and at it, gone from the list and from the table (listing removes it).
    t.clock.advance(Duration::from_millis(1));
    let list = sessions.list_for_user(&u.id).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, old.session.id);
    assert_eq!(t.count("SELECT COUNT(*) FROM sessions").await, 1);
    // Keep `old` in use (last used at 20 min, now 40) until just before its absolute
    // timeout.
    sessions.authenticate(old.token.expose()).await.unwrap();
    for _ in 0..3 {
        t.clock.advance(20 * MIN);
        sessions.authenticate(old.token.expose()).await.unwrap();
    }
    // Now 1 h 40 min after `old` was created; a second user's fresh session.
    let other = t.user("purge-other@example.com").await;
    let fresh = sessions.create(&other, &client("192.0.2.3")).await.unwrap();
    t.clock.advance(20 * MIN - Duration::from_millis(1));
    let page = sessions
        .page_for_user(&u.id, &clawy_core::page::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "one millisecond before the absolute timeout"
    );
    assert_eq!(sessions.purge_expired().await.unwrap(), 0);
    t.clock.advance(Duration::from_millis(1));
    // Housekeeping removes `old` (absolute timeout, though used 20 minutes ago) and
    // keeps the other user's live session.
    assert_eq!(sessions.purge_expired().await.unwrap(), 1);
    assert_eq!(t.count("SELECT COUNT(*) FROM sessions").await, 1);
    sessions.authenticate(fresh.token.expose()).await.unwrap();
    let page = sessions
        .page_for_user(&u.id, &clawy_core::page::PageRequest::first(10))
        .await
        .unwrap();
    assert!(page.items.is_empty(), "{:?}", page.items);
    // A second purge has nothing left to remove; after the idle timeout, the last.
    assert_eq!(sessions.purge_expired().await.unwrap(), 0);
    t.clock.advance(30 * MIN);
    assert_eq!(sessions.purge_expired().await.unwrap(), 1);
    assert_eq!(t.count("SELECT COUNT(*) FROM sessions").await, 0);
}
