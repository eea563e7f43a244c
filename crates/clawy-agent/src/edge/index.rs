//! The edge's view of this host's instances: public hostname → state and private
//! address. The `ask` endpoint, the DNS responder and the error pages read it; the
//! executor (later) writes it whenever a VM is defined, started, stopped or deleted.
//! Every read is a hash lookup, so `ask` costs the same at 10 instances as at
//! 10,000 (DATA-1).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use clawy_proto::names::DnsName;

/// What the edge should do with a hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeState {
    /// The VM runs; requests go to its private address.
    Running(Ipv4Addr),
    /// The VM is defined here but not running: TLS is still approved and the
    /// branded "stopped" page is served.
    Stopped,
}

/// The answer for a `Host` the edge received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    Running(Ipv4Addr),
    Stopped,
    /// Not an instance of this edge (never was, deleted, or another host's).
    Unknown,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("hostname {host} is not one label under the instances apex {apex}")]
    NotUnderApex { host: String, apex: String },
    #[error("hostname label {label} is already used by {other}")]
    LabelTaken { label: String, other: String },
}

#[derive(Debug, Default)]
struct Inner {
    /// First label → (hostname, state). The label is the key because Caddy's
    /// dial and the DNS responder only see the label; the full hostname is kept
    /// to answer `ask` exactly.
    by_label: HashMap<String, (DnsName, EdgeState)>,
}

/// Hostnames served by this edge. Cheap to share (`Arc<EdgeIndex>`).
#[derive(Debug)]
pub struct EdgeIndex {
    apex: DnsName,
    inner: RwLock<Inner>,
}

impl EdgeIndex {
    pub fn new(apex: DnsName) -> Self {
        EdgeIndex {
            apex,
            inner: RwLock::new(Inner::default()),
        }
    }

    pub fn apex(&self) -> &DnsName {
        &self.apex
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written (every
        // write is one insert/remove), so a poisoned lock's data is still sound.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or updates `host`. It must be exactly one label under the apex, and
    /// that label must not belong to another hostname.
    pub fn upsert(&self, host: &DnsName, state: EdgeState) -> Result<(), IndexError> {
        let label = host
            .label_under(&self.apex)
            .ok_or_else(|| IndexError::NotUnderApex {
                host: host.to_string(),
                apex: self.apex.to_string(),
            })?;
        let mut inner = self.write();
        if let Some((other, _)) = inner.by_label.get(label) {
            if other != host {
                return Err(IndexError::LabelTaken {
                    label: label.to_owned(),
                    other: other.to_string(),
                });
            }
        }
        inner
            .by_label
            .insert(label.to_owned(), (host.clone(), state));
        Ok(())
    }

    /// Forgets `host` (delete started). Returns whether it was known.
    pub fn remove(&self, host: &DnsName) -> bool {
        let Some(label) = host.label_under(&self.apex) else {
            return false;
        };
        let mut inner = self.write();
        match inner.by_label.get(label) {
            Some((h, _)) if h == host => inner.by_label.remove(label).is_some(),
            _ => false,
        }
    }

    /// Replaces the whole content (agent start-up: built from the VMs on disk).
    pub fn replace_all(
        &self,
        entries: impl IntoIterator<Item = (DnsName, EdgeState)>,
    ) -> Result<(), IndexError> {
        let fresh = EdgeIndex::new(self.apex.clone());
        for (host, state) in entries {
            fresh.upsert(&host, state)?;
        }
        let new_inner = std::mem::take(&mut *fresh.write());
        *self.write() = new_inner;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.read().by_label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `ask` decision (DATA-1): true only for the exact, lowercase hostname
    /// of an instance defined on this host. IP addresses, empty names, other
    /// apexes, uppercase variants and unknown labels are refused.
    pub fn approves(&self, domain: &str) -> bool {
        // No parsing beyond a suffix check and one hash lookup: the answer must
        // not get slower with more instances or stranger input.
        let Some(rest) = domain.strip_suffix(self.apex.as_str()) else {
            return false;
        };
        let Some(label) = rest.strip_suffix('.') else {
            return false;
        };
        match self.read().by_label.get(label) {
            Some((host, _)) => host.as_str() == domain,
            None => false,
        }
    }

    /// The private address for a label of the internal zone, if that VM runs.
    pub fn resolve_label(&self, label: &str) -> Option<Ipv4Addr> {
        match self.read().by_label.get(label) {
            Some((_, EdgeState::Running(ip))) => Some(*ip),
            _ => None,
        }
    }

    /// What to show for a request whose `Host` is `host` (port already removed).
    pub fn host_status(&self, host: &str) -> HostStatus {
        if !self.approves(host) {
            return HostStatus::Unknown;
        }
        let label = host.split('.').next().unwrap_or("");
        match self.read().by_label.get(label) {
            Some((_, EdgeState::Running(ip))) => HostStatus::Running(*ip),
            Some((_, EdgeState::Stopped)) => HostStatus::Stopped,
            None => HostStatus::Unknown,
        }
    }

    /// Every hostname with its state (drift checks, tests).
    pub fn entries(&self) -> Vec<(DnsName, EdgeState)> {
        self.read().by_label.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn n(s: &str) -> DnsName {
        DnsName::parse(s, "test", 1).unwrap()
    }

    fn index() -> EdgeIndex {
        let i = EdgeIndex::new(n("claws.example.com"));
        i.upsert(
            &n("a-1.claws.example.com"),
            EdgeState::Running(Ipv4Addr::new(10, 0, 0, 2)),
        )
        .unwrap();
        i.upsert(&n("b-2.claws.example.com"), EdgeState::Stopped)
            .unwrap();
        i
    }

    /// DATA-1: `ask` approves exact live names only.
    #[test]
    fn data_1_ask_approves_exact_names_only() {
        let i = index();
        assert!(i.approves("a-1.claws.example.com"));
        assert!(i.approves("b-2.claws.example.com"));
        for refused in [
            "",
            "A-1.claws.example.com",
            "a-1.claws.example.com.",
            "a-1.CLAWS.example.com",
            "x.a-1.claws.example.com",
            "a-1.other.example.com",
            "claws.example.com",
            ".claws.example.com",
            "c-3.claws.example.com",
            "10.0.0.2",
            "127.0.0.1",
            "::1",
            "a-1.claws.example.com\0",
        ] {
            assert!(!i.approves(refused), "{refused:?} approved");
        }
        assert!(i.remove(&n("a-1.claws.example.com")));
        assert!(!i.approves("a-1.claws.example.com"));
        assert!(!i.remove(&n("a-1.claws.example.com")));
    }

    #[test]
    fn resolve_and_status_follow_state() {
        let i = index();
        assert_eq!(i.resolve_label("a-1"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(i.resolve_label("b-2"), None);
        assert_eq!(i.resolve_label("zz"), None);
        assert_eq!(i.host_status("b-2.claws.example.com"), HostStatus::Stopped);
        assert_eq!(i.host_status("nope.claws.example.com"), HostStatus::Unknown);
        i.upsert(
            &n("b-2.claws.example.com"),
            EdgeState::Running(Ipv4Addr::new(10, 0, 0, 3)),
        )
        .unwrap();
        assert_eq!(i.resolve_label("b-2"), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn refuses_names_outside_the_apex_and_label_clashes() {
        let i = index();
        assert!(matches!(
            i.upsert(&n("x.other.com"), EdgeState::Stopped),
            Err(IndexError::NotUnderApex { .. })
        ));
        assert!(matches!(
            i.upsert(&n("y.a-1.claws.example.com"), EdgeState::Stopped),
            Err(IndexError::NotUnderApex { .. })
        ));
        // remove of a name whose label belongs to another host is a no-op
        assert!(!i.remove(&n("a-1.other.com")));
        assert!(i.approves("a-1.claws.example.com"));
    }

    #[test]
    fn replace_all_swaps_content() {
        let i = index();
        i.replace_all([(n("c-3.claws.example.com"), EdgeState::Stopped)])
            .unwrap();
        assert_eq!(i.len(), 1);
        assert!(!i.approves("a-1.claws.example.com"));
        assert!(i.approves("c-3.claws.example.com"));
    }
}
