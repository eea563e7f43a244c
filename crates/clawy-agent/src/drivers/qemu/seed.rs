//! The qemu driver's cloud-init seed: the driver-independent files from
//! [`crate::cloudinit`] packed into an ISO9660 image labelled `cidata` (NoCloud),
//! 0600 and root's (DATA-5: it may hold the owner's secrets until the guest
//! confirms delivery).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::cloudinit::SeedFiles;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("cannot run genisoimage: {0}")]
    Spawn(std::io::Error),
    #[error("genisoimage failed: {0}")]
    Failed(String),
}

fn write_0600(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

/// DATA-5: overwrite a file with zeros (its length, or what it holds), sync, then
/// unlink it, so the secrets are not left in the file's blocks by a plain unlink
/// (best effort on copy-on-write file systems; said in DECISIONS.md).
pub fn destroy_file(path: &Path, len_hint: usize) -> std::io::Result<()> {
    overwrite_with_zeros(path, len_hint)?;
    std::fs::remove_file(path)
}

/// Overwrites a file's bytes with zeros in place and syncs (the same inode: a
/// process holding it open, QEMU with the seed ISO, sees zeros too).
pub fn overwrite_with_zeros(path: &Path, len_hint: usize) -> std::io::Result<()> {
    use std::io::Write as _;
    let len = std::fs::metadata(path)
        .map(|m| m.len() as usize)
        .unwrap_or(len_hint)
        .max(len_hint);
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&vec![0u8; len])?;
    f.sync_all()
}

/// DATA-5: replaces the seed at `iso` by one built from `clean` (no secrets):
/// the old ISO's bytes are zeroed in place first, then the clean ISO is renamed
/// over it, so no path ever leads to the secrets again and a later boot finds the
/// same instance id (cloud-init does not run its once-per-instance modules again).
pub async fn replace_iso(clean: &SeedFiles, work_dir: &Path, iso: &Path) -> Result<(), SeedError> {
    let fresh = iso.with_extension("clean.iso");
    build_iso(clean, work_dir, &fresh).await?;
    match overwrite_with_zeros(iso, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SeedError::Io(iso.display().to_string(), e)),
    }
    std::fs::rename(&fresh, iso).map_err(|e| SeedError::Io(iso.display().to_string(), e))
}

/// Write the three files into `work_dir` and build `iso` from them.
pub async fn build_iso(seed: &SeedFiles, work_dir: &Path, iso: &Path) -> Result<(), SeedError> {
    let io = |p: &Path| {
        let s = p.display().to_string();
        move |e| SeedError::Io(s, e)
    };
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(work_dir))?;
    let files = [
        ("meta-data", &seed.meta_data),
        ("user-data", &seed.user_data),
        ("network-config", &seed.network_config),
    ];
    for (name, content) in &files {
        let p = work_dir.join(name);
        write_0600(&p, content.as_bytes()).map_err(io(&p))?;
    }
    let tmp_iso = iso.with_extension("iso.tmp");
    let out = tokio::process::Command::new("genisoimage")
        .arg("-quiet")
        .arg("-output")
        .arg(&tmp_iso)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .args(files.iter().map(|(n, _)| work_dir.join(n)))
        .output()
        .await
        .map_err(SeedError::Spawn)?;
    if !out.status.success() {
        return Err(SeedError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    std::fs::set_permissions(&tmp_iso, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp_iso))?;
    std::fs::rename(&tmp_iso, iso).map_err(io(iso))?;
    // DATA-5: the rendered files may hold the owner's secrets: zeroed, then gone.
    for (name, content) in &files {
        let _ = destroy_file(&work_dir.join(name), content.len());
    }
    let _ = std::fs::remove_dir_all(work_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn builds_a_cidata_iso() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("seed.iso");
        let seed = SeedFiles {
            meta_data: "instance-id: vm-a\n".into(),
            user_data: "#cloud-config\n".into(),
            network_config: "version: 2\n".into(),
        };
        build_iso(&seed, &dir.path().join("w"), &iso).await.unwrap();
        let bytes = std::fs::read(&iso).unwrap();
        // ISO9660 primary volume descriptor at 32 KiB: "CD001", volume id at +40.
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(&bytes[0x8028..0x802e], b"cidata");
    }
}
