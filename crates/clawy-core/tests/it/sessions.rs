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
