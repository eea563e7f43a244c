//! Names and short texts taken from people: the one rule for DNS-label names
//! (instances, hosts) and the sanitising of free text before it is stored.
//! A leaf module: it imports nothing from the crate (the label rule itself is
//! `clawy_proto::names`, shared with the agent).

/// DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`. Instance names become guest
/// hostnames, host names appear in URLs and logs: both follow this rule, the same one
/// the agent's edge and the DNS publisher apply (`clawy_proto::names`).
pub use clawy_proto::names::is_dns_label;

/// At most `max` characters of `s`, control characters removed: what goes into the
/// audit log, error columns and user-agent fields (no line breaks or escapes a reader
/// of the log could be fooled by).
pub fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
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
    fn truncation_drops_control_characters() {
        assert_eq!(truncate_chars("a\nb\u{1b}[31mc", 10), "ab[31mc");
        assert_eq!(truncate_chars("äöü", 2), "äö");
    }
}
