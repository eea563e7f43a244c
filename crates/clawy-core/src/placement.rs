//! Placement (ISO-2, DATA-2): which host a new instance goes to.
//!
//! A host qualifies when it is enabled, its region is one of the operator's
//! `allowed_countries` and equals the requested region, the agent has reported its VM
//! network, and its free capacity (agent-reported capacity minus the plan sizes of its
//! instances that are not deleted) covers the plan in every dimension — so CPU, RAM and
//! disk are never overcommitted. Among qualifying hosts we take the one with the most
//! free memory (then vCPUs, disk, name): new instances spread over hosts rather than
//! piling onto one, which keeps noisy neighbours apart and lets a drained host empty.
//! [`Strategy::FirstFit`] (by name) is available for callers that prefer packing.
//!
//! The choice is pure ([`choose_host`]); the transactional part lives in
//! `instances::create`, which reads the candidates, chooses, allocates and inserts in
//! one transaction (on PostgreSQL with the region's host rows locked).

use clawy_proto::agent::Resources;
use serde::Serialize;

use crate::error::{DomainError, ErrorKind};
use crate::hosts::HostLoad;
use crate::plans::Plan;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// DATA-2: the region is not one of the operator's allowed countries.
    #[error("Region {region} is not allowed here (allowed: {allowed}).")]
    RegionNotAllowed { region: String, allowed: String },
    #[error("no capacity in region {region} for plan {plan}")]
    NoCapacity { region: String, plan: String },
}

impl DomainError for PlacementError {
    fn code(&self) -> &'static str {
        match self {
            PlacementError::RegionNotAllowed { .. } => "region_not_allowed",
            PlacementError::NoCapacity { .. } => "no_capacity",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            PlacementError::RegionNotAllowed { .. } => ErrorKind::Invalid { field: "region" },
            PlacementError::NoCapacity { .. } => ErrorKind::Conflict,
        }
    }
}

/// What a plan needs on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl From<&Plan> for Need {
    fn from(p: &Plan) -> Need {
        Need {
            vcpus: u64::from(p.vcpus),
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Most free memory first (default; see the module docs).
    #[default]
    MostFree,
    /// First host by name that fits.
    FirstFit,
}

/// ISO-2: the plan fits into what is free, in every dimension.
pub fn fits(free: &Resources, need: &Need) -> bool {
    free.vcpus >= need.vcpus && free.memory_mib >= need.memory_mib && free.disk_gib >= need.disk_gib
}

/// True when the host may take instances in `region` under the policy, regardless of
/// its free capacity.
pub fn eligible(load: &HostLoad, region: &str, allowed: &[String]) -> bool {
    let h = &load.host;
    h.enabled && h.network.is_some() && h.region == region && allowed.iter().any(|c| c == &h.region)
}

/// Chooses a host for `need` in `region`. Pure: the actor supplies the hosts with
/// their current allocation.
pub fn choose_host<'a>(
    hosts: &'a [HostLoad],
    need: &Need,
    plan_name: &str,
    region: &str,
    allowed: &[String],
    strategy: Strategy,
) -> Result<&'a HostLoad, PlacementError> {
    if !allowed.iter().any(|c| c == region) {
        return Err(PlacementError::RegionNotAllowed {
            region: region.to_string(),
            allowed: allowed.join(", "),
        });
    }
    let mut fitting: Vec<&HostLoad> = hosts
        .iter()
        .filter(|l| eligible(l, region, allowed) && fits(&l.free(), need))
        .collect();
    match strategy {
        Strategy::FirstFit => fitting.sort_by(|a, b| a.host.name.cmp(&b.host.name)),
        Strategy::MostFree => fitting.sort_by(|a, b| {
            let (fa, fb) = (a.free(), b.free());
            (fb.memory_mib, fb.vcpus, fb.disk_gib)
                .cmp(&(fa.memory_mib, fa.vcpus, fa.disk_gib))
                .then_with(|| a.host.name.cmp(&b.host.name))
        }),
    }
    fitting
        .first()
        .copied()
        .ok_or_else(|| PlacementError::NoCapacity {
            region: region.to_string(),
            plan: plan_name.to_string(),
        })
}

/// A region people can pick: an allowed country with at least one enabled host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Country code, e.g. `DE`.
    pub code: String,
    /// Enabled hosts in the region.
    pub hosts: u64,
    /// Some enabled host has room for the default plan right now.
    pub has_capacity: bool,
    /// The operator's `default_region`.
    pub is_default: bool,
}

/// DATA-2: the allowed countries that have at least one enabled host, the default
/// first, each with a free-capacity flag for `default_plan` (none: no flag set).
/// Pure: the caller reads the hosts with their load and the plan.
pub fn regions(
    allowed: &[String],
    default_region: &str,
    hosts: &[HostLoad],
    default_plan: Option<&Plan>,
) -> Vec<Region> {
    let need = default_plan.map(Need::from);
    let mut out = Vec::new();
    for code in allowed {
        let in_region: Vec<&HostLoad> = hosts
            .iter()
            .filter(|l| l.host.enabled && &l.host.region == code)
            .collect();
        if in_region.is_empty() {
            continue;
        }
        let has_capacity = need.is_some_and(|need| {
            in_region
                .iter()
                .any(|l| l.host.network.is_some() && fits(&l.free(), &need))
        });
        out.push(Region {
            code: code.clone(),
            hosts: in_region.len() as u64,
            has_capacity,
            is_default: code == default_region,
        });
    }
    out.sort_by_key(|r| (!r.is_default, r.code.clone()));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::hosts::Host;
    use chrono::Utc;
    use clawy_proto::agent::HostNetwork;

    fn host(name: &str, region: &str, cap: (u64, u64, u64), alloc: (u64, u64, u64)) -> HostLoad {
        HostLoad {
            host: Host {
                id: format!("id-{name}"),
                name: name.to_string(),
                url: "https://127.0.0.1:1".into(),
                fingerprint: String::new(),
                region: region.to_string(),
                site: String::new(),
                enabled: true,
                capacity: Resources {
                    vcpus: cap.0,
                    memory_mib: cap.1,
                    disk_gib: cap.2,
                },
                network: Some(HostNetwork {
                    subnet: "10.0.0.0/24".into(),
                    gateway: "10.0.0.1".into(),
                    ssh_port_range: [22000, 22999],
                }),
                edge: None,
                accelerator: None,
                driver: None,
                hostname: None,
                agent_version: None,
                agent_location: None,
                info_updated_at: None,
                reachable: true,
                last_contact_at: None,
                last_error: None,
                created_at: Utc::now(),
                updated_at: Utc::now(),
            },
            allocated: Resources {
                vcpus: alloc.0,
                memory_mib: alloc.1,
                disk_gib: alloc.2,
            },
            instance_count: 0,
        }
    }

    const SMALL: Need = Need {
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 2,
    };

    fn de() -> Vec<String> {
        vec!["DE".to_string()]
    }

    #[test]
    fn iso_2_most_free_spreads_and_first_fit_packs() {
        let hosts = vec![
            host("a", "DE", (4, 4096, 40), (1, 1024, 2)),
            host("b", "DE", (4, 4096, 40), (0, 0, 0)),
        ];
        let m = choose_host(&hosts, &SMALL, "small", "DE", &de(), Strategy::MostFree).unwrap();
        assert_eq!(m.host.name, "b");
        let f = choose_host(&hosts, &SMALL, "small", "DE", &de(), Strategy::FirstFit).unwrap();
        assert_eq!(f.host.name, "a");
    }

    #[test]
    fn iso_2_every_dimension_must_fit() {
        // vCPUs full, memory full, disk full: none fits.
        let hosts = vec![
            host("cpu", "DE", (2, 4096, 40), (2, 0, 0)),
            host("mem", "DE", (4, 1024, 40), (0, 600, 0)),
            host("disk", "DE", (4, 4096, 3), (0, 0, 2)),
        ];
        let e = choose_host(&hosts, &SMALL, "small", "DE", &de(), Strategy::MostFree).unwrap_err();
        assert_eq!(e.to_string(), "no capacity in region DE for plan small");
        assert_eq!(e.code(), "no_capacity");
    }

    #[test]
    fn data_2_location_policy() {
        let hosts = vec![host("us", "US", (8, 8192, 80), (0, 0, 0))];
        // US not allowed at all.
        let e = choose_host(&hosts, &SMALL, "small", "US", &de(), Strategy::MostFree).unwrap_err();
        assert!(matches!(e, PlacementError::RegionNotAllowed { .. }));
        // Allowed region DE: the US host is never a candidate.
        let e = choose_host(&hosts, &SMALL, "small", "DE", &de(), Strategy::MostFree).unwrap_err();
        assert!(matches!(e, PlacementError::NoCapacity { .. }));
        // A host in an allowed country but another region is not taken either.
        let allowed = vec!["DE".to_string(), "FR".to_string()];
        let hosts = vec![host("fr", "FR", (8, 8192, 80), (0, 0, 0))];
        assert!(choose_host(&hosts, &SMALL, "small", "DE", &allowed, Strategy::MostFree).is_err());
        assert!(choose_host(&hosts, &SMALL, "small", "FR", &allowed, Strategy::MostFree).is_ok());
    }

    #[test]
    fn disabled_or_networkless_hosts_take_nothing() {
        let mut a = host("a", "DE", (8, 8192, 80), (0, 0, 0));
        a.host.enabled = false;
        let mut b = host("b", "DE", (8, 8192, 80), (0, 0, 0));
        b.host.network = None;
        assert!(choose_host(&[a, b], &SMALL, "small", "DE", &de(), Strategy::MostFree).is_err());
    }

    #[test]
    fn iso_2_never_overcommits_in_a_fill_loop() {
        // Property-style: fill random-ish hosts with mixed plans until nothing fits;
        // at every step the chosen host had room, and at the end no host is over.
        let plans = [
            SMALL,
            Need {
                vcpus: 2,
                memory_mib: 2048,
                disk_gib: 10,
            },
            Need {
                vcpus: 4,
                memory_mib: 8192,
                disk_gib: 40,
            },
        ];
        for seed in 0..50u64 {
            let mut hosts: Vec<HostLoad> = (0..4)
                .map(|i| {
                    let k = (seed * 7 + i * 13) % 5 + 1;
                    host(&format!("h{i}"), "DE", (k * 2, k * 1500, k * 12), (0, 0, 0))
                })
                .collect();
            let mut step = 0u64;
            loop {
                let need = plans[((seed + step) % 3) as usize];
                step += 1;
                let strategy = if seed % 2 == 0 {
                    Strategy::MostFree
                } else {
                    Strategy::FirstFit
                };
                let idx = match choose_host(&hosts, &need, "p", "DE", &de(), strategy) {
                    Ok(h) => hosts.iter().position(|x| x.host.id == h.host.id).unwrap(),
                    Err(_) => {
                        if hosts.iter().all(|h| !fits(&h.free(), &SMALL)) || step > 200 {
                            break;
                        }
                        continue;
                    }
                };
                let h = &mut hosts[idx];
                assert!(fits(&h.free(), &need));
                h.allocated.vcpus += need.vcpus;
                h.allocated.memory_mib += need.memory_mib;
                h.allocated.disk_gib += need.disk_gib;
            }
            for h in &hosts {
                assert!(h.allocated.vcpus <= h.host.capacity.vcpus);
                assert!(h.allocated.memory_mib <= h.host.capacity.memory_mib);
                assert!(h.allocated.disk_gib <= h.host.capacity.disk_gib);
            }
        }
    }
}
