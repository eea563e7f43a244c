//! What THIS installation actually keeps of the published promises (`promises.rs`).
//!
//! The security page and the landing page state a promise as kept only when the
//! mechanism behind it runs here. The answer comes from facts about the installation
//! ([`InstallationFacts`]: its configuration, its registered hosts, the manifest of
//! the guest image it deploys) through one status rule per promise id
//! ([`STATUS_RULES`]) — never from a hand-set flag. A promise without a rule is kept
//! by the control plane's own code and holds wherever it runs.
//!
//! Extending: a part that brings a mechanism (the HTTPS edge, the real guest image's
//! heartbeat) adds the fact it can prove to [`InstallationFacts`], fills it in
//! [`InstallationFacts::gather`], and adds or tightens the rule of the promise it keeps.

use serde::Serialize;
use std::path::Path;

use crate::Core;
use crate::error::CoreError;

/// The packages a guest image's manifest lists that promises depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestImageFacts {
    /// The manifest the facts were read from.
    pub manifest: String,
    pub ufw: bool,
    pub fail2ban: bool,
    pub openssh_server: bool,
}

impl GuestImageFacts {
    /// Reads the image build's manifest (`<image>.manifest.json`, written by
    /// `scripts/build-guest-image.sh`): its `debian_packages` list of `{name, version}`.
    pub fn from_manifest_json(source: &str, json: &[u8]) -> Option<GuestImageFacts> {
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        let names: Vec<&str> = v
            .get("debian_packages")?
            .as_array()?
            .iter()
            .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
            .collect();
        let has = |n: &str| names.contains(&n);
        Some(GuestImageFacts {
            manifest: source.to_string(),
            ufw: has("ufw"),
            fail2ban: has("fail2ban"),
            openssh_server: has("openssh-server"),
        })
    }
}

/// Everything a status rule may look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallationFacts {
    /// `base_url` is https (the control plane is served over TLS).
    pub control_plane_https: bool,
    /// An HTTPS edge (Caddy) serves instance hostnames: at least one enabled,
    /// reachable host's agent reported an edge whose Caddy runs the edge config
    /// (HostInfo `edge.working`, stored by the poller). A configured but broken
    /// edge, or one on an unreachable host, does not count.
    pub edge_configured: bool,
    /// Mail can be sent (`smtp_url`).
    pub smtp_configured: bool,
    /// The database connection: SQLite, or PostgreSQL with `sslmode=verify-full`.
    pub database_encrypted_or_local: bool,
    /// The guest image deployed (`base_image`), with its manifest if one is found.
    pub guest_image: String,
    pub guest_manifest: Option<GuestImageFacts>,
    /// Registered hosts.
    pub hosts: usize,
}

impl InstallationFacts {
    /// Collects the facts from the running installation.
    pub async fn gather(core: &Core) -> Result<InstallationFacts, CoreError> {
        let config = core.config();
        let url = config.database_url.as_str();
        let database_encrypted_or_local =
            url.starts_with("sqlite:") || url.contains("sslmode=verify-full");
        let guest_manifest = config
            .guest_image_manifest
            .as_deref()
            .and_then(read_manifest);
        let hosts = core.hosts().list().await.map_err(CoreError::new)?;
        let edge_configured = hosts
            .iter()
            .any(|h| h.enabled && h.reachable && h.edge.as_ref().is_some_and(|e| e.working));
        let hosts = hosts.len();
        Ok(InstallationFacts {
            control_plane_https: config.base_url.scheme() == "https",
            edge_configured,
            smtp_configured: config.smtp_url.is_some(),
            database_encrypted_or_local,
            guest_image: config.base_image.clone(),
            guest_manifest,
            hosts,
        })
    }
}

fn read_manifest(path: &Path) -> Option<GuestImageFacts> {
    let bytes = std::fs::read(path).ok()?;
    GuestImageFacts::from_manifest_json(&path.display().to_string(), &bytes)
}

/// Whether a promise is kept on this installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PromiseStatus {
    Active,
    /// Shown as "not active on this installation", with why.
    NotActive {
        why: String,
    },
}

impl PromiseStatus {
    pub fn is_active(&self) -> bool {
        matches!(self, PromiseStatus::Active)
    }
}

type Rule = fn(&InstallationFacts) -> PromiseStatus;

fn active_if(ok: bool, why: impl FnOnce() -> String) -> PromiseStatus {
    if ok {
        PromiseStatus::Active
    } else {
        PromiseStatus::NotActive { why: why() }
    }
}

fn guest_has(
    f: &InstallationFacts,
    what: &str,
    has: impl Fn(&GuestImageFacts) -> bool,
) -> PromiseStatus {
    match &f.guest_manifest {
        Some(m) if has(m) => PromiseStatus::Active,
        Some(m) => PromiseStatus::NotActive {
            why: format!(
                "the guest image in use ({}) does not contain {what} (its manifest {} lists no such package)",
                f.guest_image, m.manifest
            ),
        },
        None => PromiseStatus::NotActive {
            why: format!(
                "the guest image in use ({}) comes without a build manifest, so nothing shows that it contains {what} (the test stand-in image does not)",
                f.guest_image
            ),
        },
    }
}

/// One rule per promise whose mechanism is not part of the control plane itself.
pub const STATUS_RULES: &[(&str, Rule)] = &[
    ("DATA-1", |f| {
        let mut missing = Vec::new();
        if !f.control_plane_https {
            missing.push("the control plane is served over plain HTTP (base_url)");
        }
        if !f.edge_configured {
            missing.push("no reachable host reports a working HTTPS edge, so instance hostnames are not served over TLS");
        }
        active_if(missing.is_empty(), || missing.join("; "))
    }),
    ("DATA-4", |f| {
        active_if(f.database_encrypted_or_local, || {
            "the PostgreSQL connection is not set to sslmode=verify-full".to_string()
        })
    }),
    ("NET-1", |f| guest_has(f, "UFW", |m| m.ufw)),
    ("NET-2", |f| guest_has(f, "fail2ban", |m| m.fail2ban)),
    ("AUTH-4", |f| {
        guest_has(f, "an SSH server configured by cloud-init", |m| {
            m.openssh_server
        })
    }),
    ("NET-4", |f| {
        active_if(f.edge_configured, || {
            "no Caddy edge is working on this installation (no reachable host reports one)"
                .to_string()
        })
    }),
    ("REPORT-1", |f| {
        active_if(f.smtp_configured, || {
            "no mail server is configured (smtp_url), so reports are stored and tracked but the security contact is not notified by mail".to_string()
        })
    }),
];

/// The status of promise `id` on an installation with `facts`.
pub fn status_of(id: &str, facts: &InstallationFacts) -> PromiseStatus {
    // A promise no test proves yet is kept by no installation.
    if let Some(why) = crate::promises::not_yet_kept(id) {
        return PromiseStatus::NotActive {
            why: why.trim_end_matches('.').to_string(),
        };
    }
    rule_status(id, facts)
}

/// What this installation's facts say about `id`, before the not-yet-kept list.
fn rule_status(id: &str, facts: &InstallationFacts) -> PromiseStatus {
    STATUS_RULES
        .iter()
        .find(|(rule_id, _)| *rule_id == id)
        .map_or(PromiseStatus::Active, |(_, rule)| rule(facts))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::promises::PROMISES;

    fn full() -> InstallationFacts {
        InstallationFacts {
            control_plane_https: true,
            edge_configured: true,
            smtp_configured: true,
            database_encrypted_or_local: true,
            guest_image: "clawy-openclaw-1.qcow2".into(),
            guest_manifest: Some(GuestImageFacts {
                manifest: "m.json".into(),
                ufw: true,
                fail2ban: true,
                openssh_server: true,
            }),
            hosts: 1,
        }
    }

    #[test]
    fn every_rule_names_a_published_promise() {
        for (id, _) in STATUS_RULES {
            assert!(
                PROMISES.iter().any(|p| p.id == *id),
                "{id} is not a promise"
            );
        }
    }

    #[test]
    fn a_complete_installation_keeps_every_promise_a_test_proves() {
        let f = full();
        for p in PROMISES {
            let want_active = crate::promises::not_yet_kept(p.id).is_none();
            assert_eq!(status_of(p.id, &f).is_active(), want_active, "{}", p.id);
        }
    }

    #[test]
    fn the_stand_in_without_edge_or_mail_says_what_is_not_active_and_why() {
        let f = InstallationFacts {
            control_plane_https: false,
            edge_configured: false,
            smtp_configured: false,
            database_encrypted_or_local: true,
            guest_image: "clawy-test-guest.qcow2".into(),
            guest_manifest: None,
            hosts: 0,
        };
        for id in ["DATA-1", "NET-1", "NET-2", "NET-4", "AUTH-4", "REPORT-1"] {
            let PromiseStatus::NotActive { why } = rule_status(id, &f) else {
                panic!("{id} claimed active");
            };
            assert!(!why.is_empty());
        }
        assert!(
            matches!(rule_status("NET-2", &f), PromiseStatus::NotActive { why } if why.contains("clawy-test-guest.qcow2"))
        );
        // What the control plane keeps by itself stays active.
        assert!(rule_status("AUTH-1", &f).is_active());
        assert!(rule_status("DATA-4", &f).is_active());
        // A manifest that lacks one package: only that promise is off.
        let mut g = full();
        g.guest_manifest.as_mut().unwrap().fail2ban = false;
        assert!(!rule_status("NET-2", &g).is_active());
        assert!(rule_status("NET-1", &g).is_active());
    }

    #[test]
    fn manifest_packages_are_read_from_the_build_manifest() {
        let json = br#"{"debian_packages":[{"name":"ufw","version":"0.36"},{"name":"openssh-server","version":"9.2"}]}"#;
        let m = GuestImageFacts::from_manifest_json("x.json", json).unwrap();
        assert!(m.ufw && m.openssh_server && !m.fail2ban);
        assert!(GuestImageFacts::from_manifest_json("x", b"not json").is_none());
        assert!(GuestImageFacts::from_manifest_json("x", b"{}").is_none());
    }
}
