//! Crash-injection points for the crash tests ("killing the server process
//! at any instant never leaves a second VM, an orphaned VM, a leaked IP or port, or
//! a lost request").
//!
//! `CLAWY_CRASH_POINTS=provision:after_ensure,delete:after_agent_delete` names the
//! points; the variable is read once. At an enabled point the process aborts at once
//! (`std::process::abort()`: no destructors, no flush, no graceful shutdown — the same
//! effect on our state as `kill -9`). Without the variable every point is a no-op.

use std::collections::HashSet;
use std::sync::OnceLock;

/// The environment variable naming the enabled points.
pub const CRASH_POINTS_ENV: &str = "CLAWY_CRASH_POINTS";

/// Every point the job runner passes, in execution order per job kind. Tests loop
/// over these, so a point added in the runner must be listed here.
pub const PROVISION_POINTS: &[&str] = &[
    "provision:before_ensure",
    "provision:after_ensure",
    "provision:after_start",
    "provision:before_dns",
    "provision:before_complete",
    "provision:after_complete",
];
pub const DELETE_POINTS: &[&str] = &[
    "delete:before_agent_delete",
    "delete:after_agent_delete",
    "delete:before_complete",
    "delete:after_complete",
];

static ENABLED: OnceLock<HashSet<String>> = OnceLock::new();

fn enabled() -> &'static HashSet<String> {
    ENABLED.get_or_init(|| parse(std::env::var(CRASH_POINTS_ENV).ok().as_deref()))
}

fn parse(value: Option<&str>) -> HashSet<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// True when `point` (`kind:name`) is enabled in this process.
pub fn is_enabled(point: &str) -> bool {
    enabled().contains(point)
}

/// Aborts the process when `point` is enabled; otherwise does nothing.
pub fn crash_point(point: &str) {
    if is_enabled(point) {
        // Say which point fired so a test log explains the abort; stderr is
        // unbuffered, nothing else is flushed (that is the point).
        eprintln!("clawy: crash point {point} reached, aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_comma_separated_points() {
        let set = parse(Some(
            " provision:after_ensure, delete:after_agent_delete ,,",
        ));
        assert_eq!(set.len(), 2);
        assert!(set.contains("provision:after_ensure"));
        assert!(set.contains("delete:after_agent_delete"));
        assert!(parse(None).is_empty());
        assert!(parse(Some("")).is_empty());
    }

    #[test]
    fn unset_points_do_nothing() {
        // The test process has no CLAWY_CRASH_POINTS: every point is a no-op.
        if std::env::var(CRASH_POINTS_ENV).is_err() {
            for p in PROVISION_POINTS.iter().chain(DELETE_POINTS) {
                crash_point(p);
                assert!(!is_enabled(p));
            }
        }
    }
}
