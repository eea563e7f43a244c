//! The one cloud-init NoCloud seed generator every driver uses (`meta-data`,
//! `user-data`, `network-config`). Pure: no I/O, no clock; the drivers write the
//! files (the qemu driver into an ISO, Proxmox VE into its cicustom snippets).
//!
//! What the user-data writes is the image's contract,
//! `guest/openclaw-image/CONTRACT.md`: the owner's user `claw` (keys, sudo, no
//! password), the sshd drop-in (AUTH-4), the fail2ban thresholds (NET-2), the UFW
//! rule opening the gateway port to the edge's address only (NET-1), the gateway's
//! config with the owner's secrets (DATA-5), the heartbeat's config (ACCESS-2), and
//! the `config-applied` marker last. The busybox stand-in reads only the key lines
//! and an optional `#!/bin/sh` part.
//!
//! Hostile input cannot reach YAML syntax: every value was validated by
//! `crate::spec` (hostname, id, keys, MAC, IP) or is ours, and every file's content
//! is written base64-encoded (`encoding: b64`), so what a secret or a key comment
//! holds never becomes YAML. Extra user data is never spliced into our YAML: it is
//! a separate MIME part.

use std::net::Ipv4Addr;

use base64::Engine as _;
use clawy_proto::agent::{GATEWAY_PORT, GuestSecrets, VmSpec};
use rand::RngCore;

use crate::spec::VmId;

/// The owner's login user on every guest; the SSH command the platform shows names it.
pub use clawy_proto::agent::GUEST_USER as OWNER_USER;

/// Where the guest's marker says the seed's configuration was applied (CONTRACT.md).
pub const CONFIG_APPLIED_MARKER: &str = "/var/lib/clawy/config-applied";

/// NET-2: fail2ban's `sshd` jail, as documented on /security and in GUEST-IMAGE.md.
pub const FAIL2BAN_MAXRETRY: u32 = 5;
pub const FAIL2BAN_FINDTIME: &str = "10m";
pub const FAIL2BAN_BANTIME: &str = "10m";

/// The three files of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

/// Where the guest sends its heartbeat, and the VM's own token (ACCESS-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatTarget {
    pub port: u16,
    pub token: String,
}

/// What the seed needs besides the spec: the host side of the VM's network and, on
/// first delivery only, the owner's secrets (DATA-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedContext {
    /// The host's bridge address: the VM's default gateway, the edge's source
    /// address (NET-1: the only address UFW lets reach the gateway port) and the
    /// heartbeat receiver's address.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// DNS servers for the guest (none by default).
    pub nameservers: Vec<Ipv4Addr>,
    /// `None`: no heartbeat receiver (the guest's reporter waits for a config).
    pub heartbeat: Option<HeartbeatTarget>,
    /// `None`: a secret-free seed (after delivery, or none were handed over).
    pub secrets: Option<GuestSecrets>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    #[error("private_ip is not an IPv4 address")]
    BadIp,
    #[error("prefix length {0} is not 8..=30")]
    BadPrefix(u8),
}

/// The seed for `id` with `spec`.
pub fn render(id: &VmId, spec: &VmSpec, ctx: &SeedContext) -> Result<SeedFiles, SeedError> {
    let _: Ipv4Addr = spec.private_ip.parse().map_err(|_| SeedError::BadIp)?;
    if !(8..=30).contains(&ctx.prefix_len) {
        return Err(SeedError::BadPrefix(ctx.prefix_len));
    }
    let gateway = ctx.gateway;
    Ok(SeedFiles {
        meta_data: meta_data(id.as_str(), spec),
        user_data: user_data(spec, gateway, ctx),
        network_config: network_config(spec, gateway, ctx.prefix_len, &ctx.nameservers),
    })
}

/// The `.1` of the VM's /24: the gateway when the agent manages no network.
pub fn default_gateway(spec: &VmSpec) -> Result<Ipv4Addr, SeedError> {
    let ip: Ipv4Addr = spec.private_ip.parse().map_err(|_| SeedError::BadIp)?;
    let [a, b, c, _] = ip.octets();
    Ok(Ipv4Addr::new(a, b, c, 1))
}

fn meta_data(vm_id: &str, spec: &VmSpec) -> String {
    format!("instance-id: {vm_id}\nlocal-hostname: {}\n", spec.hostname)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn write_file(out: &mut String, path: &str, owner: &str, mode: &str, content: &str) {
    out.push_str(&format!(
        "  - path: {path}\n    owner: {owner}\n    permissions: \"{mode}\"\n    encoding: b64\n    content: \"{}\"\n",
        b64(content)
    ));
}

/// AUTH-4: the platform's sshd drop-in; it sorts before the image's own, and sshd
/// keeps the first value it reads.
fn sshd_dropin() -> String {
    "# Written by Clawy's seed (AUTH-4): keys only, no root.\n\
     PasswordAuthentication no\n\
     KbdInteractiveAuthentication no\n\
     PermitRootLogin no\n\
     AuthenticationMethods publickey\n"
        .to_string()
}

/// NET-2: the `sshd` jail's thresholds (the image's journal backend kept).
fn fail2ban_jail() -> String {
    format!(
        "# Written by Clawy's seed (NET-2).\n[sshd]\nenabled = true\nbackend = systemd\n\
         maxretry = {FAIL2BAN_MAXRETRY}\nfindtime = {FAIL2BAN_FINDTIME}\nbantime = {FAIL2BAN_BANTIME}\n"
    )
}

/// The gateway's config (CONTRACT.md): local mode, the fixed port, reachable from
/// the edge (`lan`; UFW admits only the edge's address), token auth, Telegram when
/// the owner gave a bot token.
///
/// Hardening that `openclaw security audit` asks for on a non-loopback bind (the
/// gateway-on-host test runs it against this exact output): the Control UI accepts
/// browser origins of the instance's public name and of an SSH tunnel only; the
/// edge is the one trusted proxy, so the failed-auth limiter counts each client's
/// own address (from the edge's `X-Forwarded-For`), not the edge's, and one
/// attacker cannot lock the owner out.
pub fn openclaw_config(
    secrets: &GuestSecrets,
    edge: Ipv4Addr,
    public_hostname: Option<&str>,
) -> String {
    let mut origins: Vec<String> = public_hostname
        .map(|h| format!("https://{h}"))
        .into_iter()
        .collect();
    // `ssh -L 18789:127.0.0.1:18789` then http://localhost:18789 in a browser.
    origins.push(format!("http://localhost:{GATEWAY_PORT}"));
    origins.push(format!("http://127.0.0.1:{GATEWAY_PORT}"));
    let mut cfg = serde_json::json!({
        "gateway": {
            "mode": "local",
            "port": GATEWAY_PORT,
            "bind": "lan",
            "auth": {
                "mode": "token",
                "token": secrets.gateway_token,
                "rateLimit": {
                    "maxAttempts": GATEWAY_AUTH_MAX_ATTEMPTS,
                    "windowMs": 60_000,
                    "lockoutMs": 300_000,
                },
            },
            "trustedProxies": [edge.to_string()],
            "controlUi": {"allowedOrigins": origins},
        }
    });
    if let Some(bot) = &secrets.telegram_bot_token {
        cfg["channels"] = serde_json::json!({
            "telegram": {"enabled": true, "botToken": bot, "dmPolicy": "pairing"}
        });
    }
    let mut s = serde_json::to_string_pretty(&cfg).unwrap_or_default();
    s.push('\n');
    s
}

/// Failed gateway-token attempts per client address and minute before a 5-minute
/// lockout (OpenClaw's `gateway.auth.rateLimit`).
pub const GATEWAY_AUTH_MAX_ATTEMPTS: u32 = 10;

/// `~openclaw/.openclaw/.env`: the model-provider key under its provider's variable.
pub fn openclaw_env(secrets: &GuestSecrets) -> Option<String> {
    let key = secrets.model_key.as_ref()?;
    Some(format!("{}={}\n", key.provider.env_var(), key.key))
}

fn heartbeat_config(agent: Ipv4Addr, hb: &HeartbeatTarget) -> String {
    let mut s = serde_json::json!({
        "agent_address": agent.to_string(),
        "agent_port": hb.port,
        "token": hb.token,
    })
    .to_string();
    s.push('\n');
    s
}

/// `text` as a YAML double-quoted scalar. Only for text already free of control
/// and line-separator characters (validated specs): then escaping `\` and `"` is
/// all YAML 1.1 and 1.2 need, and every other character stands for itself.
fn yaml_double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Our own cloud-config (CONTRACT.md, "What the seed writes").
fn cloud_config(spec: &VmSpec, gateway: Ipv4Addr, ctx: &SeedContext) -> String {
    let mut s = String::from("#cloud-config\n");
    s.push_str(&format!("hostname: {}\n", spec.hostname));
    s.push_str(&format!(
        "users:\n  - name: {OWNER_USER}\n    lock_passwd: true\n    shell: /bin/bash\n    groups: [sudo]\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n"
    ));
    if spec.ssh_authorized_keys.is_empty() {
        s.push_str("    ssh_authorized_keys: []\n");
    } else {
        s.push_str("    ssh_authorized_keys:\n");
        for k in &spec.ssh_authorized_keys {
            // AUTH-4: one validated line (crate::spec: no control or line-separator
            // characters) whose comment may hold quotes, backslashes, `: ` or `#`:
            // a double-quoted scalar with `\` and `"` escaped is exactly the key to
            // any YAML reader, and nothing in it can end the scalar. The stand-in
            // guest reads these lines the same way.
            s.push_str(&format!("      - {}\n", yaml_double_quoted(k)));
        }
    }
    // AUTH-4: key-only SSH, no root login, no password (the image ignores
    // set-passwords anyway; said here so no other image reads it differently).
    s.push_str("ssh_pwauth: false\ndisable_root: true\n");
    s.push_str("write_files:\n");
    write_file(
        &mut s,
        "/etc/ssh/sshd_config.d/50-clawy.conf",
        "root:root",
        "0644",
        &sshd_dropin(),
    );
    write_file(
        &mut s,
        "/etc/fail2ban/jail.d/50-clawy.conf",
        "root:root",
        "0644",
        &fail2ban_jail(),
    );
    if let Some(secrets) = &ctx.secrets {
        // DATA-5: the only way the owner's secrets enter the VM; 0600 to the
        // gateway's user.
        write_file(
            &mut s,
            "/var/lib/openclaw/.openclaw/openclaw.json",
            "openclaw:openclaw",
            "0600",
            &openclaw_config(secrets, gateway, spec.public_hostname.as_deref()),
        );
        if let Some(env) = openclaw_env(secrets) {
            write_file(
                &mut s,
                "/var/lib/openclaw/.openclaw/.env",
                "openclaw:openclaw",
                "0600",
                &env,
            );
        }
    }
    if let Some(hb) = &ctx.heartbeat {
        write_file(
            &mut s,
            "/etc/clawy/heartbeat.json",
            "root:root",
            "0600",
            &heartbeat_config(gateway, hb),
        );
    }
    if ctx.secrets.is_some() {
        // Last: the heartbeat reports `config_applied` once this exists, and the
        // platform then destroys the seed and its sealed copy.
        write_file(&mut s, CONFIG_APPLIED_MARKER, "root:root", "0644", "");
    }
    // NET-1: the gateway port from the edge's address only (the host's bridge
    // address), on top of the image's default deny + 22/tcp.
    s.push_str(&format!(
        "runcmd:\n  - [ufw, allow, proto, tcp, from, \"{gateway}\", to, any, port, \"{GATEWAY_PORT}\"]\n"
    ));
    s
}

/// user-data: our cloud-config alone, or a MIME multipart with the caller's data
/// as the second part (`text/x-shellscript` when it starts with `#!`).
fn user_data(spec: &VmSpec, gateway: Ipv4Addr, ctx: &SeedContext) -> String {
    let ours = cloud_config(spec, gateway, ctx);
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
fn network_config(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clawy_proto::agent::{ModelKey, ModelProvider, PortForward};

    const GW: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);

    fn spec() -> VmSpec {
        VmSpec {
            vcpus: 1,
            memory_mib: 2048,
            disk_gib: 4,
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

    fn secrets() -> GuestSecrets {
        GuestSecrets {
            gateway_token: "gwtok_0123456789abcdefghijklmnopqrstuv".into(),
            telegram_bot_token: Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ".into()),
            model_key: Some(ModelKey {
                provider: ModelProvider::Anthropic,
                key: "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345".into(),
            }),
        }
    }

    fn hb() -> HeartbeatTarget {
        HeartbeatTarget {
            port: 8790,
            token: "hbtok-abcdefghijklmnop0123456789".into(),
        }
    }

    fn id() -> VmId {
        VmId::parse("vm-a").unwrap()
    }

    fn ctx() -> SeedContext {
        SeedContext {
            gateway: GW,
            prefix_len: 24,
            nameservers: Vec::new(),
            heartbeat: None,
            secrets: None,
        }
    }

    fn render_with(s: &GuestSecrets, h: &HeartbeatTarget) -> SeedFiles {
        let c = SeedContext {
            heartbeat: Some(h.clone()),
            secrets: Some(s.clone()),
            ..ctx()
        };
        render(&id(), &spec(), &c).unwrap()
    }

    /// YAML -> JSON through python3-yaml (a dependency of Debian's cloud-init, which
    /// scripts/install-deps.sh installs for the schema check): the generator's output
    /// is read by a real YAML parser, not by string matching.
    fn yaml(text: &str) -> serde_json::Value {
        use std::io::Write as _;
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with yaml");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The `write_files` entries as (path, owner, mode, decoded content), in order.
    fn files(user_data: &str) -> Vec<(String, String, String, String)> {
        let doc = yaml(user_data);
        doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["encoding"].as_str(), Some("b64"));
                let content = base64::engine::general_purpose::STANDARD
                    .decode(f["content"].as_str().unwrap())
                    .unwrap();
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["owner"].as_str().unwrap().to_string(),
                    f["permissions"].as_str().unwrap().to_string(),
                    String::from_utf8(content).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn network_config_has_the_agreed_shape() {
        let nc = render(&id(), &spec(), &ctx()).unwrap().network_config;
        assert_eq!(
            nc,
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"52:54:00:aa:bb:cc\"\n    set-name: eth0\n    addresses:\n      - 10.42.0.10/24\n    routes:\n      - to: 0.0.0.0/0\n        via: 10.42.0.1\n"
        );
    }

    #[test]
    fn nameservers_are_appended_when_configured() {
        let dns = [Ipv4Addr::new(10, 42, 0, 1), Ipv4Addr::new(9, 9, 9, 9)];
        let c = SeedContext {
            nameservers: dns.to_vec(),
            ..ctx()
        };
        let nc = render(&id(), &spec(), &c).unwrap().network_config;
        assert!(nc.ends_with(
            "        via: 10.42.0.1\n    nameservers:\n      addresses:\n        - 10.42.0.1\n        - 9.9.9.9\n"
        ));
    }

    #[test]
    fn meta_data_names_the_instance() {
        let md = render(&id(), &spec(), &ctx()).unwrap().meta_data;
        assert_eq!(md, "instance-id: vm-a\nlocal-hostname: vm-a\n");
    }

    /// AUTH-4: comments as owners write them (quotes, backslashes, `: `, `#`, YAML
    /// indicators, non-ASCII) pass the agent's spec check and reach cloud-init's
    /// own YAML parser (PyYAML) byte for byte, as separate list items, with nothing
    /// added to the document.
    #[test]
    fn auth_4_hostile_key_comments_reach_cloud_init_exactly() {
        let blob =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7Qm6mPqvW7f7oH3nCkU0rj0Q9y0p1y4o2Y3k4l5m6";
        let comments = [
            "\"quoted\" it's 'single'",
            "back\\slash \\\" ends\\",
            "me@host: {evil: 1} # not a comment",
            "- [x] &anchor *alias !tag %p | > ` @",
            "ünïcödé ☃ 鍵 ключ",
            "plus+slash/equals= two  spaces",
        ];
        // Line breaks of any kind (and invisible direction overrides) never get
        // this far: the spec check refuses them.
        for bad in [
            "\"\nssh_pwauth: true",
            "a\rb",
            "a\u{2028}b",
            "a\u{85}b",
            "a\u{202E}b",
        ] {
            let mut sp = spec();
            sp.ssh_authorized_keys = vec![format!("{blob} {bad}")];
            assert!(crate::spec::validate_spec(&sp, None).is_err(), "{bad:?}");
        }
        let mut sp = spec();
        sp.ssh_authorized_keys = comments.iter().map(|c| format!("{blob} {c}")).collect();
        crate::spec::validate_spec(&sp, None).unwrap();
        let ud = render(&id(), &sp, &ctx()).unwrap().user_data;
        let doc = yaml(&ud);
        let keys: Vec<&str> = doc["users"][0]["ssh_authorized_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, sp.ssh_authorized_keys, "{ud}");
        assert_eq!(doc["users"].as_array().unwrap().len(), 1);
        assert_eq!(doc["ssh_pwauth"].as_bool(), Some(false), "{ud}");
        let plain = render(&id(), &spec(), &ctx()).unwrap().user_data;
        let top =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(top(&doc), top(&yaml(&plain)));
    }

    #[test]
    fn auth_4_owner_user_is_claw_with_keys_sudo_and_no_password() {
        let ud = render_with(&secrets(), &hb()).user_data;
        let doc = yaml(&ud);
        let users = doc["users"].as_array().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0]["name"].as_str(), Some("claw"));
        assert_eq!(users[0]["lock_passwd"].as_bool(), Some(true));
        assert_eq!(users[0]["sudo"].as_str(), Some("ALL=(ALL) NOPASSWD:ALL"));
        assert_eq!(
            users[0]["ssh_authorized_keys"][0].as_str(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7 me@host")
        );
        assert!(users[0].get("passwd").is_none() && users[0].get("plain_text_passwd").is_none());
        assert_eq!(doc["ssh_pwauth"].as_bool(), Some(false));
        assert_eq!(doc["disable_root"].as_bool(), Some(true));
        let f = files(&ud);
        let sshd = f
            .iter()
            .find(|f| f.0 == "/etc/ssh/sshd_config.d/50-clawy.conf")
            .unwrap();
        assert_eq!((sshd.1.as_str(), sshd.2.as_str()), ("root:root", "0644"));
        for line in [
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "AuthenticationMethods publickey",
        ] {
            assert!(sshd.3.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn net2_fail2ban_sshd_jail_with_the_documented_thresholds() {
        let f = files(&render_with(&secrets(), &hb()).user_data);
        let jail = f
            .iter()
            .find(|f| f.0 == "/etc/fail2ban/jail.d/50-clawy.conf")
            .unwrap();
        assert_eq!(
            jail.3,
            "# Written by Clawy's seed (NET-2).\n[sshd]\nenabled = true\nbackend = systemd\nmaxretry = 5\nfindtime = 10m\nbantime = 10m\n"
        );
    }

    #[test]
    fn net1_gateway_port_opens_to_the_edge_address_only() {
        let ud = render_with(&secrets(), &hb()).user_data;
        let doc = yaml(&ud);
        let runcmd = doc["runcmd"].as_array().unwrap();
        assert_eq!(runcmd.len(), 1, "no other port is opened");
        let argv: Vec<&str> = runcmd[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            argv,
            [
                "ufw",
                "allow",
                "proto",
                "tcp",
                "from",
                "10.42.0.1",
                "to",
                "any",
                "port",
                "18789"
            ]
        );
        assert!(!ud.contains("ufw, reset") && !ud.contains("ufw, disable"));
    }

    #[test]
    fn data5_secrets_go_into_0600_files_and_the_marker_comes_last() {
        let f = files(&render_with(&secrets(), &hb()).user_data);
        let cfg = f
            .iter()
            .find(|f| f.0 == "/var/lib/openclaw/.openclaw/openclaw.json")
            .unwrap();
        assert_eq!(
            (cfg.1.as_str(), cfg.2.as_str()),
            ("openclaw:openclaw", "0600")
        );
        let json: serde_json::Value = serde_json::from_str(&cfg.3).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "gateway": {"mode": "local", "port": 18789, "bind": "lan",
                    "auth": {"mode": "token", "token": "gwtok_0123456789abcdefghijklmnopqrstuv",
                        "rateLimit": {"maxAttempts": 10, "windowMs": 60000, "lockoutMs": 300000}},
                    "trustedProxies": ["10.42.0.1"],
                    "controlUi": {"allowedOrigins": ["http://localhost:18789", "http://127.0.0.1:18789"]}},
                "channels": {"telegram": {"enabled": true,
                    "botToken": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ", "dmPolicy": "pairing"}}
            })
        );
        let env = f
            .iter()
            .find(|f| f.0 == "/var/lib/openclaw/.openclaw/.env")
            .unwrap();
        assert_eq!(
            (env.1.as_str(), env.2.as_str()),
            ("openclaw:openclaw", "0600")
        );
        assert_eq!(
            env.3,
            "ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345\n"
        );
        let hb = f
            .iter()
            .find(|f| f.0 == "/etc/clawy/heartbeat.json")
            .unwrap();
        assert_eq!((hb.1.as_str(), hb.2.as_str()), ("root:root", "0600"));
        let hbj: serde_json::Value = serde_json::from_str(&hb.3).unwrap();
        assert_eq!(
            hbj,
            serde_json::json!({"agent_address": "10.42.0.1", "agent_port": 8790,
                "token": "hbtok-abcdefghijklmnop0123456789"})
        );
        let last = f.last().unwrap();
        assert_eq!(
            (
                last.0.as_str(),
                last.1.as_str(),
                last.2.as_str(),
                last.3.as_str()
            ),
            ("/var/lib/clawy/config-applied", "root:root", "0644", "")
        );
    }

    #[test]
    fn gateway_config_admits_the_public_origin_and_trusts_only_the_edge() {
        let cfg: serde_json::Value = serde_json::from_str(&openclaw_config(
            &secrets(),
            Ipv4Addr::new(10, 42, 0, 1),
            Some("anna.claws.example"),
        ))
        .unwrap();
        assert_eq!(
            cfg["gateway"]["controlUi"]["allowedOrigins"],
            serde_json::json!([
                "https://anna.claws.example",
                "http://localhost:18789",
                "http://127.0.0.1:18789"
            ])
        );
        assert_eq!(
            cfg["gateway"]["trustedProxies"],
            serde_json::json!(["10.42.0.1"])
        );
    }

    #[test]
    fn data5_a_seed_without_secrets_holds_no_gateway_config_and_no_marker() {
        let c = SeedContext {
            heartbeat: Some(hb()),
            ..ctx()
        };
        let ud = render(&id(), &spec(), &c).unwrap().user_data;
        let paths: Vec<String> = files(&ud).into_iter().map(|f| f.0).collect();
        assert_eq!(
            paths,
            [
                "/etc/ssh/sshd_config.d/50-clawy.conf",
                "/etc/fail2ban/jail.d/50-clawy.conf",
                "/etc/clawy/heartbeat.json"
            ]
        );
        // Telegram and the model key are optional: the gateway runs without them.
        let mut only_token = secrets();
        only_token.telegram_bot_token = None;
        only_token.model_key = None;
        let f = files(&render_with(&only_token, &hb()).user_data);
        let cfg = f.iter().find(|f| f.0.ends_with("openclaw.json")).unwrap();
        assert!(!cfg.3.contains("channels"));
        assert!(!f.iter().any(|f| f.0.ends_with(".env")));
    }

    #[test]
    fn extra_user_data_becomes_a_second_mime_part() {
        let mut s = spec();
        s.user_data = Some("#!/bin/sh\necho hi\n".into());
        let ud = render(&id(), &s, &ctx()).unwrap().user_data;
        assert!(ud.starts_with("Content-Type: multipart/mixed; boundary=\""));
        let cc = ud.find("Content-Type: text/cloud-config").unwrap();
        let sh = ud.find("Content-Type: text/x-shellscript").unwrap();
        assert!(cc < sh);
        assert!(ud.contains("#!/bin/sh\necho hi\n"));
        s.user_data = Some("runcmd: [ls]\n".into());
        let ud = render(&id(), &s, &ctx()).unwrap().user_data;
        assert_eq!(ud.matches("text/cloud-config").count(), 2);
    }

    #[test]
    fn bad_addresses_are_refused() {
        let mut s = spec();
        s.private_ip = "10.0.0.300".into();
        assert_eq!(render(&id(), &s, &ctx()).unwrap_err(), SeedError::BadIp);
        let c = SeedContext {
            prefix_len: 31,
            ..ctx()
        };
        assert_eq!(
            render(&id(), &spec(), &c).unwrap_err(),
            SeedError::BadPrefix(31)
        );
    }

    /// The generated user-data passes cloud-init's own schema check (Debian's
    /// `cloud-init` package, installed by scripts/install-deps.sh for this check
    /// only, its services masked).
    #[test]
    fn user_data_passes_cloud_init_schema() {
        let dir = tempfile::tempdir().unwrap();
        for (name, ud) in [
            ("full", render_with(&secrets(), &hb()).user_data),
            ("bare", render(&id(), &spec(), &ctx()).unwrap().user_data),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, &ud).unwrap();
            let out = std::process::Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&p)
                .output()
                .expect("cloud-init (scripts/install-deps.sh)");
            assert!(
                out.status.success(),
                "{name}: {}{}\n{ud}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
