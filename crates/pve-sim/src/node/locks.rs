//! The per-VM config lock PVE takes with `flock` on
//! `/var/lock/qemu-server/lock-{vmid}.conf` (`lock_config`: 10 s, clone: 1 s;
//! shared for a stopped clone source). Waiting too long fails with
//! `can't lock file '…' - got timeout`. This is distinct from the `lock:` key in
//! the config (`VM is locked (clone)`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::tasks::TaskCtx;

pub fn lock_path(vmid: u32) -> String {
    format!("/var/lock/qemu-server/lock-{vmid}.conf")
}

pub enum ConfigLockGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

#[derive(Default)]
pub struct LockTable {
    locks: Mutex<HashMap<u32, Arc<RwLock<()>>>>,
}

impl LockTable {
    fn entry(&self, vmid: u32) -> Arc<RwLock<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(vmid).or_default().clone()
    }

    /// Take the lock, waiting up to `timeout`. Logs PVE's "trying to acquire
    /// lock..." into the task when it has to wait.
    pub async fn lock(
        &self,
        vmid: u32,
        timeout: Duration,
        shared: bool,
        task: Option<&TaskCtx>,
    ) -> Result<ConfigLockGuard, String> {
        let l = self.entry(vmid);
        let immediate = if shared {
            l.clone().try_read_owned().ok().map(ConfigLockGuard::Shared)
        } else {
            l.clone()
                .try_write_owned()
                .ok()
                .map(ConfigLockGuard::Exclusive)
        };
        if let Some(g) = immediate {
            return Ok(g);
        }
        if let Some(t) = task {
            t.log("trying to acquire lock...");
        }
        let fut = async {
            if shared {
                ConfigLockGuard::Shared(l.clone().read_owned().await)
            } else {
                ConfigLockGuard::Exclusive(l.clone().write_owned().await)
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(g) => {
                if let Some(t) = task {
                    t.append_to_last(" OK");
                }
                Ok(g)
            }
            Err(_) => Err(format!(
                "can't lock file '{}' - got timeout\n",
                lock_path(vmid)
            )),
        }
    }
}
