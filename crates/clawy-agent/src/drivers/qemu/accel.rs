//! Choosing the accelerator: KVM when it really works, TCG otherwise.
//!
//! Opening `/dev/kvm` is not enough: under nested virtualisation KVM may create a
//! VM and then abort on the first vCPU run (QEMU 7.2 asserts in
//! `kvm_buf_set_msrs`). So the probe boots an empty q35 machine for a moment and
//! checks that QEMU is still alive and quits cleanly.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::config::AccelChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("accelerator = \"kvm\" is configured but KVM does not work here: {0}")]
    KvmUnusable(String),
}

/// Resolve the configured choice into the accelerator to use.
pub async fn choose(choice: AccelChoice, qemu: &Path) -> Result<Accel, AccelError> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => match probe_kvm(qemu).await {
            Ok(()) => Ok(Accel::Kvm),
            Err(why) => Err(AccelError::KvmUnusable(why)),
        },
        AccelChoice::Auto => match probe_kvm(qemu).await {
            Ok(()) => {
                tracing::info!("KVM works: VMs run with accel=kvm");
                Ok(Accel::Kvm)
            }
            Err(why) => {
                tracing::warn!(reason = %why, "KVM is not usable; falling back to TCG (slow, emulated)");
                Ok(Accel::Tcg)
            }
        },
    }
}

/// Boot an empty KVM machine for ~1.5 s, then `quit` on its monitor.
pub async fn probe_kvm(qemu: &Path) -> Result<(), String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Err("/dev/kvm cannot be opened".into());
    }
    let mut child = tokio::process::Command::new(qemu)
        .args([
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host",
            "-m",
            "32",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n").await;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "KVM probe did not quit".to_string())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "probe exited with {}: {}",
            out.status,
            stderr.lines().next().unwrap_or("")
        ))
    }
}
