//! Verdicts on the reports of the "from outside" scanners (docs/SECURITY-TESTS.md),
//! shared by the agent's and the control plane's scan tests.

/// The verdict on testssl's findings: no protocol below TLS 1.2 offered, no cipher
/// category below "strong" offered, and no finding of severity MEDIUM or worse.
pub fn assert_tls_strong(findings: &[serde_json::Value], what: &str) {
    let get = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("{what}: testssl reported no {id}: {findings:?}"))
            .to_owned()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let f = get(old);
        assert!(f.starts_with("not offered"), "{what}: {old} {f}");
    }
    let tls12 = get("TLS1_2");
    let tls13 = get("TLS1_3");
    assert!(
        tls12.starts_with("offered") || tls13.starts_with("offered"),
        "{what}: neither TLS 1.2 nor 1.3 offered: {tls12} / {tls13}"
    );
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        let f = get(weak);
        assert!(f.starts_with("not offered"), "{what}: {weak} {f}");
    }
    // testssl 3.1 adds an "obsoleted" category (CBC ciphers); 3.0 (Debian 12) has none.
    if let Some(f) = findings.iter().find(|f| f["id"] == "cipherlist_OBSOLETED") {
        assert!(
            f["finding"]
                .as_str()
                .is_some_and(|s| s.starts_with("not offered")),
            "{what}: obsoleted ciphers: {f}"
        );
    }
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .collect();
    assert!(bad.is_empty(), "{what}: testssl findings: {bad:?}");
}
