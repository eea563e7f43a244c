//! Validation of a `VmSpec` and VM ids before anything reaches the machine. Every
//! value that ends up in a QEMU argument, a file name or a cloud-init file is
//! checked here; an error names the field so the API can answer `invalid_spec`.

use crate::network::{MacAddr, NetworkConfig};
use clawy_proto::agent::VmSpec;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const MAX_USER_DATA: usize = 64 * 1024;
const MAX_SSH_KEYS: usize = 64;
const MAX_SSH_KEY_LEN: usize = 16 * 1024;
const MAX_PORT_FORWARDS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// VM ids become directory names, QMP socket names and tap names: keep them short
/// and plain.
pub fn validate_vm_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(
            "id",
            "VM ids are 1-64 of [a-z0-9-], not starting with '-'",
        ))
    }
}

/// A VM id checked once, at the API edge ([`VmId::parse`]): everything past the
/// edge takes a `VmId`, so no path, tap, snippet or PVE tag is built from an
/// unchecked string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(String);

impl VmId {
    pub fn parse(id: &str) -> Result<Self, SpecError> {
        validate_vm_id(id)?;
        Ok(VmId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VmId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for VmId {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        VmId::parse(s)
    }
}

/// Base images are names inside the images dir, never paths.
pub fn validate_image_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(err(
            "base_image",
            "must be an image name of [a-z0-9._-] (not a path, not starting with '.')",
        ))
    }
}

fn validate_hostname(h: &str) -> Result<(), SpecError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if h.len() <= 253 && h.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(err(
            "hostname",
            "must be a lower-case DNS name (labels of [a-z0-9-])",
        ))
    }
}

/// AUTH-4: a single-line OpenSSH public key of an accepted type. Anything else
/// (private keys, multi-line text, options prefixes) is refused, which also keeps
/// the cloud-init file free of injected YAML.
fn validate_ssh_key(i: usize, key: &str) -> Result<(), SpecError> {
    let field = format!("ssh_authorized_keys[{i}]");
    if key.len() > MAX_SSH_KEY_LEN || key.chars().any(|c| c.is_control()) {
        return Err(err(field, "must be one line of printable text"));
    }
    let mut parts = key.splitn(3, ' ');
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let kinds = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !kinds.contains(&kind) {
        return Err(err(
            field,
            "must be an OpenSSH public key starting with ssh-ed25519, ssh-rsa or ecdsa-sha2-*",
        ));
    }
    let blob_ok = blob.len() >= 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !blob_ok {
        return Err(err(field, "the key data is not base64"));
    }
    // The comment is kept as the owner wrote it (quotes and non-ASCII included);
    // cloudinit writes it escaped in a YAML double-quoted scalar. Refused: what
    // could break lines or hide itself (the shared rule; the control plane stores
    // keys with a comment cleaned by it, so a key it accepted is never refused here).
    let comment = parts.next().unwrap_or_default();
    if !clawy_proto::agent::is_safe_ssh_key_comment(comment) {
        return Err(err(
            field,
            "the key comment must be at most 100 bytes of printable text (no control, line-separator or invisible formatting characters)",
        ));
    }
    Ok(())
}

/// Validate a spec on its own and against the host network (when configured).
pub fn validate_spec(spec: &VmSpec, network: Option<&NetworkConfig>) -> Result<(), SpecError> {
    if spec.vcpus == 0 || spec.vcpus > 255 {
        return Err(err("vcpus", "must be between 1 and 255"));
    }
    if spec.memory_mib < 64 || spec.memory_mib > 4 * 1024 * 1024 {
        return Err(err("memory_mib", "must be between 64 and 4194304"));
    }
    if spec.disk_gib == 0 || spec.disk_gib > 64 * 1024 {
        return Err(err("disk_gib", "must be between 1 and 65536"));
    }
    validate_image_name(&spec.base_image)?;
    spec.mac
        .parse::<MacAddr>()
        .map_err(|e| err("mac", e.to_string()))?;
    let ip: Ipv4Addr = spec
        .private_ip
        .parse()
        .map_err(|_| err("private_ip", "must be an IPv4 address"))?;
    match network {
        Some(net) if !net.subnet.is_vm_address(ip) => {
            return Err(err(
                "private_ip",
                format!("must be a VM address inside {} (.2-.254)", net.subnet),
            ));
        }
        None if ip.octets()[0] != 10 => {
            return Err(err("private_ip", "must be inside 10.0.0.0/8"));
        }
        _ => {}
    }
    validate_hostname(&spec.hostname)?;
    if let Some(h) = &spec.public_hostname {
        // The same rule as Caddy's JSON, the DNS responder and certificate paths.
        clawy_proto::names::DnsName::parse(h, "public_hostname", 2)
            .map_err(|e| err("public_hostname", e.to_string()))?;
    }
    if spec.ssh_authorized_keys.len() > MAX_SSH_KEYS {
        return Err(err(
            "ssh_authorized_keys",
            format!("at most {MAX_SSH_KEYS} keys"),
        ));
    }
    for (i, k) in spec.ssh_authorized_keys.iter().enumerate() {
        validate_ssh_key(i, k)?;
    }
    if let Some(ud) = &spec.user_data {
        if ud.len() > MAX_USER_DATA {
            return Err(err("user_data", format!("at most {MAX_USER_DATA} bytes")));
        }
    }
    if spec.port_forwards.len() > MAX_PORT_FORWARDS {
        return Err(err(
            "port_forwards",
            format!("at most {MAX_PORT_FORWARDS} forwards"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, pf) in spec.port_forwards.iter().enumerate() {
        let field = format!("port_forwards[{i}]");
        if pf.host_port == 0 || pf.guest_port == 0 {
            return Err(err(field, "ports must be 1-65535"));
        }
        if let Some(net) = network {
            if !net.ssh_port_range.contains(pf.host_port) {
                return Err(err(
                    field,
                    format!("host_port must be inside {}", net.ssh_port_range),
                ));
            }
        }
        if !seen.insert((pf.protocol, pf.host_port)) {
            return Err(err(field, "duplicate host port"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clawy_proto::agent::{PortForward, Protocol};

    pub(crate) fn good() -> VmSpec {
        VmSpec {
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 1,
            base_image: "test-guest.qcow2".into(),
            mac: "52:54:00:aa:bb:cc".into(),
            private_ip: "10.42.0.10".into(),
            hostname: "vm-a".into(),
            ssh_authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6 me@host"
                    .into(),
            ],
            user_data: None,
            port_forwards: vec![PortForward {
                protocol: Protocol::Tcp,
                host_port: 22010,
                guest_port: 22,
            }],
            public_hostname: None,
        }
    }

    #[test]
    fn good_spec_passes() {
        validate_spec(&good(), None).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut VmSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.vcpus = 0, "vcpus"),
            (|s| s.memory_mib = 1, "memory_mib"),
            (|s| s.disk_gib = 0, "disk_gib"),
            (|s| s.base_image = "../etc/passwd".into(), "base_image"),
            (|s| s.base_image = "a/b".into(), "base_image"),
            (|s| s.base_image = "..".into(), "base_image"),
            (|s| s.mac = "zz:54:00:aa:bb:cc".into(), "mac"),
            (|s| s.private_ip = "192.168.1.2".into(), "private_ip"),
            (|s| s.hostname = "a\nb: c".into(), "hostname"),
            // A public hostname reaches Caddy's JSON and storage paths.
            (
                |s| s.public_hostname = Some("{http.request.host}.claws.test".into()),
                "public_hostname",
            ),
            (
                |s| s.public_hostname = Some("../../etc.claws.test".into()),
                "public_hostname",
            ),
            (
                |s| s.public_hostname = Some("Web-1.claws.test".into()),
                "public_hostname",
            ),
            (
                |s| s.public_hostname = Some("web".into()),
                "public_hostname",
            ),
            (
                |s| s.ssh_authorized_keys = vec!["ssh-ed25519 AAAA\n- evil".into()],
                "ssh_authorized_keys[0]",
            ),
            (
                |s| s.ssh_authorized_keys = vec!["-----BEGIN OPENSSH PRIVATE KEY-----".into()],
                "ssh_authorized_keys[0]",
            ),
            (
                |s| {
                    // A comment may hold `: ` (written quoted), not a line separator.
                    s.ssh_authorized_keys =
                        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA x\u{2028}y: z".into()]
                },
                "ssh_authorized_keys[0]",
            ),
            (|s| s.port_forwards[0].guest_port = 0, "port_forwards[0]"),
        ];
        for (mutate, field) in cases {
            let mut s = good();
            mutate(&mut s);
            let e = validate_spec(&s, None).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn ip_must_be_in_host_subnet() {
        let net = NetworkConfig::new("10.42.0.0/24".parse().unwrap(), "eth0");
        validate_spec(&good(), Some(&net)).unwrap();
        let mut s = good();
        s.private_ip = "10.43.0.10".into();
        assert_eq!(
            validate_spec(&s, Some(&net)).unwrap_err().field,
            "private_ip"
        );
        s.private_ip = "10.42.0.1".into();
        assert_eq!(
            validate_spec(&s, Some(&net)).unwrap_err().field,
            "private_ip"
        );
        let mut s = good();
        s.port_forwards[0].host_port = 80;
        assert_eq!(
            validate_spec(&s, Some(&net)).unwrap_err().field,
            "port_forwards[0]"
        );
    }

    #[test]
    fn vm_ids() {
        validate_vm_id("vm-1").unwrap();
        assert_eq!(VmId::parse("vm-1").unwrap().as_str(), "vm-1");
        for bad in ["", "A", "a/b", "..", "-x", &"a".repeat(65)] {
            assert!(validate_vm_id(bad).is_err(), "{bad}");
            assert!(VmId::parse(bad).is_err(), "{bad}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Hostile strings in every text field of a VmSpec: validation never panics,
            /// and whatever it accepts holds nothing that could leave its place in the
            /// cloud-init YAML or the QEMU argv (no control character, no YAML-special
            /// character in a key comment, a DNS hostname).
            #[test]
            fn hostile_spec_fields_never_panic_or_pass_unsafe(
                // Each field: sometimes well-formed, sometimes anything at all.
                hostname in "[a-z0-9.-]{1,20}|.{0,80}",
                base_image in "[a-z0-9._-]{1,20}|.{0,80}",
                mac in "52:54:00:aa:bb:cc|.{0,30}",
                ip in "10\\.42\\.0\\.10|.{0,30}",
                key in "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6( .{0,40})?|.{0,200}",
                comment in "[a-z@. ]{0,20}|.{0,60}",
            ) {
                let mut spec = good();
                spec.hostname = hostname;
                spec.base_image = base_image;
                spec.mac = mac;
                spec.private_ip = ip;
                spec.ssh_authorized_keys = vec![
                    key,
                    format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6 {comment}"),
                ];
                if validate_spec(&spec, None).is_ok() {
                    prop_assert!(!spec.hostname.is_empty());
                    prop_assert!(spec.hostname.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
                    for k in &spec.ssh_authorized_keys {
                        prop_assert!(!k.chars().any(char::is_control));
                        let c = k.splitn(3, ' ').nth(2).unwrap_or_default();
                        prop_assert!(clawy_proto::agent::is_safe_ssh_key_comment(c));
                    }
                    prop_assert!(!spec.base_image.contains('/') && !spec.base_image.contains(','));
                }
            }
        }
    }
}
