//! The cloud-init NoCloud seed's content (AUTH-4), independent of any driver:
//! `meta-data`, `user-data` and `network-config` (v2, static address) as text.
//! The qemu driver packs them into an ISO labelled `cidata`; the proxmox driver
//! writes them as `cicustom` snippets. Pure: no I/O.
//!
//! Every value written here was validated by `crate::spec` (hostname, id, keys,
//! MAC, IP), so nothing a caller sends can inject YAML. Extra user data is never
//! spliced into our YAML: it becomes a separate MIME part.

use std::net::Ipv4Addr;

use clawy_proto::agent::VmSpec;
use rand::RngCore;

use crate::spec::VmId;

/// The three files of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

/// Host-side facts the seed needs (the VM's spec holds the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedContext {
    /// The VMs' default gateway (the Clawy bridge's address).
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// DNS servers for the guest (none by default).
    pub nameservers: Vec<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("private_ip is not an IPv4 address")]
    BadIp,
}

/// The seed for `id` with `spec`.
pub fn render(id: &VmId, spec: &VmSpec, ctx: &SeedContext) -> Result<SeedFiles, SeedError> {
    let _: Ipv4Addr = spec.private_ip.parse().map_err(|_| SeedError::BadIp)?;
    Ok(SeedFiles {
        meta_data: meta_data(id.as_str(), spec),
        user_data: user_data(spec),
        network_config: network_config(spec, ctx.gateway, ctx.prefix_len, &ctx.nameservers),
    })
}

pub fn meta_data(vm_id: &str, spec: &VmSpec) -> String {
    format!("instance-id: {vm_id}\nlocal-hostname: {}\n", spec.hostname)
}

/// Our own cloud-config: one locked user with the keys, no passwords, no root.
fn cloud_config(spec: &VmSpec) -> String {
    let mut s = String::from("#cloud-config\n");
    s.push_str(&format!("hostname: {}\n", spec.hostname));
    s.push_str("users:\n  - name: clawy\n    lock_passwd: true\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
    if spec.ssh_authorized_keys.is_empty() {
        s.push_str("    ssh_authorized_keys: []\n");
    } else {
        s.push_str("    ssh_authorized_keys:\n");
        for k in &spec.ssh_authorized_keys {
            s.push_str(&format!("      - {k}\n"));
        }
    }
    // AUTH-4: key-only SSH, no root login, no password.
    s.push_str("ssh_pwauth: false\ndisable_root: true\n");
    s
}

/// user-data: our cloud-config alone, or a MIME multipart with the caller's data
/// as the second part (`text/x-shellscript` when it starts with `#!`).
pub fn user_data(spec: &VmSpec) -> String {
    let ours = cloud_config(spec);
    let Some(extra) = spec.user_data.as_deref() else {
        return ours;
    };
    let boundary = loop {
        let mut b = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let candidate = format!("clawy-{}", hex::encode(b));
        if !extra.contains(&candidate) {
            break candidate;
        }
    };
    let extra_type = if extra.starts_with("#!") {
        "text/x-shellscript"
    } else {
        "text/cloud-config"
    };
    let mut m = String::new();
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n"
    ));
    m.push_str(&format!(
        "--{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nContent-Disposition: attachment; filename=\"clawy.cfg\"\n\n{ours}\n"
    ));
    m.push_str(&format!(
        "--{boundary}\nContent-Type: {extra_type}; charset=\"utf-8\"\nContent-Disposition: attachment; filename=\"user-data\"\n\n{extra}\n"
    ));
    m.push_str(&format!("--{boundary}--\n"));
    m
}

/// network-config v2 in exactly the shape the test guest parses (plus
/// `nameservers:` when the agent is configured with DNS servers).
pub fn network_config(
    spec: &VmSpec,
    gateway: Ipv4Addr,
    prefix_len: u8,
    nameservers: &[Ipv4Addr],
) -> String {
    let mut out = format!(
        "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{mac}\"\n    set-name: eth0\n    addresses:\n      - {ip}/{prefix_len}\n    routes:\n      - to: 0.0.0.0/0\n        via: {gateway}\n",
        mac = spec.mac.to_ascii_lowercase(),
        ip = spec.private_ip,
    );
    if !nameservers.is_empty() {
        out.push_str("    nameservers:\n      addresses:\n");
        for ns in nameservers {
            out.push_str(&format!("        - {ns}\n"));
        }
    }
    out
}

/// Gateway for a VM: the configured subnet's `.1`, or the `.1` of the VM's /24.
pub fn default_gateway(spec: &VmSpec) -> Result<Ipv4Addr, SeedError> {
    let ip: Ipv4Addr = spec.private_ip.parse().map_err(|_| SeedError::BadIp)?;
    let [a, b, c, _] = ip.octets();
    Ok(Ipv4Addr::new(a, b, c, 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clawy_proto::agent::PortForward;

    fn spec() -> VmSpec {
        VmSpec {
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 1,
            base_image: "img.qcow2".into(),
            mac: "52:54:00:AA:BB:CC".into(),
            private_ip: "10.42.0.10".into(),
            hostname: "vm-a".into(),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7 me@host".into()],
            user_data: None,
            port_forwards: Vec::<PortForward>::new(),
            public_hostname: None,
        }
    }

    #[test]
    fn network_config_has_the_agreed_shape() {
        let s = spec();
        let nc = network_config(&s, default_gateway(&s).unwrap(), 24, &[]);
        assert_eq!(
            nc,
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"52:54:00:aa:bb:cc\"\n    set-name: eth0\n    addresses:\n      - 10.42.0.10/24\n    routes:\n      - to: 0.0.0.0/0\n        via: 10.42.0.1\n"
        );
    }

    #[test]
    fn nameservers_are_appended_when_configured() {
        let s = spec();
        let dns = [Ipv4Addr::new(10, 42, 0, 1), Ipv4Addr::new(9, 9, 9, 9)];
        let nc = network_config(&s, default_gateway(&s).unwrap(), 24, &dns);
        assert!(nc.ends_with(
            "        via: 10.42.0.1\n    nameservers:\n      addresses:\n        - 10.42.0.1\n        - 9.9.9.9\n"
        ));
    }

    #[test]
    fn auth_4_user_data_is_key_only() {
        let ud = user_data(&spec());
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(ud.contains("ssh_pwauth: false"));
        assert!(ud.contains("disable_root: true"));
        assert!(ud.contains("lock_passwd: true"));
        assert!(ud.contains("      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7 me@host\n"));
    }

    #[test]
    fn extra_user_data_becomes_a_second_mime_part() {
        let mut s = spec();
        s.user_data = Some("#!/bin/sh\necho hi\n".into());
        let ud = user_data(&s);
        assert!(ud.starts_with("Content-Type: multipart/mixed; boundary=\""));
        let cc = ud.find("Content-Type: text/cloud-config").unwrap();
        let sh = ud.find("Content-Type: text/x-shellscript").unwrap();
        assert!(cc < sh);
        assert!(ud.contains("#!/bin/sh\necho hi\n"));
        s.user_data = Some("runcmd: [ls]\n".into());
        assert_eq!(user_data(&s).matches("text/cloud-config").count(), 2);
    }

    #[test]
    fn render_gives_the_three_files() {
        let s = spec();
        let ctx = SeedContext {
            gateway: default_gateway(&s).unwrap(),
            prefix_len: 24,
            nameservers: vec![],
        };
        let f = render(&VmId::parse("vm-a").unwrap(), &s, &ctx).unwrap();
        assert_eq!(f.meta_data, "instance-id: vm-a\nlocal-hostname: vm-a\n");
        assert_eq!(f.user_data, user_data(&s));
        assert_eq!(f.network_config, network_config(&s, ctx.gateway, 24, &[]));
    }
}
