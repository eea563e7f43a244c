//! The simulator's clock (injected, so tests can shift it). Task start times in
//! UPIDs, uptimes and RRD timestamps come from here; waiting uses tokio's timers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// The machine's clock plus an adjustable offset (seconds).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset: AtomicI64,
}

impl SystemClock {
    pub fn shift(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (now + self.offset.load(Ordering::SeqCst)).max(0) as u64
    }
}
