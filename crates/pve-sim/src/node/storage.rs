//! The node's one storage, `local` (a PVE "dir" storage): images under
//! `images/{vmid}/`, snippets, ISO files. Volume ids and file names follow PVE's
//! dir plugin: `local:100/vm-100-disk-0.qcow2`, a linked clone
//! `local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2` (a qcow2 overlay on
//! the template's base image), `local:snippets/user.yaml`.
//!
//! ISO-4: each VM's images are 0600 and owned by that VM's QEMU uid; base images
//! of templates are read-only (0644, root) and shared by their linked clones.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const STORAGE_ID: &str = "local";

/// A parsed image volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub volid: String,
    pub path: PathBuf,
    /// The VM the volume belongs to.
    pub owner: u32,
    pub name: String,
    pub format: String,
    /// For a linked clone: the base volume's `(vmid, name)`.
    pub base: Option<(u32, String)>,
    pub is_base: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    Images,
    Iso,
    Snippets,
}

pub struct Storage {
    pub images: PathBuf,
    pub snippets: PathBuf,
    pub iso: PathBuf,
}

#[derive(Deserialize)]
struct ImgInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    actual_size: u64,
    #[serde(default)]
    format: String,
}

/// `parse_name_dir`: (name, format, is_base).
fn parse_name_dir(name: &str) -> Result<(String, bool), String> {
    let bad = || format!("unable to parse volume filename '{name}'\n");
    if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (stem, ext) = name.rsplit_once('.').ok_or_else(bad)?;
    if !matches!(ext, "raw" | "qcow2" | "vmdk" | "subvol") || stem.is_empty() {
        return Err(bad());
    }
    Ok((ext.to_string(), name.starts_with("base-")))
}

fn is_vmid(s: &str) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Storage {
    pub fn new(state_dir: &Path, snippets: PathBuf) -> Storage {
        Storage {
            images: state_dir.join("images"),
            snippets,
            iso: state_dir.join("template/iso"),
        }
    }

    pub fn ensure_dirs(&self) -> std::io::Result<()> {
        for d in [&self.images, &self.snippets, &self.iso] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::set_permissions(&self.images, std::fs::Permissions::from_mode(0o711))?;
        Ok(())
    }

    /// The kind of a volume id on `local` (errors as PVE words them).
    pub fn kind(&self, volid: &str) -> Result<(VolumeKind, String), String> {
        let (store, volname) = crate::schema::formats::split_volume_id(volid)
            .ok_or_else(|| format!("unable to parse volume ID '{volid}'\n"))?;
        if store != STORAGE_ID {
            return Err(format!("storage '{store}' does not exist\n"));
        }
        if let Some(n) = volname.strip_prefix("snippets/") {
            if !n.is_empty() && !n.contains('/') {
                return Ok((VolumeKind::Snippets, n.to_string()));
            }
        }
        if let Some(n) = volname.strip_prefix("iso/") {
            if !n.contains('/') && n.to_ascii_lowercase().ends_with(".iso") {
                return Ok((VolumeKind::Iso, n.to_string()));
            }
        }
        Ok((VolumeKind::Images, volname.to_string()))
    }

    /// Parse an image volume id.
    pub fn parse(&self, volid: &str) -> Result<Volume, String> {
        let (kind, volname) = self.kind(volid)?;
        if kind != VolumeKind::Images {
            return Err(format!(
                "unable to parse directory volume name '{volname}'\n"
            ));
        }
        let parts: Vec<&str> = volname.split('/').collect();
        let bad = || format!("unable to parse directory volume name '{volname}'\n");
        let (owner, name, base) = match parts.as_slice() {
            [vmid, name] => (is_vmid(vmid).ok_or_else(bad)?, name.to_string(), None),
            [bvmid, bname, vmid, name] => {
                parse_name_dir(bname)?;
                (
                    is_vmid(vmid).ok_or_else(bad)?,
                    name.to_string(),
                    Some((is_vmid(bvmid).ok_or_else(bad)?, bname.to_string())),
                )
            }
            _ => return Err(bad()),
        };
        let (format, is_base) = parse_name_dir(&name)?;
        Ok(Volume {
            volid: volid.to_string(),
            path: self.images.join(owner.to_string()).join(&name),
            owner,
            name,
            format,
            base,
            is_base,
        })
    }

    /// Path of any volume (images, ISO, snippet).
    pub fn path(&self, volid: &str) -> Result<PathBuf, String> {
        match self.kind(volid)? {
            (VolumeKind::Snippets, n) => Ok(self.snippets.join(n)),
            (VolumeKind::Iso, n) => Ok(self.iso.join(n)),
            (VolumeKind::Images, _) => Ok(self.parse(volid)?.path),
        }
    }

    /// `read_cloudinit_snippets_file`: only snippets, at most 1 MiB.
    pub fn read_snippet(&self, volid: &str) -> Result<Vec<u8>, String> {
        let (kind, name) = self.kind(volid)?;
        if kind != VolumeKind::Snippets || name == "." || name == ".." {
            return Err(format!("{volid} is not in the snippets directory\n"));
        }
        let path = self.snippets.join(&name);
        let data = std::fs::read(&path).map_err(|e| {
            format!(
                "unable to open file '{}' - {}\n",
                path.display(),
                crate::node::errno_text(&e)
            )
        })?;
        if data.len() > 1024 * 1024 {
            return Err(format!(
                "error reading '{}' - file too long\n",
                path.display()
            ));
        }
        Ok(data)
    }

    fn vm_dir(&self, vmid: u32) -> Result<PathBuf, String> {
        let dir = self.images.join(vmid.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}\n", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("chmod {}: {e}\n", dir.display()))?;
        Ok(dir)
    }

    /// First free `vm-{vmid}-disk-{n}.{fmt}`.
    fn next_disk_name(&self, vmid: u32, fmt: &str) -> String {
        let dir = self.images.join(vmid.to_string());
        for n in 0.. {
            let used = ["raw", "qcow2", "vmdk"].iter().any(|e| {
                dir.join(format!("vm-{vmid}-disk-{n}.{e}")).exists()
                    || dir.join(format!("base-{vmid}-disk-{n}.{e}")).exists()
            });
            if !used {
                return format!("vm-{vmid}-disk-{n}.{fmt}");
            }
        }
        unreachable!("infinite range")
    }

    /// Make a VM's image private to its QEMU uid (ISO-4).
    pub fn own(&self, path: &Path, uid: u32) -> Result<(), String> {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))
            .map_err(|e| format!("chown {}: {e}\n", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}\n", path.display()))
    }

    /// `vdisk_alloc`: a new empty image of `size` bytes.
    pub async fn alloc(
        &self,
        vmid: u32,
        fmt: &str,
        name: Option<&str>,
        size: u64,
        uid: u32,
    ) -> Result<String, String> {
        let dir = self.vm_dir(vmid)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => self.next_disk_name(vmid, fmt),
        };
        let path = dir.join(&name);
        if path.exists() {
            return Err(format!("disk image '{}' already exists\n", path.display()));
        }
        qemu_img(&[
            "create",
            "-q",
            "-f",
            fmt,
            &path_str(&path),
            &size.to_string(),
        ])
        .await?;
        self.own(&path, uid)?;
        Ok(format!("{STORAGE_ID}:{vmid}/{name}"))
    }

    /// A linked clone: a qcow2 overlay on the base image (relative backing path,
    /// as PVE's dir plugin writes it).
    pub async fn linked_clone(
        &self,
        base: &Volume,
        newid: u32,
        uid: u32,
    ) -> Result<String, String> {
        if !base.is_base {
            return Err("clone_image only works on base images\n".to_string());
        }
        let dir = self.vm_dir(newid)?;
        let name = self.next_disk_name(newid, "qcow2");
        let path = dir.join(&name);
        let backing = format!("../{}/{}", base.owner, base.name);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            &base.format,
            "-b",
            &backing,
            &path_str(&path),
        ])
        .await?;
        self.own(&path, uid)?;
        Ok(format!(
            "{STORAGE_ID}:{}/{}/{newid}/{name}",
            base.owner, base.name
        ))
    }

    /// A full copy (`qemu-img convert`).
    pub async fn full_copy(
        &self,
        src: &Volume,
        newid: u32,
        fmt: &str,
        uid: u32,
    ) -> Result<String, String> {
        let dir = self.vm_dir(newid)?;
        let name = self.next_disk_name(newid, fmt);
        let path = dir.join(&name);
        qemu_img(&[
            "convert",
            "-q",
            "-O",
            fmt,
            &path_str(&src.path),
            &path_str(&path),
        ])
        .await?;
        self.own(&path, uid)?;
        Ok(format!("{STORAGE_ID}:{newid}/{name}"))
    }

    /// Install a template's base image from a file (what `qm importdisk` + `qm
    /// template` leave behind).
    pub async fn import_base(&self, vmid: u32, image: &Path) -> Result<String, String> {
        let dir = self.vm_dir(vmid)?;
        let name = format!("base-{vmid}-disk-0.qcow2");
        let path = dir.join(&name);
        qemu_img(&[
            "convert",
            "-q",
            "-O",
            "qcow2",
            &path_str(image),
            &path_str(&path),
        ])
        .await?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("chmod: {e}\n"))?;
        Ok(format!("{STORAGE_ID}:{vmid}/{name}"))
    }

    /// Virtual size in bytes.
    pub async fn size(&self, path: &Path) -> Result<u64, String> {
        Ok(self.info(path).await?.0)
    }

    /// (virtual, allocated) bytes.
    pub async fn info(&self, path: &Path) -> Result<(u64, u64), String> {
        let out = qemu_img(&["info", "-U", "--output=json", &path_str(path)]).await?;
        let i: ImgInfo =
            serde_json::from_slice(&out).map_err(|e| format!("qemu-img info: {e}\n"))?;
        let _ = i.format;
        Ok((i.virtual_size, i.actual_size))
    }

    /// Grow a stopped VM's image.
    pub async fn resize(&self, vol: &Volume, bytes: u64) -> Result<(), String> {
        qemu_img(&[
            "resize",
            "-q",
            "-f",
            &vol.format,
            &path_str(&vol.path),
            &bytes.to_string(),
        ])
        .await?;
        Ok(())
    }

    /// `vdisk_free`.
    pub fn free(&self, vol: &Volume) -> Result<(), String> {
        std::fs::remove_file(&vol.path)
            .map_err(|e| format!("unable to remove '{}' - {e}\n", vol.path.display()))
    }

    /// Every image file of a VM (for `destroy-unreferenced-disks`).
    pub fn vm_image_files(&self, vmid: u32) -> Vec<PathBuf> {
        let dir = self.images.join(vmid.to_string());
        let prefixes = [format!("vm-{vmid}-"), format!("base-{vmid}-")];
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| prefixes.iter().any(|pre| n.starts_with(pre)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn remove_vm_dir_if_empty(&self, vmid: u32) {
        let _ = std::fs::remove_dir(self.images.join(vmid.to_string()));
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Run qemu-img; Err is its stderr. Killed if the task running it is aborted.
pub async fn qemu_img(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run qemu-img: {e}\n"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "qemu-img {} failed: {}\n",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
