//! PVE's code-based (named) string formats, reimplemented from their documented
//! behaviour in pve-common (JSONSchema.pm), pve-storage, pve-access-control and
//! qemu-server. Each returns the `die` text PVE produces (with its newline), which
//! the validator wraps as `invalid format - …`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

fn re(p: &str) -> Option<Regex> {
    Regex::new(p).ok()
}

macro_rules! regex_static {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Option<Regex>> = LazyLock::new(|| re($pat));
    };
}

fn matches(r: &LazyLock<Option<Regex>>, s: &str) -> bool {
    r.as_ref().is_some_and(|re| re.is_match(s))
}

/// Perl's `$` at the end of a pattern also matches before a final newline.
fn strip_final_nl(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// PVE's `split_list`: NUL-separated if it contains NUL, else split on `,`, `;` and
/// whitespace (leading separators ignored).
pub fn split_list(s: &str) -> Vec<String> {
    if s.contains('\0') {
        return s.split('\0').map(str::to_string).collect();
    }
    let replaced: String = s
        .chars()
        .map(|c| if c == ',' || c == ';' { ' ' } else { c })
        .collect();
    replaced.split_whitespace().map(str::to_string).collect()
}

/// The list of registered code formats (used to check the checked-in schema refers
/// only to formats we implement).
pub const CODE_FORMATS: &[&str] = &[
    "string",
    "urlencoded",
    "pve-configid",
    "pve-storage-id",
    "pve-bridge-id",
    "pve-vmid",
    "pve-node",
    "mac-addr",
    "ipv4",
    "ipv6",
    "ip",
    "ipv4mask",
    "CIDRv4",
    "CIDRv6",
    "CIDR",
    "pve-ipv4-config",
    "pve-ipv6-config",
    "dns-name",
    "address",
    "disk-size",
    "pve-startup-order",
    "pve-tag",
    "pve-poolid",
    "pve-volume-id",
    "pve-volume-id-or-qm-path",
    "pve-volume-id-or-absolute-path",
    "pve-qm-bootdisk",
    "pve-qm-bootdev",
    "pve-hotplug-features",
    "pve-cpuset",
    "pve-phys-bits",
    "storage-pair",
];

/// Run a named code format. `None` = no such code format.
pub fn check_code_format(name: &str, v: &str) -> Option<Result<(), String>> {
    let r = match name {
        "string" => Ok(()),
        "urlencoded" => urlencoded(v),
        "pve-configid" => configid(v),
        "pve-storage-id" => parse_id(v, "storage"),
        "pve-bridge-id" => bridge_id(v),
        "pve-vmid" => vmid(v),
        "pve-node" => node_name(v),
        "mac-addr" => mac_addr(v),
        "ipv4" => ok_or(
            is_ipv4(v),
            "value does not look like a valid IPv4 address\n",
        ),
        "ipv6" => ok_or(
            is_ipv6(v),
            "value does not look like a valid IPv6 address\n",
        ),
        "ip" => ok_or(
            is_ipv4(v) || is_ipv6(v),
            "value does not look like a valid IP address\n",
        ),
        "ipv4mask" => ok_or(
            netmask_bits(v).is_some(),
            "value does not look like a valid IP netmask\n",
        ),
        "CIDRv4" => ok_or(
            cidr_v4(v),
            "value does not look like a valid IPv4 CIDR network\n",
        ),
        "CIDRv6" => ok_or(
            cidr_v6(v),
            "value does not look like a valid IPv6 CIDR network\n",
        ),
        "CIDR" => ok_or(
            cidr_v4(v) || cidr_v6(v),
            "value does not look like a valid CIDR network\n",
        ),
        "pve-ipv4-config" => ok_or(
            matches!(strip_final_nl(v), "dhcp" | "manual") || cidr_v4(v),
            "value does not look like a valid ipv4 network configuration\n",
        ),
        "pve-ipv6-config" => ok_or(
            matches!(strip_final_nl(v), "auto" | "dhcp" | "manual") || cidr_v6(v),
            "value does not look like a valid ipv6 network configuration\n",
        ),
        "dns-name" => ok_or(
            is_dns_name(v),
            "value does not look like a valid DNS name\n",
        ),
        "address" => {
            if is_ipv4(v) || is_ipv6(v) || is_dns_name(v) {
                Ok(())
            } else {
                Err(format!("value does not look like a valid address: {v}\n"))
            }
        }
        "disk-size" => {
            if parse_size(v).is_some() {
                Ok(())
            } else {
                Err(format!("value does not look like a valid disk size: {v}\n"))
            }
        }
        "pve-startup-order" => ok_or(startup_order(v), "unable to parse startup options\n"),
        "pve-tag" => tag(v),
        "pve-poolid" => poolid(v),
        "pve-volume-id" => volume_id(v),
        "pve-volume-id-or-qm-path" => {
            if v == "none" || v == "cdrom" || v.starts_with('/') {
                Ok(())
            } else {
                volume_id(v)
            }
        }
        "pve-volume-id-or-absolute-path" => {
            if v.starts_with('/') {
                Ok(())
            } else {
                volume_id(v)
            }
        }
        "pve-qm-bootdisk" => {
            if is_valid_drivename(v) {
                Ok(())
            } else {
                Err(format!("invalid boot disk '{v}'\n"))
            }
        }
        "pve-qm-bootdev" => bootdev(v),
        "pve-hotplug-features" => hotplug(v),
        "pve-cpuset" => ok_or(cpuset(v), "unable to parse cpuset option\n"),
        "pve-phys-bits" => phys_bits(v),
        "storage-pair" => storage_pair(v),
        _ => return None,
    };
    Some(r)
}

fn ok_or(cond: bool, msg: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg.to_string()) }
}

fn urlencoded(v: &str) -> Result<(), String> {
    regex_static!(RE, r"^[-%a-zA-Z0-9_.!~*'()]*\n?\z");
    if matches(&RE, v) {
        Ok(())
    } else {
        Err(format!("invalid urlencoded string: {v}\n"))
    }
}

pub fn configid(v: &str) -> Result<(), String> {
    regex_static!(RE, r"^[a-zA-Z][a-zA-Z0-9_-]+\n?\z");
    if matches(&RE, v) {
        Ok(())
    } else {
        Err(format!("invalid configuration ID '{v}'\n"))
    }
}

fn parse_id(v: &str, what: &str) -> Result<(), String> {
    regex_static!(RE, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]\n?\z");
    if v.chars().count() < 2 {
        return Err(format!(
            "{what} ID '{v}' cannot be shorter than 2 characters\n"
        ));
    }
    if !matches(&RE, v) {
        return Err(format!("{what} ID '{v}' contains illegal characters\n"));
    }
    Ok(())
}

fn bridge_id(v: &str) -> Result<(), String> {
    // Perl's \w and \d are Unicode-aware on decoded strings; Rust's are too.
    regex_static!(RE, r"^[-_.\w\d]+\n?\z");
    if matches(&RE, v) {
        Ok(())
    } else {
        Err(format!("invalid bridge ID '{v}'\n"))
    }
}

fn vmid(v: &str) -> Result<(), String> {
    regex_static!(RE, r"^[1-9][0-9]{2,8}\n?\z");
    ok_or(matches(&RE, v), "value does not look like a valid VM ID\n")
}

pub fn node_name(v: &str) -> Result<(), String> {
    regex_static!(RE, r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\n?\z");
    ok_or(
        matches(&RE, v),
        "value does not look like a valid node name\n",
    )
}

fn mac_addr(v: &str) -> Result<(), String> {
    regex_static!(RE, r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}\n?\z");
    ok_or(
        matches(&RE, v),
        "value does not look like a valid unicast MAC address\n",
    )
}

fn is_ipv4(v: &str) -> bool {
    Ipv4Addr::from_str(strip_final_nl(v)).is_ok()
}

fn is_ipv6(v: &str) -> bool {
    let v = strip_final_nl(v);
    !v.contains('%') && Ipv6Addr::from_str(v).is_ok()
}

pub fn netmask_bits(mask: &str) -> Option<u8> {
    let ip = Ipv4Addr::from_str(mask).ok()?;
    let n = u32::from(ip);
    let bits = n.leading_ones();
    if n.checked_shl(bits).unwrap_or(0) == 0 {
        u8::try_from(bits).ok()
    } else {
        None
    }
}

fn cidr_v4(v: &str) -> bool {
    let v = strip_final_nl(v);
    let Some((ip, len)) = v.split_once('/') else {
        return false;
    };
    is_ipv4(ip) && len.chars().all(|c| c.is_ascii_digit()) && !len.is_empty() && {
        let n: u32 = len.parse().unwrap_or(0);
        n > 7 && n <= 32
    }
}

fn cidr_v6(v: &str) -> bool {
    let v = strip_final_nl(v);
    let Some((ip, len)) = v.split_once('/') else {
        return false;
    };
    is_ipv6(ip) && len.chars().all(|c| c.is_ascii_digit()) && !len.is_empty() && {
        let n: u32 = len.parse().unwrap_or(0);
        n > 7 && n <= 128
    }
}

fn is_dns_name(v: &str) -> bool {
    regex_static!(
        RE,
        r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\n?\z"
    );
    matches(&RE, v)
}

/// `parse_size`: bytes for `N`, `N.M`, with optional K/M/G/T (or KiB…).
pub fn parse_size(v: &str) -> Option<u64> {
    regex_static!(RE, r"^([0-9]+(\.[0-9]+)?)([KMGT](?:iB)?)?\n?\z");
    let caps = RE.as_ref()?.captures(v)?;
    let n: f64 = caps.get(1)?.as_str().parse().ok()?;
    let mult = match caps.get(3).map(|m| &m.as_str()[..1]) {
        None => 1.0,
        Some("K") => 1024.0,
        Some("M") => 1024.0 * 1024.0,
        Some("G") => 1024.0 * 1024.0 * 1024.0,
        Some("T") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        Some(_) => return None,
    };
    Some((n * mult) as u64)
}

/// `format_size`: the shortest exact unit.
pub fn format_size(size: u64) -> String {
    if size % 1024 != 0 {
        return size.to_string();
    }
    let kb = size / 1024;
    if kb % 1024 != 0 {
        return format!("{kb}K");
    }
    let mb = kb / 1024;
    if mb % 1024 != 0 {
        return format!("{mb}M");
    }
    let gb = mb / 1024;
    if gb % 1024 != 0 {
        return format!("{gb}G");
    }
    format!("{}T", gb / 1024)
}

fn startup_order(v: &str) -> bool {
    if v.is_empty() || v == "0" {
        return false;
    }
    regex_static!(ORDER, r"^(order=)?[0-9]+\n?\z");
    regex_static!(UPDOWN, r"^(up|down)=[0-9]+\n?\z");
    for part in v.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if !(matches(&ORDER, part) || matches(&UPDOWN, part)) {
            return false;
        }
    }
    true
}

fn tag(v: &str) -> Result<(), String> {
    regex_static!(RE, r"(?i)^[a-z0-9_][a-z0-9_\-+.]*\n?\z");
    ok_or(matches(&RE, v), "invalid characters in tag\n")
}

fn poolid(v: &str) -> Result<(), String> {
    if v.split('/').count() > 3 {
        return Err(format!(
            "pool name '{v}' nested too deeply (max levels = 3)\n"
        ));
    }
    regex_static!(RE, r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}\n?\z");
    if matches(&RE, v) {
        Ok(())
    } else {
        Err(format!("pool name '{v}' contains invalid characters\n"))
    }
}

pub fn volume_id(v: &str) -> Result<(), String> {
    regex_static!(RE, r"(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)\n?\z");
    if matches(&RE, v) {
        Ok(())
    } else {
        Err(format!("unable to parse volume ID '{v}'\n"))
    }
}

/// Split a volume id into (storage, volname).
pub fn split_volume_id(v: &str) -> Option<(&str, &str)> {
    volume_id(v).ok()?;
    v.split_once(':')
}

pub fn is_valid_drivename(v: &str) -> bool {
    fn idx(v: &str, prefix: &str, max: u32) -> bool {
        v.strip_prefix(prefix)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .filter(|n| !(n.len() > 1 && n.starts_with('0')))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < max)
    }
    idx(v, "ide", 4)
        || idx(v, "sata", 6)
        || idx(v, "scsi", 31)
        || idx(v, "virtio", 16)
        || v == "efidisk0"
        || v == "tpmstate0"
}

fn bootdev(v: &str) -> Result<(), String> {
    let special = v.starts_with("efidisk") || v.starts_with("tpmstate");
    if is_valid_drivename(v) && !special {
        return Ok(());
    }
    fn indexed(v: &str, base: &str, max: u32) -> bool {
        v.strip_prefix(base)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .filter(|n| !(n.len() > 1 && n.starts_with('0')))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < max)
    }
    if indexed(v, "net", 32) || indexed(v, "usb", 14) || indexed(v, "hostpci", 16) {
        return Ok(());
    }
    Err(format!("invalid boot device '{v}'\n"))
}

fn hotplug(v: &str) -> Result<(), String> {
    if v == "0" || v == "1" {
        return Ok(());
    }
    for f in split_list(v) {
        if !matches!(
            f.as_str(),
            "network" | "disk" | "cpu" | "memory" | "usb" | "cloudinit"
        ) {
            return Err(format!("invalid hotplug feature '{f}'\n"));
        }
    }
    Ok(())
}

fn cpuset(v: &str) -> bool {
    const MAX_CPUID: u32 = 8192;
    let mut any = false;
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
            return false;
        };
        if a > b || b >= MAX_CPUID {
            return false;
        }
        any = true;
    }
    any
}

fn phys_bits(v: &str) -> Result<(), String> {
    let msg = "value must be an integer between 8 and 64 or 'host'\n".to_string();
    let s = strip_final_nl(v);
    if s == "host" {
        return Ok(());
    }
    if s.is_empty() || s.len() > 2 || !s.chars().all(|c| c.is_ascii_digit()) {
        return Err(msg);
    }
    let n: u32 = s.parse().map_err(|_| msg.clone())?;
    if !(8..=64).contains(&n) {
        return Err(msg);
    }
    Ok(())
}

fn storage_pair(v: &str) -> Result<(), String> {
    match v.split_once(':') {
        Some((a, b)) => parse_id(a, "storage").and_then(|_| parse_id(b, "storage")),
        None => parse_id(v, "storage"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urlencoded_is_pves_pattern() {
        assert!(
            check_code_format("urlencoded", "ssh-ed25519%20AAAA%2B%2F%3D")
                .unwrap()
                .is_ok()
        );
        assert!(
            check_code_format("urlencoded", "a'b(c)!~*")
                .unwrap()
                .is_ok()
        );
        let e = check_code_format("urlencoded", "ssh-ed25519 AAAA")
            .unwrap()
            .unwrap_err();
        assert_eq!(e, "invalid urlencoded string: ssh-ed25519 AAAA\n");
        assert!(check_code_format("urlencoded", "a+b").unwrap().is_err());
    }

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("+1G"), None);
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 20), "3M");
    }

    #[test]
    fn misc_formats() {
        assert!(check_code_format("pve-vmid", "100").unwrap().is_ok());
        assert!(check_code_format("pve-vmid", "99").unwrap().is_err());
        assert!(
            check_code_format("mac-addr", "BC:24:11:00:00:01")
                .unwrap()
                .is_ok()
        );
        assert!(
            check_code_format("mac-addr", "01:24:11:00:00:01")
                .unwrap()
                .is_err()
        );
        assert!(
            check_code_format("pve-ipv4-config", "10.0.0.5/24")
                .unwrap()
                .is_ok()
        );
        assert!(
            check_code_format("pve-ipv4-config", "10.0.0.5/4")
                .unwrap()
                .is_err()
        );
        assert!(
            check_code_format("pve-ipv4-config", "dhcp")
                .unwrap()
                .is_ok()
        );
        assert!(
            check_code_format("pve-volume-id", "local:snippets/u.yaml")
                .unwrap()
                .is_ok()
        );
        assert!(check_code_format("pve-volume-id", "x:y").unwrap().is_err());
        assert!(check_code_format("pve-qm-bootdev", "net0").unwrap().is_ok());
        assert!(
            check_code_format("pve-qm-bootdev", "net32")
                .unwrap()
                .is_err()
        );
        assert_eq!(netmask_bits("255.255.255.0"), Some(24));
        assert_eq!(netmask_bits("255.0.255.0"), None);
        assert_eq!(split_list(" a,b; c "), vec!["a", "b", "c"]);
    }
}
