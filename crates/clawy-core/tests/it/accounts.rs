//! AUTH-1: accounts, password policy, bcrypt, same answer for unknown email, reset.

use crate::common::*;
use clawy_core::accounts::{
    AccountError, check_password_policy, is_common_password, normalize_email,
};
use clawy_core::{Actor, DomainError, ErrorKind, ExposeSecret, SecretString};
use sqlx::Row;
use std::time::{Duration, Instant};

#[test]
fn auth_1_password_policy() {
    let e = "alice@example.com";
    assert!(matches!(
        check_password_policy("Short-1!", e),
        Err(AccountError::PasswordTooShort)
    ));
    // 73 bytes: refused, never truncated.
    let long = "Zq8!".repeat(18) + "x";
    assert_eq!(long.len(), 73);
    let err = check_password_policy(&long, e).unwrap_err();
    assert!(matches!(err, AccountError::PasswordTooLong));
    assert!(err.to_string().contains("72"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Invalid { field: "password" });
    // 72 bytes of something strong is fine.
    let max = "Zq8!Lm3#Tw9@Xv2$".repeat(4) + "Pk7%Hy4^";
    assert_eq!(max.len(), 72);
    check_password_policy(&max, e).unwrap();
    // 72 bytes measured in bytes, not chars: multi-byte characters count as bytes.
    let multibyte = "ü".repeat(37); // 74 bytes, 37 chars
    assert!(matches!(
        check_password_policy(&multibyte, e),
        Err(AccountError::PasswordTooLong)
    ));
    // Common passwords, also with a trailing number or symbol and in other case.
    for common in [
        "password1234",
        "PasswordPassword",
        "qwertyuiop123",
        "iloveyou2024!!",
        "Correcthorsebatterystaple",
    ] {
        assert!(
            matches!(
                check_password_policy(common, e),
                Err(AccountError::PasswordCommon)
            ),
            "{common} should be refused as common"
        );
    }
    assert!(is_common_password("LETMEIN123456"));
    // Weak by zxcvbn (not on the list but guessable), including the email itself.
    for weak in [
        "aaaaaaaaaaaaaaaa",
        "abcdefghijklmnopq",
        "alice@example.com",
        "alicealicealice",
    ] {
        let r = check_password_policy(weak, e);
        assert!(
            matches!(
                r,
                Err(AccountError::PasswordWeak(_)) | Err(AccountError::PasswordCommon)
            ),
            "{weak} should be refused: {r:?}"
        );
    }
    check_password_policy(GOOD_PW, e).unwrap();
    check_password_policy("correct horse battery staple on Tuesday", e).unwrap();
}

#[test]
fn emails_are_normalised_and_checked() {
    assert_eq!(
        normalize_email("  Alice@Example.COM ").unwrap(),
        "alice@example.com"
    );
    for bad in [
        "",
        "alice",
        "@example.com",
        "alice@",
        "alice@example",
        "a b@example.com",
        "alice@@example.com",
        "alice@-x.com",
    ] {
        assert!(normalize_email(bad).is_err(), "{bad:?} should be invalid");
    }
    assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    // `clawy up`'s default operator; other single-label domains stay invalid.
    assert_eq!(
        normalize_email("operator@localhost").unwrap(),
        "operator@localhost"
    );
    assert!(normalize_email("operator@intranet").is_err());
}

#[tokio::test]
async fn auth_1_signup_stores_bcrypt_hash_not_plaintext() {
    let t = TestCore::new().await;
    let u = t.user("  Alice@Example.com").await;
    assert_eq!(u.email, "alice@example.com");
    assert!(!u.is_operator);
    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(&u.id)
        .fetch_one(t.core.store().pool())
        .await
        .unwrap();
    let hash: String = row.try_get(0).unwrap();
    assert!(
        hash.starts_with("$2b$04$"),
        "test config uses cost 4: {hash}"
    );
    assert!(!t.dump_text().await.contains(GOOD_PW));
    // Duplicate (in any case) is refused.
    let err = t
        .core
        .accounts()
        .signup(
            "ALICE@example.com",
            &pw(OTHER_GOOD_PW),
            &Actor::anonymous(client("192.0.2.1")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::EmailTaken));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // Policy applies at signup.
    let err = t
        .core
        .accounts()
        .signup("bob@example.com", &pw("password1234"), &Actor::system())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "password_common");
}

#[tokio::test]
async fn auth_1_production_bcrypt_cost_is_12() {
    let t = TestCore::with(|c| {
        c.bcrypt_cost = 12;
        c.insecure_test_mode = false;
    })
    .await;
    let u = t.user("cost@example.com").await;
    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(&u.id)
        .fetch_one(t.core.store().pool())
        .await
        .unwrap();
    let hash: String = row.try_get(0).unwrap();
    assert!(hash.starts_with("$2b$12$"), "{hash}");
    let ok = t
        .core
        .accounts()
        .authenticate(
            "cost@example.com",
            &pw(GOOD_PW),
            &Actor::anonymous(client("192.0.2.9")),
        )
        .await
        .unwrap();
    assert_eq!(ok.id, u.id);
}

#[tokio::test]
async fn auth_1_unknown_email_and_wrong_password_same_error_and_time() {
    let t = TestCore::with(|c| c.bcrypt_cost = 9).await;
    t.user("real@example.com").await;
    let acc = t.core.accounts();
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..4 {
        // Fresh addresses so throttling never interferes.
        let c = Actor::anonymous(client(&format!("198.51.100.{}", 10 + i)));
        let s = Instant::now();
        let e1 = acc
            .authenticate("real@example.com", &pw("Wrong-Password-1234"), &c)
            .await
            .unwrap_err();
        wrong.push(s.elapsed());
        let s = Instant::now();
        let e2 = acc
            .authenticate(
                &format!("nobody{i}@example.com"),
                &pw("Wrong-Password-1234"),
                &c,
            )
            .await
            .unwrap_err();
        unknown.push(s.elapsed());
        assert!(matches!(e1, AccountError::InvalidCredentials));
        assert!(matches!(e2, AccountError::InvalidCredentials));
        assert_eq!(e1.to_string(), e2.to_string());
        assert_eq!(e1.code(), e2.code());
        assert_eq!(e1.kind(), ErrorKind::Unauthorized);
    }
    // The fastest of several tries is the cost of the work itself: other tests on the
    // same cores only ever add time. Without the dummy bcrypt for unknown emails the
    // ratio is below 0.01, so the band still catches the timing leak.
    let w = wrong.iter().min().unwrap().as_secs_f64();
    let u = unknown.iter().min().unwrap().as_secs_f64();
    assert!(
        u > w * 0.33 && u < w * 3.0,
        "fastest wrong-password {w:.4}s vs unknown-email {u:.4}s"
    );
    // And the right password works.
    acc.authenticate(
        "REAL@example.com ",
        &pw(GOOD_PW),
        &Actor::anonymous(client("198.51.100.99")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn auth_1_over_long_password_at_login_is_refused_not_truncated() {
    let t = TestCore::new().await;
    let strong72 = "Zq8!Lm3#Tw9@Xv2$".repeat(4) + "Pk7%Hy4^";
    t.core
        .accounts()
        .signup("long@example.com", &pw(&strong72), &Actor::system())
        .await
        .unwrap();
    // bcrypt would ignore byte 73+; we do not: the same 72 bytes plus more is wrong.
    let err = t
        .core
        .accounts()
        .authenticate(
            "long@example.com",
            &pw(&(strong72.clone() + "extra")),
            &Actor::anonymous(client("192.0.2.50")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::InvalidCredentials));
    t.core
        .accounts()
        .authenticate(
            "long@example.com",
            &pw(&strong72),
            &Actor::anonymous(client("192.0.2.50")),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn auth_1_auth_3_change_password_kills_other_sessions() {
    let t = TestCore::new().await;
    let u = t.user("carol@example.com").await;
    let s1 = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.1"))
        .await
        .unwrap();
    let s2 = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.2"))
        .await
        .unwrap();
    let acc = t.core.accounts();
    let c = caller_for(&u);
    let err = acc
        .change_password(
            &u.id,
            &pw("not-the-password"),
            &pw(OTHER_GOOD_PW),
            Some(&s1.session.id),
            &c,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::WrongCurrentPassword));
    let err = acc
        .change_password(
            &u.id,
            &pw(GOOD_PW),
            &pw("qwertyuiop123"),
            Some(&s1.session.id),
            &c,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "password_common");
    acc.change_password(
        &u.id,
        &pw(GOOD_PW),
        &pw(OTHER_GOOD_PW),
        Some(&s1.session.id),
        &c,
    )
    .await
    .unwrap();
    assert!(
        t.core
            .sessions()
            .authenticate(s1.token.expose())
            .await
            .is_ok(),
        "the session that changed it stays"
    );
    assert!(
        t.core
            .sessions()
            .authenticate(s2.token.expose())
            .await
            .is_err(),
        "every other session ends"
    );
    let anon = Actor::anonymous(client("192.0.2.3"));
    assert!(
        acc.authenticate("carol@example.com", &pw(GOOD_PW), &anon)
            .await
            .is_err()
    );
    acc.authenticate("carol@example.com", &pw(OTHER_GOOD_PW), &anon)
        .await
        .unwrap();
    // Without a session to keep (API), all sessions end.
    acc.change_password(&u.id, &pw(OTHER_GOOD_PW), &pw(GOOD_PW), None, &c)
        .await
        .unwrap();
    assert!(
        t.core
            .sessions()
            .authenticate(s1.token.expose())
            .await
            .is_err()
    );
}

fn token_from_link(body: &str) -> String {
    let start = body
        .find("/reset-password?token=")
        .expect("reset link in mail")
        + "/reset-password?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn auth_1_password_reset_by_mail_single_use_and_expiring() {
    let t = TestCore::with_smtp(|_| {}).await;
    let smtp = t.smtp.as_ref().unwrap();
    let u = t.user("dave@example.com").await;
    let old_session = t
        .core
        .sessions()
        .create(&u, &client("192.0.2.1"))
        .await
        .unwrap();
    let acc = t.core.accounts();
    let anon = Actor::anonymous(client("203.0.113.1"));

    // Unknown address: same answer, no mail.
    acc.request_password_reset("ghost@example.com", &anon)
        .await
        .unwrap();
    acc.request_password_reset("Dave@Example.com", &anon)
        .await
        .unwrap();
    let mail = smtp
        .wait_for_containing("https://clawy.test/reset-password?token=")
        .await
        .unwrap();
    assert!(mail.to.contains("dave@example.com"), "{}", mail.to);
    let token = token_from_link(&mail.body);
    assert_eq!(token.len(), 43);
    assert_eq!(smtp.messages().len(), 1, "no mail for the unknown address");
    // Only the hash is stored.
    assert!(!t.dump_text().await.contains(&token));

    // A refused new password does not use the token up.
    let err = acc
        .complete_password_reset(&pw(&token), &pw("password12345"), &anon)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "password_common");
    let user = acc
        .complete_password_reset(&pw(&token), &pw(OTHER_GOOD_PW), &anon)
        .await
        .unwrap();
    assert_eq!(user.id, u.id);
    assert!(
        t.core
            .sessions()
            .authenticate(old_session.token.expose())
            .await
            .is_err(),
        "reset ends all sessions"
    );
    acc.authenticate("dave@example.com", &pw(OTHER_GOOD_PW), &anon)
        .await
        .unwrap();
    // Single use.
    let err = acc
        .complete_password_reset(&pw(&token), &pw(GOOD_PW), &anon)
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::ResetTokenInvalid));
    assert_eq!(err.kind(), ErrorKind::Invalid { field: "token" });

    // Expiry: one hour.
    let t2 = acc.create_password_reset_token(&u.id).await.unwrap();
    t.clock.advance(Duration::from_secs(3601));
    let err = acc
        .complete_password_reset(
            &SecretString::from(t2.expose().to_string()),
            &pw(GOOD_PW),
            &anon,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AccountError::ResetTokenInvalid));
    let t3 = acc.create_password_reset_token(&u.id).await.unwrap();
    t.clock.advance(Duration::from_secs(3599));
    acc.complete_password_reset(
        &SecretString::from(t3.expose().to_string()),
        &pw(GOOD_PW),
        &anon,
    )
    .await
    .unwrap();
    assert!(
        acc.complete_password_reset(&pw("garbage"), &pw(GOOD_PW), &anon)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn auth_1_password_reset_requests_are_rate_limited() {
    let t = TestCore::new().await;
    t.user("erin@example.com").await;
    let anon = Actor::anonymous(client("203.0.113.2"));
    for _ in 0..5 {
        t.core
            .accounts()
            .request_password_reset("erin@example.com", &anon)
            .await
            .unwrap();
    }
    let err = t
        .core
        .accounts()
        .request_password_reset("erin@example.com", &anon)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Throttled { .. }), "{err:?}");
}

#[tokio::test]
async fn operators_users_list_and_flag() {
    let t = TestCore::new().await;
    let op = t
        .core
        .accounts()
        .create_user("op@example.com", &pw(GOOD_PW), true, &Actor::system())
        .await
        .unwrap();
    assert!(op.is_operator);
    let u = t.user("user@example.com").await;
    let users = t.core.accounts().list_users().await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        ["op@example.com", "user@example.com"]
    );
    assert_eq!(t.core.accounts().count_users().await.unwrap(), 2);
    let u2 = t
        .core
        .accounts()
        .set_operator(&u.id, true, &caller_for(&op))
        .await
        .unwrap();
    assert!(u2.is_operator);
    assert_eq!(t.core.accounts().get_user(&u.id).await.unwrap(), u2);
    assert!(matches!(
        t.core.accounts().get_user("nope").await,
        Err(AccountError::NotFound)
    ));
    assert!(
        t.core
            .accounts()
            .find_by_email("USER@example.com")
            .await
            .unwrap()
            .is_some()
    );
    let err = t
        .core
        .accounts()
        .create_user("weak@example.com", &pw("short"), false, &Actor::system())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "password_too_short");
    let _ = ExposeSecret::expose_secret(&pw("x"));
}

#[tokio::test]
async fn emails_by_ids_answers_a_page_in_one_lookup() {
    let t = TestCore::new().await;
    let a = t.user("a@example.com").await;
    let b = t.user("b@example.com").await;
    let m = t
        .core
        .accounts()
        .emails_by_ids(&[&a.id, &b.id, &a.id, "no-such-user"])
        .await
        .unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[&a.id], "a@example.com");
    assert_eq!(m[&b.id], "b@example.com");
    assert!(
        t.core
            .accounts()
            .emails_by_ids(&[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn auth_2_reset_after_compromise_revokes_every_api_key() {
    use clawy_core::actor::Tier;
    let t = TestCore::new().await;
    let u = t.user("victim@example.com").await;
    let keys = t.core.api_keys();
    // Minted by an attacker with a stolen session (no creator tier = a session).
    let stolen = keys
        .create(&u.id, "attacker", Tier::Admin, None, None, &caller_for(&u))
        .await
        .unwrap();
    let acc = t.core.accounts();
    let anon = Actor::anonymous(client("192.0.2.7"));
    // A plain reset shows the keys (the token names the account) and keeps them.
    let tok = acc.create_password_reset_token(&u.id).await.unwrap();
    let tok = SecretString::from(tok.expose().to_string());
    assert_eq!(acc.reset_token_user(&tok).await.unwrap().id, u.id);
    acc.complete_password_reset(&tok, &pw(OTHER_GOOD_PW), &anon)
        .await
        .unwrap();
    assert!(keys.verify(stolen.key.expose()).await.unwrap().is_some());
    assert!(matches!(
        acc.reset_token_user(&tok).await,
        Err(AccountError::ResetTokenInvalid)
    ));
    // "I was compromised": every key dies with the reset.
    let tok = acc.create_password_reset_token(&u.id).await.unwrap();
    let tok = SecretString::from(tok.expose().to_string());
    acc.complete_password_reset_with(&tok, &pw(GOOD_PW), true, &anon)
        .await
        .unwrap();
    assert!(keys.verify(stolen.key.expose()).await.unwrap().is_none());
    assert!(
        keys.list(&u.id)
            .await
            .unwrap()
            .iter()
            .all(|k| k.revoked_at.is_some())
    );
}

#[tokio::test]
async fn auth_2_confirm_password_is_checked_and_throttled() {
    let t = TestCore::with(|c| c.throttle.account_lock_threshold = 3).await;
    let u = t.user("me@example.com").await;
    let acc = t.core.accounts();
    let me = caller_for(&u);
    acc.confirm_password(&u.id, &pw(GOOD_PW), &me)
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            acc.confirm_password(&u.id, &pw("Wrong-Guess-0000"), &me)
                .await,
            Err(AccountError::WrongCurrentPassword)
        ));
    }
    // A stolen session cannot use this form to guess the password.
    assert!(matches!(
        acc.confirm_password(&u.id, &pw(GOOD_PW), &me).await,
        Err(AccountError::Throttled { .. })
    ));
}

fn link_token(body: &str, path: &str) -> String {
    let marker = format!("{path}?token=");
    let start = body.find(&marker).expect("link in mail") + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn signup_email_is_verified_before_the_first_instance() {
    use clawy_core::instances::{CreateInstance, InstanceError};
    let t = TestCore::with_smtp(|c| c.email_verification = true).await;
    let acc = t.core.accounts();
    let anon = Actor::anonymous(client("192.0.2.44"));
    let u = acc
        .signup("new@example.com", &pw(GOOD_PW), &anon)
        .await
        .unwrap();
    assert!(!acc.is_email_verified(&u.id).await.unwrap());
    let req = || CreateInstance {
        name: "first".into(),
        plan: None,
        region: None,
        ssh_key_ids: vec![],
        secrets: Default::default(),
    };
    let err = t
        .core
        .instances()
        .create(&caller_for(&u), &u.id, req())
        .await
        .unwrap_err();
    assert!(matches!(err, InstanceError::EmailUnverified), "{err:?}");
    assert_eq!(err.code(), "email_unverified");
    // The link goes through the SMTP path; only its hash is stored.
    let mail = t
        .smtp
        .as_ref()
        .unwrap()
        .wait_for_containing("/verify-email?token=")
        .await
        .unwrap();
    assert!(mail.to.contains("new@example.com"));
    let token = link_token(&mail.body, "/verify-email");
    assert!(!t.dump_text().await.contains(&token));
    acc.verify_email(&pw(&token), &anon).await.unwrap();
    assert!(acc.is_email_verified(&u.id).await.unwrap());
    // Single use.
    assert!(matches!(
        acc.verify_email(&pw(&token), &anon).await,
        Err(AccountError::VerificationTokenInvalid)
    ));
    // Past the gate now (no host in this test, so placement answers instead).
    let err = t
        .core
        .instances()
        .create(&caller_for(&u), &u.id, req())
        .await
        .unwrap_err();
    assert!(!matches!(err, InstanceError::EmailUnverified), "{err:?}");
    // Accounts an operator creates are vouched for.
    let op = acc
        .create_user("op@example.com", &pw(GOOD_PW), true, &Actor::system())
        .await
        .unwrap();
    assert!(acc.is_email_verified(&op.id).await.unwrap());
}

#[tokio::test]
async fn invite_only_signup_needs_an_unused_invitation() {
    let t = TestCore::with(|c| c.signup_mode = clawy_core::config::SignupMode::Invite).await;
    let acc = t.core.accounts();
    let anon = Actor::anonymous(client("192.0.2.45"));
    assert!(matches!(
        acc.signup("a@example.com", &pw(GOOD_PW), &anon).await,
        Err(AccountError::InviteRequired)
    ));
    assert!(matches!(
        acc.signup_with("a@example.com", &pw(GOOD_PW), Some(&pw("made-up")), &anon)
            .await,
        Err(AccountError::InviteInvalid)
    ));
    let invite = acc.create_invite(&Actor::system()).await.unwrap();
    assert!(
        acc.invite_link(&invite)
            .starts_with("https://clawy.test/signup?invite=")
    );
    let inv = pw(invite.expose());
    acc.signup_with("a@example.com", &pw(GOOD_PW), Some(&inv), &anon)
        .await
        .unwrap();
    // One account per invitation.
    assert!(matches!(
        acc.signup_with("b@example.com", &pw(GOOD_PW), Some(&inv), &anon)
            .await,
        Err(AccountError::InviteInvalid)
    ));
    // Expired invitations do not work.
    let old = acc.create_invite(&Actor::system()).await.unwrap();
    t.clock.advance(Duration::from_secs(8 * 24 * 3600));
    assert!(matches!(
        acc.signup_with(
            "c@example.com",
            &pw(GOOD_PW),
            Some(&pw(old.expose())),
            &anon
        )
        .await,
        Err(AccountError::InviteInvalid)
    ));
}
