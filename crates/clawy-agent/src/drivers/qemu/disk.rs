//! Per-VM disks (ISO-4): a qcow2 overlay on a read-only base image, resized to the
//! spec. The base is never written; deleting the overlay destroys the VM's data.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot run qemu-img: {0}")]
    Spawn(std::io::Error),
    #[error("qemu-img {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("qemu-img info: {0}")]
    Info(String),
}

async fn qemu_img(args: &[&str]) -> Result<Vec<u8>, DiskError> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(DiskError::Spawn)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(DiskError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ImageInfo {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    pub format: String,
}

pub async fn info(path: &Path) -> Result<ImageInfo, DiskError> {
    let p = path.display().to_string();
    // -U: read the header even while the running QEMU holds the image lock.
    let out = qemu_img(&["info", "-U", "--output=json", &p]).await?;
    serde_json::from_slice(&out).map_err(|e| DiskError::Info(e.to_string()))
}

/// Create `overlay` backed by `base` with `size_gib`. The base's format is read
/// from the file (never guessed) so a raw base cannot be misread as qcow2.
pub async fn create_overlay(base: &Path, overlay: &Path, size_gib: u64) -> Result<(), DiskError> {
    let base_info = info(base).await?;
    let size = size_gib * 1024 * 1024 * 1024;
    let size_arg = size.max(base_info.virtual_size).to_string();
    let b = base.display().to_string();
    let o = overlay.display().to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &b,
        "-F",
        &base_info.format,
        &o,
        &size_arg,
    ])
    .await?;
    Ok(())
}

/// Grow a (stopped VM's) overlay to `size_gib`; never shrinks.
pub async fn grow(overlay: &Path, size_gib: u64) -> Result<(), DiskError> {
    let size = size_gib * 1024 * 1024 * 1024;
    let cur = info(overlay).await?;
    if size > cur.virtual_size {
        let o = overlay.display().to_string();
        qemu_img(&["resize", "-q", &o, &size.to_string()]).await?;
    }
    Ok(())
}
