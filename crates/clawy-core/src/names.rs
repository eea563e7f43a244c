//! Names and short texts taken from people: the one rule for DNS-label names
//! (instances, hosts) and the sanitising of free text before it is stored.
//! A leaf module: it imports nothing from the crate (the label rule itself is
//! `clawy_proto::names`, shared with the agent).

/// DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`. Instance names become guest
/// hostnames, host names appear in URLs and logs: both follow this rule, the same one
/// the agent's edge and the DNS publisher apply (`clawy_proto::names`).
pub use clawy_proto::names::is_dns_label;

/// Characters of the instance id in its hostname: 8 hex digits of a random UUID
/// (a clash is a unique-index violation and the create retries with a new id).
pub const HOSTNAME_ID_CHARS: usize = 8;

/// The public hostname of an instance: `<name>-<short id>.<apex>`, one DNS
/// label of at most 63 characters before the apex (a long name is shortened, never
/// the id). The short id makes it differ from every other instance's, including
/// deleted ones of the same owner and name, so a hostname is never reused.
pub fn instance_hostname(name: &str, id: &str, apex: &clawy_proto::names::DnsName) -> String {
    let short: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(HOSTNAME_ID_CHARS)
        .collect::<String>()
        .to_ascii_lowercase();
    let room = 63 - 1 - short.len();
    let head: String = name.chars().take(room).collect();
    let head = head.trim_end_matches('-');
    format!("{head}-{short}.{apex}")
}

/// At most `max` characters of `s`, control characters removed: what goes into the
/// audit log, error columns and user-agent fields (no line breaks or escapes a reader
/// of the log could be fooled by).
pub fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web-1", "0", "abc123", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "ä",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn instance_hostnames_are_one_short_label_under_the_apex() {
        let apex = clawy_proto::names::DnsName::parse("claws.example.com", "t", 2).unwrap();
        let id = "3F2A9C1B-0000-4000-8000-000000000000";
        assert_eq!(
            instance_hostname("web", id, &apex),
            "web-3f2a9c1b.claws.example.com"
        );
        // 63-character names are cut (and a cut ending in '-' trimmed); the id stays.
        let long = format!("{}-b{}", "a".repeat(53), "c".repeat(8));
        let h = instance_hostname(&long, id, &apex);
        let label = h.split('.').next().unwrap();
        assert_eq!(label.len(), 62, "{label}");
        assert!(label.ends_with("a-3f2a9c1b"), "{label}");
        assert!(clawy_proto::names::DnsName::parse(&h, "t", 3).is_ok());
        for name in ["a", &"z".repeat(63), "a-b-c"] {
            let h = instance_hostname(name, id, &apex);
            assert!(
                clawy_proto::names::DnsName::parse(&h, "t", 3).is_ok(),
                "{h}"
            );
            assert!(h.split('.').next().unwrap().len() <= 63);
        }
    }

    #[test]
    fn truncation_drops_control_characters() {
        assert_eq!(truncate_chars("a\nb\u{1b}[31mc", 10), "ab[31mc");
        assert_eq!(truncate_chars("äöü", 2), "äö");
    }
}
