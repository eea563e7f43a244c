//! The cloud-init drive PVE builds at VM start (qemu-server's Cloudinit.pm
//! behaviour, reimplemented): NoCloud (`cidata`) or ConfigDrive2 (`config-2`)
//! files generated from the VM's config, or taken from `cicustom` snippet files,
//! packed with genisoimage into the VM's `vm-{vmid}-cloudinit` volume.
//!
//! Fidelity notes (these are PVE's behaviours, kept on purpose):
//! - `sshkeys` is URL-decoded and each non-blank line is written verbatim as a
//!   YAML list item (`  - <key>`): no quoting, so a comment containing `: ` or
//!   ` #` changes the YAML's meaning exactly as on real PVE.
//! - nameservers split on whitespace only; without `nameserver`/`searchdomain`
//!   the node's resolv.conf is used.
//! - `meta-data` is `instance-id: <sha1(user-data . network-config)>`.

use std::collections::BTreeMap;
use std::path::Path;

use sha1::{Digest, Sha1};

use super::storage::{Storage, path_str, qemu_img};
use crate::http::decode::uri_unescape;
use crate::schema::Schema;

pub struct DnsDefaults<'a> {
    pub nameservers: &'a [String],
    pub searchdomain: Option<&'a str>,
}

/// The files of the drive and its volume label.
pub struct CloudInitFiles {
    pub label: &'static str,
    pub files: Vec<(String, Vec<u8>)>,
}

fn hostname_fqdn(conf: &BTreeMap<String, String>, vmid: u32) -> (String, String) {
    let name = conf
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("VM{vmid}"));
    if name.contains('.') {
        let host = name.split('.').next().unwrap_or("").to_string();
        (host, name)
    } else if let Some(search) = conf.get("searchdomain") {
        (name.clone(), format!("{name}.{search}"))
    } else {
        (name.clone(), name)
    }
}

/// The SSH keys as bytes: URL-decoded, split on newlines, blank lines dropped.
pub fn decoded_ssh_keys(encoded: &str) -> Vec<Vec<u8>> {
    let raw = uri_unescape(encoded.as_bytes());
    raw.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .collect()
}

/// `cloudinit_userdata`.
pub fn userdata(conf: &BTreeMap<String, String>, vmid: u32) -> Vec<u8> {
    let (host, fqdn) = hostname_fqdn(conf, vmid);
    let mut c: Vec<u8> = Vec::new();
    let mut push = |s: &str| c.extend_from_slice(s.as_bytes());
    push("#cloud-config\n");
    push(&format!("hostname: {host}\n"));
    push("manage_etc_hosts: true\n");
    push(&format!("fqdn: {fqdn}\n"));
    let user = conf.get("ciuser");
    if let Some(u) = user {
        push(&format!("user: {u}\n"));
        if u == "root" {
            push("disable_root: False\n");
        }
    }
    if let Some(p) = conf.get("cipassword") {
        push(&format!("password: {p}\n"));
    }
    if let Some(keys) = conf.get("sshkeys") {
        push("ssh_authorized_keys:\n");
        for k in decoded_ssh_keys(keys) {
            c.extend_from_slice(b"  - ");
            c.extend_from_slice(&k);
            c.push(b'\n');
        }
    }
    let mut push = |s: &str| c.extend_from_slice(s.as_bytes());
    push("chpasswd:\n");
    push("  expire: False\n");
    if user.map(String::as_str) != Some("root") {
        push("users:\n");
        push("  - default\n");
    }
    let upgrade = conf.get("ciupgrade").is_none_or(|v| v != "0");
    if upgrade {
        push("package_upgrade: true\n");
    }
    c
}

fn dns_conf(conf: &BTreeMap<String, String>, dns: &DnsDefaults<'_>) -> (Vec<String>, Vec<String>) {
    let search = conf
        .get("searchdomain")
        .map(String::as_str)
        .or(dns.searchdomain)
        .unwrap_or("");
    let searchdomains = search.split_whitespace().map(String::from).collect();
    let nameservers = match conf.get("nameserver") {
        Some(ns) => ns.split_whitespace().map(String::from).collect(),
        None => dns.nameservers.to_vec(),
    };
    (searchdomains, nameservers)
}

fn net_ids(conf: &BTreeMap<String, String>) -> Vec<(u32, String)> {
    let mut ids: Vec<(u32, String)> = conf
        .keys()
        .filter_map(|k| {
            k.strip_prefix("net")
                .and_then(|n| n.parse::<u32>().ok())
                .map(|n| (n, k.clone()))
        })
        .collect();
    // PVE sorts the keys as strings (net0, net1, net10, net2…).
    ids.sort_by(|a, b| a.1.cmp(&b.1));
    ids
}

/// `parse_ipconfig`: the pieces, or (dhcp, dhcp) when neither address is given.
fn ipconfig(schema: &Schema, v: &str) -> Option<BTreeMap<String, String>> {
    let fmt = schema.hash_format("pve-qm-ipconfig")?;
    let mut r = schema.parse_property_string(fmt, v, "", None).ok()?;
    if r.contains_key("gw") && !r.contains_key("ip") {
        return None;
    }
    if r.get("ip").map(String::as_str) == Some("dhcp") && r.contains_key("gw") {
        return None;
    }
    if !r.contains_key("ip") && !r.contains_key("ip6") {
        r.insert("ip".into(), "dhcp".into());
        r.insert("ip6".into(), "dhcp".into());
    }
    Some(r)
}

fn mac_of(schema: &Schema, net: &str) -> Option<String> {
    let fmt = schema.config_key_format("net0")?;
    let r = schema.parse_property_string(fmt, net, "", None).ok()?;
    r.get("macaddr").cloned()
}

fn split_ip4(ip: &str) -> Result<(String, String), String> {
    let (addr, bits) = ip
        .split_once('/')
        .ok_or_else(|| format!("not a CIDR: {ip}\n"))?;
    let bits: u32 = bits.parse().map_err(|_| format!("not a CIDR: {ip}\n"))?;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits.min(32))
    };
    let m = std::net::Ipv4Addr::from(mask);
    Ok((addr.to_string(), m.to_string()))
}

/// `nocloud_network` (network-config version 1).
pub fn nocloud_network(
    schema: &Schema,
    conf: &BTreeMap<String, String>,
    dns: &DnsDefaults<'_>,
) -> Result<String, String> {
    let mut c = String::from("version: 1\nconfig:\n");
    for (id, key) in net_ids(conf) {
        let Some(ipc) = conf.get(&format!("ipconfig{id}")) else {
            continue;
        };
        let i = "    ";
        let net = conf.get(&key).map(String::as_str).unwrap_or("");
        let mac = mac_of(schema, net)
            .map(|m| m.to_ascii_lowercase())
            .ok_or_else(|| format!("network interface '{key}' has no mac address\n"))?;
        let ipc = ipconfig(schema, ipc).unwrap_or_default();
        c.push_str(&format!(
            "{i}- type: physical\n{i}  name: eth{id}\n{i}  mac_address: '{mac}'\n{i}  subnets:\n"
        ));
        let i = "      ";
        if let Some(ip) = ipc.get("ip") {
            if ip == "dhcp" {
                c.push_str(&format!("{i}- type: dhcp4\n"));
            } else {
                let (addr, mask) = split_ip4(ip)?;
                c.push_str(&format!(
                    "{i}- type: static\n{i}  address: '{addr}'\n{i}  netmask: '{mask}'\n"
                ));
                if let Some(gw) = ipc.get("gw") {
                    c.push_str(&format!("{i}  gateway: '{gw}'\n"));
                }
            }
        }
        if let Some(ip6) = ipc.get("ip6") {
            match ip6.as_str() {
                "dhcp" => c.push_str(&format!("{i}- type: dhcp6\n")),
                "auto" => c.push_str(&format!("{i}- type: ipv6_slaac\n")),
                _ => {
                    c.push_str(&format!("{i}- type: static6\n{i}  address: '{ip6}'\n"));
                    if let Some(gw) = ipc.get("gw6") {
                        c.push_str(&format!("{i}  gateway: '{gw}'\n"));
                    }
                }
            }
        }
    }
    let i = "    ";
    let (search, ns) = dns_conf(conf, dns);
    // PVE tests two array references here, which are always true: the nameserver
    // entry is always written, even when empty.
    c.push_str(&format!("{i}- type: nameserver\n"));
    if !ns.is_empty() {
        c.push_str(&format!("{i}  address:\n"));
        for n in &ns {
            c.push_str(&format!("{i}  - '{n}'\n"));
        }
    }
    if !search.is_empty() {
        c.push_str(&format!("{i}  search:\n"));
        for s in &search {
            c.push_str(&format!("{i}  - '{s}'\n"));
        }
    }
    Ok(c)
}

/// `configdrive2_network` (ifupdown syntax).
fn configdrive2_network(
    schema: &Schema,
    conf: &BTreeMap<String, String>,
    dns: &DnsDefaults<'_>,
) -> Result<String, String> {
    let mut c = String::from("auto lo\niface lo inet loopback\n\n");
    let (search, ns) = dns_conf(conf, dns);
    if !ns.is_empty() {
        c.push_str(&format!("        dns_nameservers {}\n", ns.join(" ")));
    }
    if !search.is_empty() {
        c.push_str(&format!("        dns_search {}\n", search.join(" ")));
    }
    for (id, _) in net_ids(conf) {
        let Some(ipc) = conf.get(&format!("ipconfig{id}")) else {
            continue;
        };
        let ipc = ipconfig(schema, ipc).unwrap_or_default();
        let dev = format!("eth{id}");
        c.push_str(&format!("auto {dev}\n"));
        if let Some(ip) = ipc.get("ip") {
            if ip == "dhcp" {
                c.push_str(&format!("iface {dev} inet dhcp\n"));
            } else {
                let (addr, mask) = split_ip4(ip)?;
                c.push_str(&format!(
                    "iface {dev} inet static\n        address {addr}\n        netmask {mask}\n"
                ));
                if let Some(gw) = ipc.get("gw") {
                    c.push_str(&format!("        gateway {gw}\n"));
                }
            }
        }
        if let Some(ip6) = ipc.get("ip6") {
            if ip6 == "auto" || ip6 == "dhcp" {
                c.push_str(&format!("iface {dev} inet6 {ip6}\n"));
            } else {
                let (addr, mask) = ip6.split_once('/').unwrap_or((ip6, ""));
                c.push_str(&format!(
                    "iface {dev} inet6 static\n        address {addr}\n        netmask {mask}\n"
                ));
                if let Some(gw) = ipc.get("gw6") {
                    c.push_str(&format!("        gateway {gw}\n"));
                }
            }
        }
    }
    Ok(c)
}

fn sha1_hex(a: &[u8], b: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(a);
    h.update(b);
    hex::encode(h.finalize())
}

/// The drive's files for this config (`generate_nocloud` / `generate_configdrive2`).
pub fn generate(
    schema: &Schema,
    storage: &Storage,
    conf: &BTreeMap<String, String>,
    vmid: u32,
    dns: &DnsDefaults<'_>,
) -> Result<CloudInitFiles, String> {
    let mut custom: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(ci) = conf.get("cicustom") {
        let fmt = schema
            .hash_format("pve-qm-cicustom")
            .ok_or("missing cicustom format\n")?;
        let files = schema.parse_property_string(fmt, ci, "cicustom", None)?;
        for (k, volid) in files {
            custom.insert(k, storage.read_snippet(&volid)?);
        }
    }
    let format = match conf.get("citype") {
        Some(t) => t.clone(),
        None => {
            let windows = conf.get("ostype").is_some_and(|o| o.starts_with('w'));
            if windows {
                "configdrive2".into()
            } else {
                "nocloud".into()
            }
        }
    };
    let user = custom
        .remove("user")
        .unwrap_or_else(|| userdata(conf, vmid));
    let (label, files) = match format.as_str() {
        "nocloud" => {
            let network = match custom.remove("network") {
                Some(n) => n,
                None => nocloud_network(schema, conf, dns)?.into_bytes(),
            };
            let vendor = custom.remove("vendor").unwrap_or_default();
            let meta = match custom.remove("meta") {
                Some(m) => m,
                None => format!("instance-id: {}\n", sha1_hex(&user, &network)).into_bytes(),
            };
            (
                "cidata",
                vec![
                    ("user-data".to_string(), user),
                    ("network-config".to_string(), network),
                    ("meta-data".to_string(), meta),
                    ("vendor-data".to_string(), vendor),
                ],
            )
        }
        "configdrive2" => {
            let network = match custom.remove("network") {
                Some(n) => n,
                None => configdrive2_network(schema, conf, dns)?.into_bytes(),
            };
            let vendor = custom.remove("vendor").unwrap_or_default();
            let meta = match custom.remove("meta") {
                Some(m) => m,
                None => format!(
                    "{{\n     \"uuid\": \"{}\",\n     \"network_config\": {{ \"content_path\": \"/content/0000\" }}\n}}\n",
                    sha1_hex(&user, &network)
                )
                .into_bytes(),
            };
            (
                "config-2",
                vec![
                    ("openstack/latest/user_data".to_string(), user),
                    ("openstack/content/0000".to_string(), network),
                    ("openstack/latest/meta_data.json".to_string(), meta),
                    ("openstack/latest/vendor_data.json".to_string(), vendor),
                ],
            )
        }
        other => {
            return Err(format!(
                "pve-sim: cloud-init format '{other}' is not simulated\n"
            ));
        }
    };
    let sum: usize = files.iter().map(|(_, d)| d.len()).sum();
    if sum > 3 * 1024 * 1024 {
        return Err("Cloud-Init sum of snippets too big (> 3 MiB)\n".into());
    }
    Ok(CloudInitFiles { label, files })
}

/// `commit_cloudinit_disk`: write the files, build the ISO, put it into the
/// volume (owned by the VM's QEMU uid).
pub async fn commit(
    files: &CloudInitFiles,
    work: &Path,
    volume: &Path,
    format: &str,
    uid: u32,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(work);
    let root = work.join("root");
    for (name, data) in &files.files {
        let p = root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir: {e}\n"))?;
        }
        std::fs::write(&p, data).map_err(|e| format!("write {}: {e}\n", p.display()))?;
    }
    let iso = work.join("seed.iso");
    let out = tokio::process::Command::new("genisoimage")
        .args([
            "-quiet",
            "-iso-level",
            "3",
            "-J",
            "-R",
            "-V",
            files.label,
            "-o",
        ])
        .arg(&iso)
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run genisoimage: {e}\n"))?;
    if !out.status.success() {
        return Err(format!(
            "genisoimage failed: {}\n",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tmp = volume.with_extension("new");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        format,
        &path_str(&iso),
        &path_str(&tmp),
    ])
    .await?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(uid)).map_err(|e| format!("chown: {e}\n"))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("chmod: {e}\n"))?;
    std::fs::rename(&tmp, volume).map_err(|e| format!("rename: {e}\n"))?;
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn conf(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn userdata_like_pve() {
        let c = conf(&[
            ("name", "claw-1"),
            ("ciuser", "claw"),
            (
                "sshkeys",
                "ssh-ed25519%20AAAA%2B%2F%3D%20me%20%22q%22%20%C3%BC%0A%0Assh-rsa%20BBBB%0A",
            ),
            ("ciupgrade", "0"),
        ]);
        let u = String::from_utf8(userdata(&c, 101)).unwrap();
        assert_eq!(
            u,
            "#cloud-config\nhostname: claw-1\nmanage_etc_hosts: true\nfqdn: claw-1\nuser: claw\nssh_authorized_keys:\n  - ssh-ed25519 AAAA+/= me \"q\" ü\n  - ssh-rsa BBBB\nchpasswd:\n  expire: False\nusers:\n  - default\n"
        );
    }

    #[test]
    fn network_v1_like_pve() {
        let s = crate::schema::schema().unwrap();
        let c = conf(&[
            ("net0", "virtio=BC:24:11:AA:BB:CC,bridge=vmbr1"),
            ("ipconfig0", "ip=10.9.0.5/24,gw=10.9.0.1"),
            ("nameserver", "1.1.1.1 9.9.9.9"),
        ]);
        let dns = DnsDefaults {
            nameservers: &[],
            searchdomain: None,
        };
        let n = nocloud_network(s, &c, &dns).unwrap();
        assert_eq!(
            n,
            "version: 1\nconfig:\n    - type: physical\n      name: eth0\n      mac_address: 'bc:24:11:aa:bb:cc'\n      subnets:\n      - type: static\n        address: '10.9.0.5'\n        netmask: '255.255.255.0'\n        gateway: '10.9.0.1'\n    - type: nameserver\n      address:\n      - '1.1.1.1'\n      - '9.9.9.9'\n"
        );
    }
}
