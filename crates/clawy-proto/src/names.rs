//! Validation of every name that reaches Caddy's JSON, the DNS responder or a
//! storage path. The rules are deliberately narrower than DNS allows: lowercase
//! letters, digits and inner hyphens only (LDH), so a name can never carry a
//! placeholder (`{…}`), a path separator, a quote, a wildcard or whitespace into a
//! generated file or a file-system path.
//!
//! Shared by the agent's edge (Caddy JSON, the loopback DNS responder, certificate
//! storage), the orchestrator's DNS publisher and `clawy_core::names` (instance and
//! host names): hostnames are wire data, and one rule keeps the three in step.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error(
        "{what} has a label that is not lowercase letters, digits and inner hyphens (1-63 characters): {label:?}"
    )]
    BadLabel { what: &'static str, label: String },
    #[error("{what} needs at least {min} labels")]
    TooFewLabels { what: &'static str, min: usize },
    #[error("{what} ends in an all-numeric label (it would look like an IP address)")]
    NumericTld { what: &'static str },
    #[error("{what} is not a plain address (local@domain, letters, digits and . _ + - only)")]
    BadEmail { what: &'static str },
}

/// True for one DNS label in the strict form Clawy accepts everywhere:
/// `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A lowercase LDH domain name without a trailing dot: an instances apex, an
/// internal zone or an instance hostname.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// Parses `s` as a name of at least `min_labels` labels. `what` names the
    /// setting in the error.
    pub fn parse(s: &str, what: &'static str, min_labels: usize) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty { what });
        }
        // 253 = the longest name that fits the 255-byte wire form.
        if s.len() > 253 {
            return Err(NameError::TooLong { what, max: 253 });
        }
        let mut count = 0;
        let mut last = "";
        for label in s.split('.') {
            if !is_dns_label(label) {
                return Err(NameError::BadLabel {
                    what,
                    label: label.chars().take(70).collect(),
                });
            }
            count += 1;
            last = label;
        }
        if count < min_labels {
            return Err(NameError::TooFewLabels {
                what,
                min: min_labels,
            });
        }
        if last.bytes().all(|c| c.is_ascii_digit()) {
            return Err(NameError::NumericTld { what });
        }
        Ok(DnsName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of labels (`a.b.c` has 3).
    pub fn label_count(&self) -> usize {
        self.0.split('.').count()
    }

    /// The first label (`my-claw-1a2b` of `my-claw-1a2b.claws.example.com`).
    pub fn first_label(&self) -> &str {
        self.0.split('.').next().unwrap_or("")
    }

    /// If `self` is exactly one label under `parent`, that label.
    pub fn label_under(&self, parent: &DnsName) -> Option<&str> {
        let rest = self.0.strip_suffix(parent.as_str())?;
        let label = rest.strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DnsName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DnsName::parse(&s, "name", 1)
    }
}

impl From<DnsName> for String {
    fn from(n: DnsName) -> String {
        n.0
    }
}

/// An operator's e-mail address for the ACME account. Narrow on purpose: it ends
/// up in Caddy's JSON and in the ACME account, and a quote, a brace or a control
/// character has no business in either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AcmeEmail(String);

impl AcmeEmail {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let what = "acme email";
        if s.len() > 254 {
            return Err(NameError::TooLong { what, max: 254 });
        }
        let (local, domain) = s.split_once('@').ok_or(NameError::BadEmail { what })?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'));
        if !local_ok {
            return Err(NameError::BadEmail { what });
        }
        // The domain part follows the same strict rules as every other name,
        // compared in lowercase (mail domains are case-insensitive).
        DnsName::parse(&domain.to_ascii_lowercase(), what, 2)
            .map_err(|_| NameError::BadEmail { what })?;
        Ok(AcmeEmail(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AcmeEmail {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AcmeEmail::parse(&s)
    }
}

impl From<AcmeEmail> for String {
    fn from(n: AcmeEmail) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in [
            "claws.example.com",
            "a.b",
            "x-1.clawy.localhost",
            "vm.clawy.internal",
        ] {
            DnsName::parse(ok, "apex", 2).unwrap();
        }
    }

    #[test]
    fn refuses_hostile_and_odd_names() {
        for bad in [
            "",
            ".",
            "example.com.",
            ".example.com",
            "Example.com",
            "*.example.com",
            "a..b",
            "-a.b",
            "a-.b",
            "a b.c",
            "a\"b.c",
            "{http.request.host}.c",
            "a/b.c",
            "a\\b.c",
            "a:80.b",
            "a\n.b",
            "ünïcode.de",
            "1.2.3.4",
            "host.123",
            "com",
        ] {
            assert!(DnsName::parse(bad, "apex", 2).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(DnsName::parse(&long, "apex", 2).is_err());
        let very_long = ["abcdefghi"; 30].join(".");
        assert_eq!(
            DnsName::parse(&very_long, "apex", 2),
            Err(NameError::TooLong {
                what: "apex",
                max: 253
            })
        );
    }

    #[test]
    fn label_under_is_exactly_one_label() {
        let apex = DnsName::parse("claws.example.com", "apex", 2).unwrap();
        let host = DnsName::parse("my-claw.claws.example.com", "host", 2).unwrap();
        assert_eq!(host.label_under(&apex), Some("my-claw"));
        let deeper = DnsName::parse("a.my-claw.claws.example.com", "host", 2).unwrap();
        assert_eq!(deeper.label_under(&apex), None);
        let other = DnsName::parse("my-claw.xclaws.example.com", "host", 2).unwrap();
        assert_eq!(other.label_under(&apex), None);
        assert_eq!(apex.label_under(&apex), None);
    }

    #[test]
    fn emails() {
        AcmeEmail::parse("ops@example.com").unwrap();
        AcmeEmail::parse("ops+acme@Mail.Example.com").unwrap();
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "o\"ps@example.com",
            "ops@example.com\n",
            "o ps@example.com",
            "ops@{env.X}.com",
            "ops@localhost",
        ] {
            assert!(AcmeEmail::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
