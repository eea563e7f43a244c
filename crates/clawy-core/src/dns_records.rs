//! DNS records of instance hostnames (ACCESS-1): what should be published,
//! what was, and the sealed TSIG key the orchestrator signs updates with. Storage and
//! rules only; the RFC 2136 client is `clawy_orchestrator::dns`.
//!
//! Invariants:
//! - The wanted records follow the instance: a not-deleted instance with a hostname
//!   points at its host's public addresses; a deleted one (its VM confirmed gone by
//!   the delete job) has none. [`DnsRecords::work`] lists every instance whose stored
//!   publication differs from that, so a crash anywhere converges on the next pass.
//! - DATA-4: the TSIG secret is stored sealed with the operator key and only opened in
//!   memory to sign; it is never returned by an API or logged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use crate::Core;
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};
use crate::instances::{INSTANCE_COLS, INSTANCE_FROM, Instance, InstanceState, instance_from_row};

/// `sealed_settings.name` of the TSIG key.
const TSIG_SETTING: &str = "dns_tsig";
/// Longest error text kept for operators.
const MAX_ERROR_CHARS: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum DnsRecordsError {
    #[error("The TSIG key name is not a DNS name: {0}")]
    BadKeyName(String),
    #[error("The TSIG secret must be base64 (as in the server's key file) of 16 to 128 bytes.")]
    BadSecret,
    #[error("No such host: {0}.")]
    HostNotFound(String),
    #[error("{0} is not a public address the records may point at.")]
    BadAddress(String),
    #[error("The stored TSIG key cannot be opened with this operator key.")]
    Sealed,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(DnsRecordsError);

impl From<InternalError> for DnsRecordsError {
    fn from(e: InternalError) -> Self {
        DnsRecordsError::Internal(e)
    }
}

impl DomainError for DnsRecordsError {
    fn code(&self) -> &'static str {
        match self {
            DnsRecordsError::BadKeyName(_) | DnsRecordsError::BadSecret => "invalid_tsig_key",
            DnsRecordsError::HostNotFound(_) => "not_found",
            DnsRecordsError::BadAddress(_) => "invalid_address",
            DnsRecordsError::Sealed | DnsRecordsError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            DnsRecordsError::BadKeyName(_) | DnsRecordsError::BadSecret => {
                ErrorKind::Invalid { field: "tsig_key" }
            }
            DnsRecordsError::HostNotFound(_) => ErrorKind::NotFound,
            DnsRecordsError::BadAddress(_) => ErrorKind::Invalid { field: "address" },
            DnsRecordsError::Sealed | DnsRecordsError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The TSIG key as the orchestrator needs it: name and raw secret bytes.
pub struct TsigKey {
    pub name: String,
    /// Raw HMAC key bytes (decoded from base64).
    pub secret: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What the records of one instance should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Publish these (at least one address).
    Records {
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
    },
    /// The host has no public address yet: nothing can be published (an operator
    /// error, reported on the instance).
    NoAddress { host: String },
    /// Remove whatever is published (the instance is deleted).
    Absent,
}

/// One instance whose records need attention, with what they should be.
#[derive(Debug, Clone)]
pub struct DnsWork {
    pub instance: Instance,
    pub hostname: String,
    pub wanted: Wanted,
}

/// The rule: a deleted instance has no records; any other points at its host.
pub fn wanted_for(inst: &Instance, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Wanted {
    if inst.state == InstanceState::Deleted {
        return Wanted::Absent;
    }
    if v4.is_none() && v6.is_none() {
        return Wanted::NoAddress {
            host: inst.host_name.clone(),
        };
    }
    Wanted::Records {
        a: v4.into_iter().collect(),
        aaaa: v6.into_iter().collect(),
    }
}

/// An address a record may carry. Private and loopback addresses are allowed (an
/// internal deployment, the tests); "any" and multicast never are.
fn is_public_candidate(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast())
}

pub struct DnsRecords<'a> {
    pub(crate) core: &'a Core,
}

impl DnsRecords<'_> {
    /// Stores the TSIG key sealed (DATA-4). `secret_b64` is the base64 text of the
    /// server's key file; it is checked, then only the sealed form is kept.
    pub async fn set_tsig_key(
        &self,
        key_name: &str,
        secret_b64: &SecretString,
    ) -> Result<(), DnsRecordsError> {
        let name = clawy_proto::names::DnsName::parse(
            key_name.trim().trim_end_matches('.'),
            "TSIG key name",
            1,
        )
        .map_err(|e| DnsRecordsError::BadKeyName(e.to_string()))?;
        let text = secret_b64.expose_secret().trim();
        let raw = zeroize::Zeroizing::new(decode_b64(text).ok_or(DnsRecordsError::BadSecret)?);
        if raw.len() < 16 || raw.len() > 128 {
            return Err(DnsRecordsError::BadSecret);
        }
        let sealed = self.core.secret_key().seal(&raw[..]);
        let now = self.core.now_ms();
        sqlx::query("DELETE FROM sealed_settings WHERE name = $1")
            .bind(TSIG_SETTING)
            .execute(self.core.store().pool())
            .await?;
        sqlx::query(
            "INSERT INTO sealed_settings (name, label, value_sealed, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(TSIG_SETTING)
        .bind(name.as_str())
        .bind(sealed)
        .bind(now)
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }

    /// The TSIG key, opened; `None` until an operator set one.
    pub async fn tsig_key(&self) -> Result<Option<TsigKey>, DnsRecordsError> {
        let Some(row) =
            sqlx::query("SELECT label, value_sealed FROM sealed_settings WHERE name = $1")
                .bind(TSIG_SETTING)
                .fetch_optional(self.core.store().pool())
                .await?
        else {
            return Ok(None);
        };
        let sealed: String = row.try_get("value_sealed")?;
        let secret = self
            .core
            .secret_key()
            .open(&sealed)
            .map_err(|_| DnsRecordsError::Sealed)?;
        Ok(Some(TsigKey {
            name: row.try_get("label")?,
            secret,
        }))
    }

    /// Sets the public addresses a host's instances' records point at (`None` clears).
    pub async fn set_host_addresses(
        &self,
        host: &str,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    ) -> Result<(), DnsRecordsError> {
        for ip in v4.map(IpAddr::V4).into_iter().chain(v6.map(IpAddr::V6)) {
            if !is_public_candidate(ip) {
                return Err(DnsRecordsError::BadAddress(ip.to_string()));
            }
        }
        let done = sqlx::query(
            "UPDATE hosts SET public_ipv4 = $1, public_ipv6 = $2, updated_at = $3 \
             WHERE id = $4 OR name = $4",
        )
        .bind(v4.map(|a| a.to_string()))
        .bind(v6.map(|a| a.to_string()))
        .bind(self.core.now_ms())
        .bind(host)
        .execute(self.core.store().pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(DnsRecordsError::HostNotFound(host.to_string()));
        }
        // Every live instance of the host is published again with the new addresses.
        sqlx::query(
            "UPDATE instances SET dns_state = 'pending' WHERE host_id IN \
             (SELECT id FROM hosts WHERE id = $1 OR name = $1) AND hostname IS NOT NULL \
             AND dns_state IS NOT NULL AND state <> 'deleted'",
        )
        .bind(host)
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }

    /// The public addresses of a host.
    pub async fn host_addresses(
        &self,
        host_id: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), DnsRecordsError> {
        let row = sqlx::query("SELECT public_ipv4, public_ipv6 FROM hosts WHERE id = $1")
            .bind(host_id)
            .fetch_optional(self.core.store().pool())
            .await?
            .ok_or_else(|| DnsRecordsError::HostNotFound(host_id.to_string()))?;
        let v4: Option<String> = row.try_get("public_ipv4")?;
        let v6: Option<String> = row.try_get("public_ipv6")?;
        Ok((
            v4.and_then(|s| s.parse().ok()),
            v6.and_then(|s| s.parse().ok()),
        ))
    }

    /// What one instance's records should be (`None`: no hostname or no RFC 2136).
    pub async fn work_for(&self, inst: &Instance) -> Result<Option<DnsWork>, DnsRecordsError> {
        let (Some(hostname), Some(_)) = (&inst.hostname, &inst.dns.state) else {
            return Ok(None);
        };
        let (v4, v6) = self.host_addresses(&inst.host_id).await?;
        Ok(Some(DnsWork {
            instance: inst.clone(),
            hostname: hostname.clone(),
            wanted: wanted_for(inst, v4, v6),
        }))
    }

    /// Instances whose publication is not finished: `pending`/`removing` once their
    /// VM was provisioned, or deleted while still `published` (a crash between the
    /// delete and the record removal). With `include_published`, every published
    /// live instance too (drift checks).
    pub async fn work(&self, include_published: bool) -> Result<Vec<DnsWork>, DnsRecordsError> {
        let extra = if include_published {
            " OR i.dns_state = 'published'"
        } else {
            ""
        };
        // An instance still being provisioned (or whose provisioning failed) is the
        // job's: its DNS step publishes once the VM runs, so a name never resolves
        // before there is a VM behind it.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLS} {INSTANCE_FROM} WHERE i.hostname IS NOT NULL AND \
             i.dns_state IS NOT NULL AND ((i.state = 'deleted' AND i.dns_state <> 'removed') \
             OR (i.state NOT IN ('deleted', 'pending', 'provisioning', 'error') AND \
             (i.dns_state IN ('pending', 'removing'){extra}))) ORDER BY i.created_at, i.id"
        )))
        .fetch_all(self.core.store().pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let inst = instance_from_row(r)?;
            if let Some(w) = self.work_for(&inst).await? {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Records that the wanted records are now what the server holds.
    pub async fn mark_done(&self, work: &DnsWork) -> Result<(), DnsRecordsError> {
        let (state, a, aaaa) = match &work.wanted {
            Wanted::Records { a, aaaa } => (
                "published",
                a.first().map(ToString::to_string),
                aaaa.first().map(ToString::to_string),
            ),
            Wanted::Absent => ("removed", None, None),
            Wanted::NoAddress { .. } => return Ok(()),
        };
        sqlx::query(
            "UPDATE instances SET dns_state = $1, dns_a = $2, dns_aaaa = $3, dns_error = NULL, \
             dns_checked_at = $4 WHERE id = $5",
        )
        .bind(state)
        .bind(a)
        .bind(aaaa)
        .bind(self.core.now_ms())
        .bind(&work.instance.id)
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }

    /// Records a failure (operator-visible, retried on the next pass). A published
    /// instance whose records drifted goes back to `pending`; a deleted one to
    /// `removing`.
    pub async fn mark_failed(&self, work: &DnsWork, error: &str) -> Result<(), DnsRecordsError> {
        let state = match work.wanted {
            Wanted::Absent => "removing",
            _ => "pending",
        };
        sqlx::query(
            "UPDATE instances SET dns_state = $1, dns_error = $2, dns_checked_at = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(crate::names::truncate_chars(error, MAX_ERROR_CHARS))
        .bind(self.core.now_ms())
        .bind(&work.instance.id)
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn base64_of_key_files_decodes() {
        assert_eq!(decode_b64("AAECAw==").unwrap(), vec![0, 1, 2, 3]);
        assert!(decode_b64("not base64!").is_none());
    }
}
