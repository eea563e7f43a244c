//! The cached test guest image (scripts/build-test-guest.sh): a small guest made of
//! the Debian cloud kernel, busybox and dropbear that reads the agent's NoCloud seed,
//! serves HTTP on 18789 and SSH on 22, and runs a `#!/bin/sh` user-data script,
//! serving its output at `http://<guest>:18789/probe.txt`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};

static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Root of the repository (this crate lives in `crates/clawy-testkit`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the guest image if needed (cached across runs by the script's stamp;
/// once per process here) and returns its path.
pub fn test_guest_image() -> anyhow::Result<PathBuf> {
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("guest build lock poisoned"))?;
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let script = repo_root().join("scripts/build-test-guest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .context("build-test-guest.sh printed no path")?;
    if !path.is_file() {
        bail!(
            "build-test-guest.sh printed {}, which is not a file",
            path.display()
        );
    }
    *built = Some(path.clone());
    Ok(path)
}

/// Cloud-init user-data carrying a probe script the test guest runs once after its
/// network is up; its output (plus `probe-exit=N`) appears at `/probe.txt`.
pub fn probe_user_data(script_body: &str) -> String {
    format!("#!/bin/sh\n{script_body}\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn guest_image_builds_and_is_qcow2() {
        let p = test_guest_image().unwrap();
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&p)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["format"], "qcow2");
        // Cached: a second call returns the same file.
        assert_eq!(test_guest_image().unwrap(), p);
    }
}
