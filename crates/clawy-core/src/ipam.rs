//! IPAM: private IPs, MACs and SSH forward ports per instance.
//!
//! Each host has a /24 (from its agent's `[network]`): `.1` is the gateway, VMs get
//! `.2`–`.254`, lowest free first. SSH forwards take the lowest free port of the
//! host's range. MACs are `52:54:00:` + 3 random bytes. The database enforces
//! uniqueness (UNIQUE (host_id, private_ip), (host_id, ssh_port), (mac)); a clash
//! between two concurrent creates makes one of them retry. An allocation is released
//! (set to NULL) only by the delete job once the agent confirmed the VM is gone, so
//! an address or port is never handed out while a VM may still use it.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use sqlx::Row;

use crate::error::{DomainError, ErrorKind, InternalError, internal_from};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("The host has no VM network configured yet.")]
    NoNetwork,
    #[error("The host's subnet `{0}` is not an A.B.C.0/24.")]
    BadSubnet(String),
    #[error("No free private IP address left on the host.")]
    IpsExhausted,
    #[error("No free SSH port left in the host's range.")]
    PortsExhausted,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(IpamError);

impl DomainError for IpamError {
    fn code(&self) -> &'static str {
        match self {
            IpamError::NoNetwork | IpamError::BadSubnet(_) => "host_network",
            IpamError::IpsExhausted | IpamError::PortsExhausted => "no_capacity",
            IpamError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            IpamError::IpsExhausted | IpamError::PortsExhausted => ErrorKind::Conflict,
            IpamError::NoNetwork | IpamError::BadSubnet(_) | IpamError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// What one instance holds on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub private_ip: Ipv4Addr,
    pub ssh_port: u16,
    pub mac: String,
}

/// The first three octets of an `A.B.C.0/24`.
pub fn parse_subnet(subnet: &str) -> Result<[u8; 3], IpamError> {
    let bad = || IpamError::BadSubnet(subnet.to_string());
    let (addr, len) = subnet.split_once('/').ok_or_else(bad)?;
    if len != "24" {
        return Err(bad());
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let [a, b, c, d] = ip.octets();
    if d != 0 {
        return Err(bad());
    }
    Ok([a, b, c])
}

/// The lowest address in `.2..=.254` of the subnet not in `used`.
pub fn lowest_free_ip(subnet: &str, used: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
    let [a, b, c] = parse_subnet(subnet)?;
    (2..=254u8)
        .map(|d| Ipv4Addr::new(a, b, c, d))
        .find(|ip| !used.contains(ip))
        .ok_or(IpamError::IpsExhausted)
}

/// The lowest port of the inclusive `range` not in `used`.
pub fn lowest_free_port(range: [u16; 2], used: &HashSet<u16>) -> Result<u16, IpamError> {
    let [lo, hi] = range;
    (lo..=hi)
        .find(|p| !used.contains(p))
        .ok_or(IpamError::PortsExhausted)
}

/// `52:54:00:xx:xx:xx` (the QEMU/KVM locally administered prefix) with random tail.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::thread_rng().r#gen();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// How many VM addresses a /24 offers (`.2`–`.254`).
pub const IPS_PER_HOST: usize = 253;

/// Picks the next allocation on `host_id` inside the actor's transaction. The
/// instance insert that follows is what makes it durable; a unique violation there
/// means another transaction took the same address first: retry.
pub async fn allocate_in(
    conn: &mut sqlx::AnyConnection,
    host_id: &str,
    subnet: &str,
    ssh_port_range: [u16; 2],
) -> Result<Allocation, IpamError> {
    let rows = sqlx::query("SELECT private_ip, ssh_port FROM instances WHERE host_id = $1 AND (private_ip IS NOT NULL OR ssh_port IS NOT NULL)")
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for r in &rows {
        if let Some(ip) = r.try_get::<Option<String>, _>("private_ip")? {
            if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                ips.insert(ip);
            }
        }
        if let Some(p) = r.try_get::<Option<i64>, _>("ssh_port")? {
            if let Ok(p) = u16::try_from(p) {
                ports.insert(p);
            }
        }
    }
    let private_ip = lowest_free_ip(subnet, &ips)?;
    let ssh_port = lowest_free_port(ssh_port_range, &ports)?;
    Ok(Allocation {
        private_ip,
        ssh_port,
        mac: random_mac(),
    })
}

/// What one host's allocations look like (operator view and crash-test checks).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldAllocation {
    pub instance_id: String,
    pub private_ip: String,
    pub ssh_port: u16,
    pub mac: String,
}

/// Every allocation held on a host, by IP.
pub async fn held_on_host(
    pool: &sqlx::AnyPool,
    host_id: &str,
) -> Result<Vec<HeldAllocation>, IpamError> {
    let rows = sqlx::query(
        "SELECT id, private_ip, ssh_port, mac FROM instances WHERE host_id = $1 AND private_ip IS NOT NULL \
         ORDER BY private_ip",
    )
    .bind(host_id)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(HeldAllocation {
            instance_id: r.try_get("id")?,
            private_ip: r.try_get("private_ip")?,
            ssh_port: u16::try_from(r.try_get::<Option<i64>, _>("ssh_port")?.unwrap_or(0))
                .unwrap_or(0),
            mac: r.try_get::<Option<String>, _>("mac")?.unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ips_start_at_two_and_fill_gaps() {
        let mut used = HashSet::new();
        assert_eq!(
            lowest_free_ip("10.77.3.0/24", &used).unwrap(),
            Ipv4Addr::new(10, 77, 3, 2)
        );
        used.insert(Ipv4Addr::new(10, 77, 3, 2));
        used.insert(Ipv4Addr::new(10, 77, 3, 4));
        assert_eq!(
            lowest_free_ip("10.77.3.0/24", &used).unwrap(),
            Ipv4Addr::new(10, 77, 3, 3)
        );
    }

    #[test]
    fn ips_exhaust_after_253() {
        let used: HashSet<_> = (2..=254u8).map(|d| Ipv4Addr::new(10, 0, 0, d)).collect();
        assert_eq!(used.len(), IPS_PER_HOST);
        assert!(matches!(
            lowest_free_ip("10.0.0.0/24", &used),
            Err(IpamError::IpsExhausted)
        ));
    }

    #[test]
    fn subnet_shape_is_checked() {
        assert!(parse_subnet("10.0.0.0/16").is_err());
        assert!(parse_subnet("10.0.0.5/24").is_err());
        assert!(parse_subnet("nonsense").is_err());
        assert_eq!(parse_subnet("10.1.2.0/24").unwrap(), [10, 1, 2]);
    }

    #[test]
    fn ports_lowest_free_and_exhaustion() {
        let mut used = HashSet::new();
        assert_eq!(lowest_free_port([22000, 22002], &used).unwrap(), 22000);
        used.insert(22000);
        used.insert(22002);
        assert_eq!(lowest_free_port([22000, 22002], &used).unwrap(), 22001);
        used.insert(22001);
        assert!(matches!(
            lowest_free_port([22000, 22002], &used),
            Err(IpamError::PortsExhausted)
        ));
    }

    #[test]
    fn macs_have_the_kvm_prefix() {
        let m = random_mac();
        assert!(m.starts_with("52:54:00:"));
        assert_eq!(m.len(), 17);
    }
}
