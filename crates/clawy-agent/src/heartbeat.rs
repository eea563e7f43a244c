//! The guests' service-health heartbeat (ACCESS-1, ACCESS-2), as
//! guest/openclaw-image/CONTRACT.md defines it: the decision part, pure and tested.
//! The receiver that serves it on the bridge address is [`crate::heartbeat_server`].
//!
//! A heartbeat is accepted only when all of these hold, else it is refused with a
//! reason that is counted (never the token or the body):
//! - the body is at most [`MAX_BODY`] bytes and matches the contract exactly
//!   (unknown fields refused: the guest may send nothing else, ACCESS-2);
//! - the source address is a registered VM's address (the nftables anti-spoofing
//!   binds it to the VM's tap);
//! - the bearer token hashes to that VM's stored hash (constant-time compare), so a
//!   VM cannot report for another even with its own valid token.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// Largest accepted body: the contract's heartbeat is well under 1 KiB.
pub const MAX_BODY: usize = 4096;

pub use clawy_proto::heartbeat::{
    CloudInit, DefaultIncoming, Fail2ban, Gateway, Heartbeat, ReceivedHeartbeat, Services, Ufw,
    Unit, UnitState,
};

/// Why a heartbeat was refused (counted per reason; ACCESS-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Refusal {
    #[error("body too large")]
    TooLarge,
    #[error("body does not match the contract")]
    Malformed,
    #[error("source address is not a registered VM")]
    UnknownSource,
    #[error("missing or wrong token")]
    BadToken,
}

impl Refusal {
    /// The counter's name (HostInfo `heartbeat_refusals`).
    pub fn key(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
            Refusal::UnknownSource => "unknown_source",
            Refusal::BadToken => "bad_token",
        }
    }

    /// The HTTP status the receiver answers with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TooLarge => 413,
            Refusal::Malformed => 422,
            Refusal::UnknownSource => 403,
            Refusal::BadToken => 401,
        }
    }
}

fn shape_ok(s: &str, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(ok)
}

fn rfc3339_utc_ok(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Parses and shape-checks a body (after the size check).
pub fn parse(body: &[u8]) -> Result<Heartbeat, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::TooLarge);
    }
    let hb: Heartbeat = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    let image_ok = hb.image == "unknown"
        || shape_ok(&hb.image, 128, |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    let boot_ok = hb.boot_id == "unknown"
        || shape_ok(&hb.boot_id, 36, |b| b.is_ascii_hexdigit() || b == b'-');
    let jails_ok = hb.services.fail2ban.jails.len() <= 16
        && hb.services.fail2ban.jails.iter().all(|j| {
            shape_ok(j, 64, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
            })
        });
    if hb.v != 1
        || !image_ok
        || !boot_ok
        || !jails_ok
        || !rfc3339_utc_ok(&hb.booted_at)
        || !rfc3339_utc_ok(&hb.sent_at)
    {
        return Err(Refusal::Malformed);
    }
    Ok(hb)
}

/// A fresh per-VM heartbeat token (256 bits, hex: inside the contract's charset).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// What the agent stores of a token: its SHA-256 (DATA-3 style; never the token).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The registered VMs: address → (VM id, token hash).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_ip: BTreeMap<Ipv4Addr, (String, [u8; 32])>,
}

impl Registry {
    pub fn register(&mut self, ip: Ipv4Addr, vm_id: &str, hash: [u8; 32]) {
        self.by_ip.insert(ip, (vm_id.to_string(), hash));
    }

    pub fn forget(&mut self, vm_id: &str) {
        self.by_ip.retain(|_, (id, _)| id != vm_id);
    }

    /// The whole decision: size, source, token, then the body. Returns the VM id.
    pub fn accept(
        &self,
        source: Ipv4Addr,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(String, Heartbeat), Refusal> {
        if body.len() > MAX_BODY {
            return Err(Refusal::TooLarge);
        }
        let (vm_id, hash) = self.by_ip.get(&source).ok_or(Refusal::UnknownSource)?;
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(Refusal::BadToken)?;
        let given = token_hash(token);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&given[..], &hash[..])) {
            return Err(Refusal::BadToken);
        }
        Ok((vm_id.clone(), parse(body)?))
    }
}

/// Refusals counted per reason (ACCESS-2: recorded, never the content).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusalCounts(pub BTreeMap<Refusal, u64>);

impl RefusalCounts {
    /// Counts `r` and returns its new count.
    pub fn record(&mut self, r: Refusal) -> u64 {
        let n = self.0.entry(r).or_default();
        *n += 1;
        *n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const BODY: &str = r#"{"v":1,"image":"clawy-openclaw-2026.9.6-1","boot_id":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","booted_at":"2026-11-30T20:00:00Z","sent_at":"2026-11-30T20:01:30Z","config_applied":true,"cloud_init":"done","services":{"openclaw_gateway":{"state":"active","ready":true},"sshd":{"state":"active"},"ufw":{"state":"active","default_incoming":"deny"},"fail2ban":{"state":"active","jails":["sshd"]}}}"#;

    fn registry() -> (Registry, String, String) {
        let (a, b) = (new_token(), new_token());
        let mut r = Registry::default();
        r.register(Ipv4Addr::new(10, 77, 0, 2), "vm-a", token_hash(&a));
        r.register(Ipv4Addr::new(10, 77, 0, 3), "vm-b", token_hash(&b));
        (r, a, b)
    }

    #[test]
    fn access2_the_contract_body_is_accepted_from_its_vm() {
        let (r, a, _) = registry();
        let (id, hb) = r
            .accept(
                Ipv4Addr::new(10, 77, 0, 2),
                Some(&format!("Bearer {a}")),
                BODY.as_bytes(),
            )
            .unwrap();
        assert_eq!(id, "vm-a");
        assert!(hb.config_applied);
        assert_eq!(hb.services.ufw.default_incoming, DefaultIncoming::Deny);
        assert_eq!(hb.services.fail2ban.jails, ["sshd"]);
    }

    #[test]
    fn access2_extra_field_wrong_token_and_other_vms_address_are_refused() {
        let (r, a, b) = registry();
        let ip_a = Ipv4Addr::new(10, 77, 0, 2);
        let auth_a = format!("Bearer {a}");
        let extra = BODY.replacen("\"v\":1,", "\"v\":1,\"processes\":[\"x\"],", 1);
        assert_eq!(
            r.accept(ip_a, Some(&auth_a), extra.as_bytes()).unwrap_err(),
            Refusal::Malformed
        );
        let nested = BODY.replacen("\"ready\":true", "\"ready\":true,\"pid\":1", 1);
        assert_eq!(
            r.accept(ip_a, Some(&auth_a), nested.as_bytes())
                .unwrap_err(),
            Refusal::Malformed
        );
        assert_eq!(
            r.accept(ip_a, Some("Bearer wrong"), BODY.as_bytes())
                .unwrap_err(),
            Refusal::BadToken
        );
        assert_eq!(
            r.accept(ip_a, None, BODY.as_bytes()).unwrap_err(),
            Refusal::BadToken
        );
        // B's valid token from A's address: refused (a VM reports only for itself).
        assert_eq!(
            r.accept(ip_a, Some(&format!("Bearer {b}")), BODY.as_bytes())
                .unwrap_err(),
            Refusal::BadToken
        );
        // An address that is no registered VM's (e.g. another host's).
        assert_eq!(
            r.accept(Ipv4Addr::new(10, 77, 0, 9), Some(&auth_a), BODY.as_bytes())
                .unwrap_err(),
            Refusal::UnknownSource
        );
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(
            r.accept(ip_a, Some(&auth_a), &big).unwrap_err(),
            Refusal::TooLarge
        );
        let mut counts = RefusalCounts::default();
        counts.record(Refusal::BadToken);
        counts.record(Refusal::BadToken);
        assert_eq!(counts.0[&Refusal::BadToken], 2);
    }

    #[test]
    fn access2_values_outside_the_contract_are_refused() {
        for (from, to) in [
            ("\"v\":1", "\"v\":2"),
            (
                "\"state\":\"active\",\"ready\"",
                "\"state\":\"running\",\"ready\"",
            ),
            (
                "\"image\":\"clawy-openclaw-2026.9.6-1\"",
                "\"image\":\"<script>\"",
            ),
            ("\"jails\":[\"sshd\"]", "\"jails\":[\"sshd; rm -rf /\"]"),
            (
                "\"sent_at\":\"2026-11-30T20:01:30Z\"",
                "\"sent_at\":\"yesterday\"",
            ),
            ("\"cloud_init\":\"done\"", "\"cloud_init\":\"maybe\""),
        ] {
            let body = BODY.replacen(from, to, 1);
            assert_ne!(body, BODY, "{from}");
            assert_eq!(
                parse(body.as_bytes()).unwrap_err(),
                Refusal::Malformed,
                "{to}"
            );
        }
        let forgotten = {
            let (mut r, a, _) = registry();
            r.forget("vm-a");
            r.accept(
                Ipv4Addr::new(10, 77, 0, 2),
                Some(&format!("Bearer {a}")),
                BODY.as_bytes(),
            )
        };
        assert_eq!(forgotten.unwrap_err(), Refusal::UnknownSource);
    }
}
