//! Plugging a started VM's taps into bridges the way PVE's `pve-bridge` hook does:
//! `tap{vmid}i{n}` up, promiscuous, with the bridge's MTU, IPv6 off, then a bridge
//! port — or, with `firewall=1`, behind a firewall bridge `fwbr{vmid}i{n}` joined
//! to the bridge by the veth pair `fwpr{vmid}p{n}`/`fwln{vmid}i{n}`.
//!
//! The simulator never creates, changes or deletes a bridge, and refuses to touch
//! interfaces in the machine's own network namespace unless told to (tests build
//! their topology in namespaces they own).

use std::path::Path;

pub fn tap_name(vmid: u32, idx: u32) -> String {
    format!("tap{vmid}i{idx}")
}

pub fn fw_names(vmid: u32, idx: u32) -> (String, String, String) {
    (
        format!("fwbr{vmid}i{idx}"),
        format!("fwln{vmid}i{idx}"),
        format!("fwpr{vmid}p{idx}"),
    )
}

/// True unless this process provably runs in a network namespace of its own:
/// one different from PID 1's, or one of the named namespaces `ip netns add`
/// made (PID 1's may not be inspectable, e.g. in a container).
pub fn in_root_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self/ns/net") else {
        return true;
    };
    if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
        return me.ino() == init.ino() && me.dev() == init.dev();
    }
    let named = std::fs::read_dir("/var/run/netns")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .any(|m| m.ino() == me.ino() && m.dev() == me.dev())
        })
        .unwrap_or(false);
    !named
}

pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

pub fn mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}\n"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn disable_ipv6(iface: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6");
    let _ = std::fs::write(p, "1");
}

/// `tap_create` + `tap_plug`.
pub async fn plug(vmid: u32, idx: u32, bridge: &str, firewall: bool) -> Result<(), String> {
    let tap = tap_name(vmid, idx);
    let mtu = mtu(bridge).unwrap_or(1500).to_string();
    disable_ipv6(&tap);
    ip(&["link", "set", &tap, "up", "promisc", "on", "mtu", &mtu]).await?;
    if firewall {
        let (fwbr, fwln, fwpr) = fw_names(vmid, idx);
        cleanup_fw(vmid, idx).await;
        ip(&["link", "add", &fwbr, "type", "bridge"]).await?;
        disable_ipv6(&fwbr);
        ip(&["link", "set", &fwbr, "up", "mtu", &mtu]).await?;
        ip(&[
            "link", "add", &fwpr, "mtu", &mtu, "type", "veth", "peer", "name", &fwln, "mtu", &mtu,
        ])
        .await?;
        disable_ipv6(&fwpr);
        disable_ipv6(&fwln);
        ip(&["link", "set", &fwpr, "master", bridge, "up"]).await?;
        ip(&["link", "set", &fwln, "master", &fwbr, "up"]).await?;
        ip(&["link", "set", &tap, "master", &fwbr]).await?;
    } else {
        ip(&["link", "set", &tap, "master", bridge]).await?;
    }
    Ok(())
}

/// Remove a firewall bridge and its veth pair (`cleanup_firewall_bridge`).
pub async fn cleanup_fw(vmid: u32, idx: u32) {
    let (fwbr, _fwln, fwpr) = fw_names(vmid, idx);
    if iface_exists(&fwpr) {
        let _ = ip(&["link", "del", &fwpr]).await;
    }
    if iface_exists(&fwbr) {
        let _ = ip(&["link", "del", &fwbr]).await;
    }
}

/// Byte counters of a VM's taps from `/proc/net/dev` (netin = what the tap
/// transmitted to the guest, netout = what it received from it).
pub fn tap_counters(vmid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
        return (0, 0);
    };
    let prefix = format!("tap{vmid}i");
    let (mut netin, mut netout) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let Some(idx) = name.strip_prefix(&prefix) else {
            continue;
        };
        if idx.is_empty() || !idx.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            netout += f[0];
            netin += f[8];
        }
    }
    (netin, netout)
}
