//! AUTH-5 fast path: which client addresses had a failed API-key authentication recently
//! in this process.
//!
//! Core's `api_keys().authenticate` checks the per-address failure counter in the
//! database *before* verifying a key, which costs a second query on every request. A
//! request from an address with no recent failure here goes straight to the one-query
//! key lookup instead; the first failure marks the address, and from then on (for the
//! throttle window) every request from it takes core's full path: counter checked
//! first, 429 once over the limit, even with a good key. What this gives up is bounded:
//! with several server replicas, an address throttled on one replica gets at most one
//! unchecked attempt per window on each other replica before it is marked there too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// More entries than this and every address is treated as suspect (the safe direction),
/// so a flood of addresses cannot grow memory without bound.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
pub struct SuspectAddrs {
    /// address → until (unix ms, core's clock)
    until: Mutex<HashMap<IpAddr, i64>>,
}

impl SuspectAddrs {
    /// True if the address must take the full (counter-first) path.
    pub fn is_suspect(&self, addr: IpAddr, now_ms: i64) -> bool {
        let Ok(map) = self.until.lock() else {
            return true;
        };
        if map.len() >= MAX_TRACKED {
            return true;
        }
        map.get(&addr).is_some_and(|until| *until > now_ms)
    }

    /// Marks the address for `window_ms` after a failure.
    pub fn mark(&self, addr: IpAddr, now_ms: i64, window_ms: i64) {
        if let Ok(mut map) = self.until.lock() {
            if map.len() >= MAX_TRACKED {
                map.retain(|_, until| *until > now_ms);
            }
            map.insert(addr, now_ms + window_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_5_marked_address_is_suspect_for_the_window() {
        let s = SuspectAddrs::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        assert!(!s.is_suspect(a, 1_000));
        s.mark(a, 1_000, 60_000);
        assert!(s.is_suspect(a, 1_001));
        assert!(s.is_suspect(a, 60_999));
        assert!(!s.is_suspect(a, 61_000));
        assert!(!s.is_suspect(b, 1_001));
    }

    #[test]
    fn auth_5_full_table_fails_safe() {
        let s = SuspectAddrs::default();
        for i in 0..MAX_TRACKED as u32 {
            s.mark(IpAddr::from(i.to_be_bytes()), 0, 1_000_000);
        }
        let fresh: IpAddr = [203, 0, 113, 9].into();
        assert!(s.is_suspect(fresh, 1));
    }
}
