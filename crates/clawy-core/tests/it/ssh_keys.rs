//! AUTH-4 groundwork: SSH public key validation and storage.

use crate::common::*;
use clawy_core::ssh_keys::{SshKeyError, parse_public_key};
use clawy_core::{DomainError, ErrorKind};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/it/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn expected_fingerprint(name: &str) -> String {
    fixture("fingerprints.txt")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap()
}

#[test]
fn auth_4_accepts_ed25519_ecdsa_and_rsa_3072_with_ssh_keygen_fingerprints() {
    for (name, alg) in [
        ("ed25519.pub", "ssh-ed25519"),
        ("ecdsa_256.pub", "ecdsa-sha2-nistp256"),
        ("ecdsa_384.pub", "ecdsa-sha2-nistp384"),
        ("ecdsa_521.pub", "ecdsa-sha2-nistp521"),
        ("rsa_3072.pub", "ssh-rsa"),
    ] {
        let k = parse_public_key(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(k.algorithm, alg);
        assert_eq!(
            k.fingerprint,
            expected_fingerprint(name),
            "{name} fingerprint as ssh-keygen -l prints it"
        );
        assert!(k.openssh.starts_with(alg));
    }
    assert_eq!(
        parse_public_key(&fixture("rsa_3072.pub")).unwrap().rsa_bits,
        Some(3072)
    );
    // Surrounding whitespace and a trailing newline are fine.
    parse_public_key(&format!("\n  {}  \n", fixture("ed25519.pub").trim())).unwrap();
}

#[test]
fn auth_4_refuses_dsa_short_rsa_garbage_and_private_keys() {
    let e = parse_public_key(&fixture("dsa.pub")).unwrap_err();
    assert!(matches!(e, SshKeyError::Dsa), "{e:?}");
    let e = parse_public_key(&fixture("rsa_2048.pub")).unwrap_err();
    assert!(
        matches!(e, SshKeyError::RsaTooShort { bits: 2048 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("3072"));
    for garbage in [
        "",
        "hello",
        "ssh-ed25519 notbase64!!",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        "-----BEGIN PUBLIC KEY-----",
    ] {
        let e = parse_public_key(garbage).unwrap_err();
        assert!(matches!(e, SshKeyError::Unparseable), "{garbage:?}: {e:?}");
        assert_eq!(
            e.kind(),
            ErrorKind::Invalid {
                field: "public_key"
            }
        );
    }
    let two = format!(
        "{}\n{}",
        fixture("ed25519.pub").trim(),
        fixture("ecdsa_256.pub").trim()
    );
    assert!(matches!(
        parse_public_key(&two),
        Err(SshKeyError::MultipleKeys)
    ));

    // A real private key, generated here (never checked in).
    let private =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let pem = private.to_openssh(ssh_key::LineEnding::LF).unwrap();
    let e = parse_public_key(&pem).unwrap_err();
    assert!(matches!(e, SshKeyError::PrivateKey));
    assert_eq!(e.code(), "private_key_pasted");
    let msg = e.to_string();
    assert!(
        msg.contains("PRIVATE") && msg.to_lowercase().contains("new key pair"),
        "{msg}"
    );
    assert!(
        !msg.contains(&pem[40..80]),
        "the message never echoes the key"
    );
    assert!(matches!(
        parse_public_key("-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n"),
        Err(SshKeyError::PrivateKey)
    ));
}

#[tokio::test]
async fn auth_4_add_list_delete_scoped_and_duplicates_refused() {
    let t = TestCore::new().await;
    let alice = t.user("alice@example.com").await;
    let bob = t.user("bob@example.com").await;
    let keys = t.core.ssh_keys();
    let k = keys
        .add(
            &alice.id,
            "laptop",
            &fixture("ed25519.pub"),
            &caller_for(&alice),
        )
        .await
        .unwrap();
    assert_eq!(k.fingerprint, expected_fingerprint("ed25519.pub"));
    assert_eq!(k.name, "laptop");
    // Empty name takes the key's comment.
    let k2 = keys
        .add(
            &alice.id,
            "",
            &fixture("ecdsa_384.pub"),
            &caller_for(&alice),
        )
        .await
        .unwrap();
    assert_eq!(k2.name, "test-ecdsa_384@clawy");
    let e = keys
        .add(
            &alice.id,
            "again",
            &fixture("ed25519.pub"),
            &caller_for(&alice),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SshKeyError::Duplicate));
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // Another user may register the same public key.
    keys.add(
        &bob.id,
        "shared",
        &fixture("ed25519.pub"),
        &caller_for(&bob),
    )
    .await
    .unwrap();
    assert_eq!(keys.list(&alice.id).await.unwrap().len(), 2);
    assert!(matches!(
        keys.get(&bob.id, &k.id).await,
        Err(SshKeyError::NotFound)
    ));
    assert!(matches!(
        keys.delete(&bob.id, &k.id, &caller_for(&bob)).await,
        Err(SshKeyError::NotFound)
    ));
    keys.delete(&alice.id, &k.id, &caller_for(&alice))
        .await
        .unwrap();
    assert_eq!(keys.list(&alice.id).await.unwrap().len(), 1);
    assert!(matches!(
        keys.add(
            &alice.id,
            &"n".repeat(65),
            &fixture("ecdsa_256.pub"),
            &caller_for(&alice)
        )
        .await,
        Err(SshKeyError::InvalidName)
    ));
    let events = t
        .core
        .audit()
        .list(clawy_core::audit::Scope::User(&alice.id), 10, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "ssh_key_added" && e.detail.contains(&k.fingerprint))
    );
    assert!(events.iter().any(|e| e.action == "ssh_key_removed"));
}

#[test]
fn auth4_stored_comment_always_passes_the_agents_rule() {
    let base = fixture("ed25519.pub");
    let mut parts = base.split_whitespace();
    let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
    // Comments with characters the agent refuses (a tab, bidirectional and
    // zero-width controls, a BOM) next to ones it keeps.
    for comment in [
        "me@laptop: {evil: 1}",
        "\"quoted\" & 'single' #hash",
        "tab\there | pipe > redirect",
        "ünïcödé ☃ key",
        "*anchor &alias !tag %percent `tick`",
        "admin\u{202E}txt.exe\u{200B}\u{FEFF}",
    ] {
        let line = format!("{kind} {blob} {comment}");
        let parsed = parse_public_key(&line).unwrap();
        assert!(
            clawy_proto::agent::is_safe_ssh_key_comment(&parsed.comment),
            "{comment:?} -> {:?}",
            parsed.comment
        );
        let stored_comment = parsed.openssh.splitn(3, ' ').nth(2).unwrap_or_default();
        assert!(
            clawy_proto::agent::is_safe_ssh_key_comment(stored_comment),
            "{:?}",
            parsed.openssh
        );
    }
    // A clean comment is kept as is: quotes, backslashes, YAML syntax and
    // non-ASCII included (the agent writes it escaped; AUTH-4 keys land exactly).
    for kept in [
        "alice@work-laptop (2026)",
        "\"quoted\" it's back\\slash: {evil: 1} # not a comment",
        "ünïcödé ☃ 鍵 ключ",
    ] {
        let line = format!("{kind} {blob} {kept}");
        assert_eq!(parse_public_key(&line).unwrap().comment, kept);
    }
    // Only the refused characters go; whitespace runs become one space.
    let line = format!("{kind} {blob} tab\there  \u{202E}bidi\u{200B}");
    assert_eq!(parse_public_key(&line).unwrap().comment, "tab here bidi");
}

#[tokio::test]
async fn ssh_keys_per_account_are_capped() {
    let t = TestCore::new().await;
    let u = t.user("many@example.com").await;
    let keys = t.core.ssh_keys();
    let max = clawy_core::ssh_keys::MAX_KEYS_PER_USER as usize;
    for i in 0..max {
        let pk = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let line = pk.public_key().to_openssh().unwrap();
        keys.add(&u.id, &format!("k{i}"), &line, &caller_for(&u))
            .await
            .unwrap();
    }
    let pk =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let e = keys
        .add(
            &u.id,
            "one too many",
            &pk.public_key().to_openssh().unwrap(),
            &caller_for(&u),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SshKeyError::TooMany), "{e:?}");
    assert_eq!(e.code(), "too_many_keys");
}
