//! Host-side metrics of a VM (ACCESS-1: metadata only): CPU time and resident
//! memory of its QEMU process from /proc, network bytes from its tap's counters.

use std::path::Path;
use std::time::SystemTime;

/// Linux reports /proc CPU times in USER_HZ, which is 100 on every architecture
/// the agent supports.
const USER_HZ: f64 = 100.0;

/// utime + stime of a process in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 → index 0; utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(prev_ticks: u64, ticks: u64, elapsed_secs: f64) -> Option<f64> {
    if elapsed_secs <= 0.0 || ticks < prev_ticks {
        return None;
    }
    let pct = (ticks - prev_ticks) as f64 / USER_HZ / elapsed_secs * 100.0;
    Some((pct * 10.0).round() / 10.0)
}

pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Seconds since `path` was last modified (the pid file: written at start).
pub fn age_secs(path: &Path) -> Option<u64> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now()
        .duration_since(m)
        .ok()
        .map(|d| d.as_secs())
}

/// Bytes on the host's filesystem used by a file (allocated blocks).
pub fn allocated_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

/// (guest rx, guest tx) from the tap's counters: what the host sends on the tap
/// is what the guest receives.
pub fn tap_bytes(tap: &str) -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("tx_bytes")?, read("rx_bytes")?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(cpu_ticks(me).is_some());
        assert!(rss_bytes(me).unwrap() > 0);
        assert_eq!(cpu_percent(100, 150, 1.0), Some(50.0));
        assert_eq!(cpu_percent(150, 100, 1.0), None);
    }
}
