//! Fault knobs (tests only): set through [`crate::SimHandle`] or the loopback
//! control listener. None of them exists on a real node; each makes the simulated
//! node misbehave the way a real one can.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Faults {
    clone_failures: Mutex<VecDeque<String>>,
    task_durations: Mutex<BTreeMap<String, Duration>>,
}

impl Faults {
    pub fn new(durations: &BTreeMap<String, u64>) -> Faults {
        let f = Faults::default();
        for (k, ms) in durations {
            f.set_task_duration(k, Duration::from_millis(*ms));
        }
        f
    }

    /// The next `count` clones fail while copying disks, with `message` (the task
    /// ends `clone failed: <message>`, the new VM's config and disks are removed).
    pub fn fail_next_clones(&self, count: u32, message: &str) {
        let mut q = self
            .clone_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for _ in 0..count {
            q.push_back(message.to_string());
        }
    }

    pub(crate) fn take_clone_failure(&self) -> Option<String> {
        self.clone_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Every task of `ty` (`qmclone`, `qmstart`, `qmconfig`, `resize`, …) takes at
    /// least this long (a slow clone: `qmclone`, 2 s).
    pub fn set_task_duration(&self, ty: &str, d: Duration) {
        self.task_durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ty.to_string(), d);
    }

    pub fn task_duration(&self, ty: &str) -> Duration {
        self.task_durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ty)
            .copied()
            .unwrap_or(Duration::ZERO)
    }
}
