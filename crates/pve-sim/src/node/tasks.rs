//! Worker tasks (`fork_worker`): a UPID in PVE's exact format, a log file per task,
//! and the final `TASK OK` / `TASK WARNINGS: N` / `TASK ERROR: …` line that
//! `exitstatus` is read from. Tasks run on the simulator's clock, with an optional
//! configured duration per task type.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub ty: String,
    pub id: String,
    pub user: String,
}

impl Upid {
    /// `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:`
    pub fn encode(&self) -> String {
        format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.ty, self.id, self.user
        )
    }

    /// `PVE::UPID::decode`.
    pub fn decode(s: &str) -> Option<Upid> {
        let rest = s.strip_prefix("UPID:")?;
        let rest = rest.strip_suffix(':')?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 7 {
            return None;
        }
        let node = parts[0];
        crate::schema::formats::node_name(node).ok()?;
        if node.ends_with('\n') {
            return None;
        }
        let hex = |s: &str, min: usize, max: usize| -> Option<u64> {
            if s.len() < min || s.len() > max || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(s, 16).ok()
        };
        let field_ok = |s: &str, allow_empty: bool| {
            (allow_empty || !s.is_empty()) && !s.contains(|c: char| c.is_whitespace() || c == '/')
        };
        if !field_ok(parts[4], false) || !field_ok(parts[5], true) || !field_ok(parts[6], false) {
            return None;
        }
        Some(Upid {
            node: node.to_string(),
            pid: u32::try_from(hex(parts[1], 8, 8)?).ok()?,
            pstart: hex(parts[2], 8, 9)?,
            starttime: hex(parts[3], 8, 8)?,
            ty: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }

    /// Log file: `tasks/{last hex digit of starttime}/{upid}` as on a PVE node.
    pub fn log_path(&self, dir: &Path) -> PathBuf {
        let st = format!("{:08X}", self.starttime);
        let sub = &st[st.len() - 1..];
        dir.join(sub).join(self.encode())
    }
}

/// The running task's handle on its log.
#[derive(Clone)]
pub struct TaskCtx {
    pub upid: String,
    log: Arc<Mutex<Vec<String>>>,
    path: PathBuf,
    warnings: Arc<AtomicU32>,
    pub delay: Duration,
}

impl TaskCtx {
    /// Print a line into the task log.
    pub fn log(&self, line: &str) {
        for l in line.split('\n') {
            self.push(l.to_string());
        }
    }

    /// `log_warn`: `WARN: …`, counted into `TASK WARNINGS: N`.
    pub fn warn(&self, msg: &str) {
        self.warnings.fetch_add(1, Ordering::SeqCst);
        self.push(format!("WARN: {}", msg.trim_end_matches('\n')));
    }

    pub(crate) fn append_to_last(&self, s: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = log.last_mut() {
            last.push_str(s);
        }
        drop(log);
        self.flush();
    }

    fn push(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
        self.flush();
    }

    fn flush(&self) {
        let lines = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let _ = write_atomic(&self.path, text.as_bytes());
    }

    /// The configured simulated duration of this task type (slow clones etc.).
    pub async fn simulated_work(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    fn finish(&self, result: Result<(), String>) {
        let line = match result {
            Ok(()) => match self.warnings.load(Ordering::SeqCst) {
                0 => "TASK OK".to_string(),
                n => format!("TASK WARNINGS: {n}"),
            },
            Err(e) => {
                let e = e.trim_end_matches('\n').replace('\n', " ");
                format!("TASK ERROR: {e}")
            }
        };
        self.push(line);
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-write");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    std::fs::rename(&tmp, path)
}

/// Reads the status of a finished task from its log's last line.
pub fn read_status(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return "unable to get last line from task log - file not found".into();
    };
    let last = text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or("");
    if last == "TASK OK" {
        "OK".into()
    } else if let Some(e) = last.strip_prefix("TASK ERROR: ") {
        e.to_string()
    } else if let Some(w) = last
        .strip_prefix("TASK ")
        .filter(|w| w.starts_with("WARNINGS: "))
    {
        w.to_string()
    } else {
        "unexpected status".into()
    }
}

/// `dump_logfile`: lines `{n, t}` from `start` (0-based), at most `limit`
/// (0 = all), with the total count.
pub fn dump_log(path: &Path, start: u64, limit: u64) -> (u64, Vec<(u64, String)>) {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => {
            let msg = crate::node::errno_text(&e);
            return (1, vec![(1, format!("unable to open file - {msg}"))]);
        }
    };
    let text = String::from_utf8_lossy(&text);
    let mut count = 0u64;
    let mut out = Vec::new();
    let mut left = limit;
    for line in text.split_inclusive('\n') {
        count += 1;
        if count <= start {
            continue;
        }
        if limit != 0 {
            if left == 0 {
                continue;
            }
            left -= 1;
        }
        out.push((count, line.trim_end_matches('\n').to_string()));
    }
    if count == 0 {
        count = 1;
        out.push((1, "no content".into()));
    }
    (count, out)
}

pub struct TaskRegistry {
    dir: PathBuf,
    node: String,
    clock: Arc<dyn Clock>,
    next_pid: AtomicU32,
    running: Mutex<HashMap<String, (tokio::task::JoinHandle<()>, TaskCtx)>>,
    /// Task types whose next N tasks vanish when they finish.
    vanish_next: Mutex<HashMap<String, u32>>,
    /// Task types whose tasks log this many warnings (`TASK WARNINGS: N`).
    warnings: Mutex<HashMap<String, u32>>,
    vanished: Mutex<HashSet<String>>,
}

impl TaskRegistry {
    pub fn new(dir: PathBuf, node: String, clock: Arc<dyn Clock>) -> std::io::Result<TaskRegistry> {
        std::fs::create_dir_all(&dir)?;
        // Worker pids look like real ones and never repeat within a run.
        let base = 1000 + (std::process::id() % 30_000) * 10;
        Ok(TaskRegistry {
            dir,
            node,
            clock,
            next_pid: AtomicU32::new(base),
            running: Mutex::new(HashMap::new()),
            vanish_next: Mutex::new(HashMap::new()),
            warnings: Mutex::new(HashMap::new()),
            vanished: Mutex::new(HashSet::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start a worker; returns its UPID at once.
    pub fn fork_worker<F, Fut>(
        &self,
        ty: &str,
        id: &str,
        user: &str,
        delay: Duration,
        f: F,
    ) -> std::io::Result<String>
    where
        F: FnOnce(TaskCtx) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        let upid = Upid {
            node: self.node.clone(),
            pid,
            pstart: host_ticks(),
            starttime: self.clock.now_unix(),
            ty: ty.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        };
        let path = upid.log_path(&self.dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, b"")?;
        let upid_s = upid.encode();
        let ctx = TaskCtx {
            upid: upid_s.clone(),
            log: Arc::new(Mutex::new(Vec::new())),
            path: path.clone(),
            warnings: Arc::new(AtomicU32::new(0)),
            delay,
        };
        let vanish = {
            let mut v = self.vanish_next.lock().unwrap_or_else(|p| p.into_inner());
            match v.get_mut(ty) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let fut = f(ctx.clone());
        let task_ctx = ctx.clone();
        let warn = self
            .warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ty)
            .copied()
            .unwrap_or(0);
        let handle = tokio::spawn(async move {
            let r = fut.await;
            if r.is_ok() {
                for _ in 0..warn {
                    task_ctx.warn("pve-sim: simulated warning");
                }
            }
            task_ctx.finish(r);
            if vanish {
                let _ = std::fs::remove_file(&path);
            }
        });
        running.insert(upid_s.clone(), (handle, ctx));
        if vanish {
            self.vanished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(upid_s.clone());
        }
        Ok(upid_s)
    }

    pub fn is_running(&self, upid: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|_, (h, _)| !h.is_finished());
        running.contains_key(upid)
    }

    /// Fault knob: the next `count` tasks of `ty` disappear once they end.
    pub fn vanish_next(&self, ty: &str, count: u32) {
        self.vanish_next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ty.to_string(), count);
    }

    /// Fault knob: successful tasks of `ty` end with `count` warnings
    /// (`exitstatus` `WARNINGS: N`, which clients must treat as success).
    pub fn set_warnings(&self, ty: &str, count: u32) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ty.to_string(), count);
    }

    /// Fault knob: forget a task now (its log is deleted; a still-running worker
    /// goes on, unseen).
    pub fn vanish(&self, upid: &str) -> bool {
        let Some(u) = Upid::decode(upid) else {
            return false;
        };
        std::fs::remove_file(u.log_path(&self.dir)).is_ok()
    }

    /// Node restart: every running worker dies where it is. Their logs keep no
    /// final line, so their status reads `unexpected status`.
    pub fn kill_all(&self) -> Vec<String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut killed = Vec::new();
        for (upid, (h, _)) in running.drain() {
            if !h.is_finished() {
                h.abort();
                killed.push(upid);
            }
        }
        killed
    }

    /// `abort_guest_tasks`: interrupt running tasks of a type for one guest; they
    /// end with `TASK ERROR: received interrupt`.
    pub fn abort_matching(&self, ty: &str, id: &str) -> Vec<String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut killed = Vec::new();
        running.retain(|upid, (h, ctx)| {
            let m = Upid::decode(upid).is_some_and(|u| u.ty == ty && u.id == id);
            if m && !h.is_finished() {
                h.abort();
                ctx.finish(Err("received interrupt".into()));
                killed.push(upid.clone());
                false
            } else {
                true
            }
        });
        killed
    }

    /// Wait until no task runs (tests).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(366 * 86400));
        loop {
            let busy = {
                let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
                r.retain(|_, (h, _)| !h.is_finished());
                !r.is_empty()
            };
            if !busy {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Ticks (USER_HZ = 100) since the host booted, like a process start time.
fn host_ticks() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        })
        .map(|s| (s * 100.0) as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn upid_format_matches_pve() {
        let u = Upid {
            node: "pve".into(),
            pid: 0x1234,
            pstart: 0xABCDEF,
            starttime: 0x65000000,
            ty: "qmclone".into(),
            id: "9000".into(),
            user: "clawy@pve!agent".into(),
        };
        let s = u.encode();
        assert_eq!(
            s,
            "UPID:pve:00001234:00ABCDEF:65000000:qmclone:9000:clawy@pve!agent:"
        );
        assert_eq!(Upid::decode(&s).unwrap(), u);
        let nine = "UPID:pve:00001234:1ABCDEF01:65000000:qmstart:100:root@pam:";
        assert_eq!(Upid::decode(nine).unwrap().pstart, 0x1ABCDEF01);
        assert!(Upid::decode("UPID:pve:1234:00ABCDEF:65000000:qmstart:100:root@pam:").is_none());
        assert!(Upid::decode("UPID:pve:00001234:00ABCDEF:65000000:qmstart:100:root@pam").is_none());
    }
}
