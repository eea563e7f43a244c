//! The host side of the VMs' network (ISO-3, NET-3, NET-5): a bridge with the
//! private gateway address, one tap per VM with bridge port isolation, and the
//! agent's own nftables tables (NAT, L3 filter, L2 anti-spoofing, port forwards).
//!
//! Everything shells out to `ip`, `bridge`, `sysctl` and `nft`, checks exit codes,
//! and only touches interfaces and tables whose names start with `clawy`, so the
//! agent coexists with the host's own firewall. Per-VM data lives only in nftables
//! sets and maps (never in rules), so the rule count is constant as VMs are added.
//! See docs/NETWORK.md.

mod config;
mod ruleset;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::process::Stdio;

use clawy_proto::agent::{PortForward, Protocol};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

pub use config::{
    CidrParseError, ConfigError, DEFAULT_BLOCKED, EgressAllow, Ipv4Cidr, MacAddr, MacParseError,
    NetworkConfig, PortRange, Subnet, Transport,
};
pub use ruleset::{AllowedPair, Elements, ForwardTarget, ParseError};

/// Every VM tap's name starts with this (and the bridge's must not).
pub const TAP_PREFIX: &str = "clawyt";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Port(String),
    #[error("{ip} is not a VM address in {subnet}")]
    AddressOutsideSubnet { ip: Ipv4Addr, subnet: Subnet },
    #[error("{what} {value} is already registered to interface {tap}")]
    AddressConflict {
        what: &'static str,
        value: String,
        tap: String,
    },
    #[error("host port {host_port}/{proto} is outside the forwardable range {range}")]
    PortOutOfRange {
        proto: &'static str,
        host_port: u16,
        range: PortRange,
    },
    #[error("guest port 0 is not a port (host port {host_port}/{proto})")]
    InvalidGuestPort { proto: &'static str, host_port: u16 },
    #[error("host port {host_port}/{proto} appears twice in the request")]
    DuplicatePort { proto: &'static str, host_port: u16 },
    #[error("host port {host_port}/{proto} is already forwarded to {owner}")]
    PortConflict {
        proto: &'static str,
        host_port: u16,
        owner: Ipv4Addr,
    },
}

/// One live port forward as the agent's maps hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForwardEntry {
    pub protocol: Protocol,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub guest_port: u16,
}

/// The agent's handle on the host network. Cheap to share behind an `Arc`; all
/// changes are serialized by an internal lock.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    netns: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Mirror of the elements in nftables (the agent is their only writer); loaded
    /// from nftables by `ensure_host` so a restarted agent keeps running VMs' data.
    elements: Elements,
    loaded: bool,
    /// VM id → addresses it was given forwards for (to find them on removal).
    vm_ips: HashMap<String, BTreeSet<Ipv4Addr>>,
}

impl Network {
    /// Validates the config; touches nothing yet.
    pub fn new(cfg: NetworkConfig) -> Result<Self, NetworkError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            netns: None,
            state: Mutex::new(State::default()),
        })
    }

    /// Same as `new`, but every command runs inside the named network namespace
    /// (`ip netns exec`): for tests and the benchmark, which build throwaway hosts.
    pub fn in_netns(cfg: NetworkConfig, netns: impl Into<String>) -> Result<Self, NetworkError> {
        let mut n = Self::new(cfg)?;
        n.netns = Some(netns.into());
        Ok(n)
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The host's address on the bridge (the VMs' default gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        self.cfg.subnet.gateway()
    }

    /// Deterministic tap name for a VM: `clawyt` + 9 hex digits of SHA-256(id),
    /// 15 characters (the kernel's limit).
    pub fn tap_name(vm_id: &str) -> String {
        let digest = Sha256::digest(vm_id.as_bytes());
        let hex = hex::encode(digest);
        format!(
            "{TAP_PREFIX}{}",
            &hex[..config::IFNAME_MAX - TAP_PREFIX.len()]
        )
    }

    /// Creates the bridge (gateway address, up) if missing, enables IPv4 forwarding
    /// in this network namespace, and loads the whole ruleset atomically, keeping
    /// the elements already in nftables (VMs survive an agent restart). Idempotent.
    pub async fn ensure_host(&self) -> Result<(), NetworkError> {
        let mut st = self.state.lock().await;
        let br = self.cfg.bridge.as_str();
        if !self.link_exists(br).await? {
            self.run("ip", &["link", "add", "name", br, "type", "bridge"])
                .await?;
        }
        let gw = format!("{}/{}", self.gateway(), Subnet::PREFIX_LEN);
        self.run("ip", &["addr", "replace", &gw, "dev", br]).await?;
        // VMs get no IPv6: the host has no IPv6 address on their network, so it
        // sends them no router advertisements, DHCPv6 or neighbour discovery.
        self.disable_ipv6(br).await?;
        // The shown SSH command used on the host itself through a loopback address
        // (`ssh -p 22000 claw@127.0.0.1` on `clawy up`) is DNATed to a VM; the
        // kernel routes a 127/8-sourced packet (and its reply) through an interface
        // only with route_localnet on it. Only on our own bridge: the input chain
        // drops everything from the bridge but the gateway's VM ports, so a VM
        // gains no path to the host's loopback services from it.
        let localnet = format!("net/ipv4/conf/{br}/route_localnet=1");
        self.run("sysctl", &["-qw", &localnet]).await?;
        self.run("ip", &["link", "set", "dev", br, "up"]).await?;
        self.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .await?;
        if !self.link_exists(&self.cfg.uplink).await? {
            // Rules match the uplink by name, so they start working when it appears.
            tracing::warn!(uplink = %self.cfg.uplink, "uplink interface does not exist (yet)");
        }

        let existing = self.read_elements().await?;
        if st.loaded {
            // Our mirror is authoritative; nftables may have lost the tables (e.g.
            // someone ran `nft flush ruleset`): restore them from the mirror.
            st.elements.allowed.extend(existing.allowed);
            for (k, v) in existing.fwd_tcp {
                st.elements.fwd_tcp.entry(k).or_insert(v);
            }
            for (k, v) in existing.fwd_udp {
                st.elements.fwd_udp.entry(k).or_insert(v);
            }
        } else {
            st.elements = existing;
            st.loaded = true;
        }
        let script = ruleset::render(&self.cfg, &st.elements);
        self.nft_script(&script).await?;
        tracing::info!(
            bridge = br,
            subnet = %self.cfg.subnet,
            uplink = %self.cfg.uplink,
            vms = st.elements.allowed.len(),
            "host network ensured"
        );
        Ok(())
    }

    /// Creates the VM's tap (if missing), attaches it to the bridge as an isolated
    /// port and registers its only allowed (MAC, IP) source pair. Idempotent;
    /// changing the MAC or IP replaces the registration. Returns the tap's name.
    pub async fn ensure_tap(
        &self,
        vm_id: &str,
        mac: MacAddr,
        ip: Ipv4Addr,
    ) -> Result<String, NetworkError> {
        let tap = Self::tap_name(vm_id);
        self.register(&tap, mac, ip, true).await?;
        Ok(tap)
    }

    /// A tap the hypervisor created and joined to the bridge (Proxmox VE's
    /// `tap<vmid>i0`): until this runs it can send nothing at all (an unregistered
    /// port, see docs/NETWORK.md); this isolates the port and registers its only
    /// allowed (MAC, IP) pair. Idempotent. The tap must already be a port of the
    /// Clawy bridge: a name on another bridge is refused.
    pub async fn register_hypervisor_tap(
        &self,
        tap: &str,
        mac: MacAddr,
        ip: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        config::validate_ifname("hypervisor tap", tap)?;
        if tap.starts_with(TAP_PREFIX) {
            return Err(NetworkError::Port(format!(
                "`{tap}`: hypervisor taps may not use the agent's own prefix {TAP_PREFIX}"
            )));
        }
        self.register(tap, mac, ip, false).await
    }

    async fn register(
        &self,
        tap: &str,
        mac: MacAddr,
        ip: Ipv4Addr,
        create: bool,
    ) -> Result<(), NetworkError> {
        self.check_vm_ip(ip)?;
        let tap = tap.to_string();
        let mut st = self.loaded_state().await?;
        if let Some(other) = st
            .elements
            .allowed
            .iter()
            .find(|a| a.tap != tap && (a.ip == ip || a.mac == mac))
        {
            let (what, value) = if other.ip == ip {
                ("address", ip.to_string())
            } else {
                ("MAC", mac.to_string())
            };
            return Err(NetworkError::AddressConflict {
                what,
                value,
                tap: other.tap.clone(),
            });
        }
        if create {
            if !self.link_exists(&tap).await? {
                self.run("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"])
                    .await?;
            }
            self.run(
                "ip",
                &["link", "set", "dev", &tap, "master", &self.cfg.bridge],
            )
            .await?;
        } else if self.master_of(&tap).await?.as_deref() != Some(self.cfg.bridge.as_str()) {
            return Err(NetworkError::Port(format!(
                "`{tap}` is not a port of {}",
                self.cfg.bridge
            )));
        }
        // ISO-3 (L2): isolated bridge ports cannot exchange frames with each other,
        // only with the bridge itself (the gateway).
        self.run("bridge", &["link", "set", "dev", &tap, "isolated", "on"])
            .await?;
        // No IPv6 from the host straight out of the tap either (bridge ports get
        // link-local addresses of their own otherwise).
        self.disable_ipv6(&tap).await?;
        self.run("ip", &["link", "set", "dev", &tap, "up"]).await?;

        let wanted = AllowedPair {
            tap: tap.clone(),
            mac,
            ip,
        };
        let stale: Vec<AllowedPair> = st
            .elements
            .allowed
            .iter()
            .filter(|a| a.tap == tap && **a != wanted)
            .cloned()
            .collect();
        if !stale.is_empty() || !st.elements.allowed.contains(&wanted) {
            let l2 = ruleset::l2_table(&self.cfg);
            let mut script = delete_pairs_script(&l2, &stale);
            script.push_str(&format!(
                "add element bridge {l2} allowed {{ \"{tap}\" . {mac} . {ip} }}\n\
                 add element bridge {l2} vm_macs {{ {mac} }}\n\
                 add element bridge {l2} vm_ports {{ \"{tap}\" }}\n"
            ));
            self.nft_script(&script).await?;
            for a in &stale {
                st.elements.allowed.remove(a);
            }
            st.elements.allowed.insert(wanted);
        }
        Ok(())
    }

    /// The port `ip` is registered to, if any.
    pub async fn port_of(&self, ip: Ipv4Addr) -> Result<Option<String>, NetworkError> {
        let st = self.loaded_state().await?;
        Ok(st
            .elements
            .allowed
            .iter()
            .find(|a| a.ip == ip)
            .map(|a| a.tap.clone()))
    }

    /// The bridge a link is a port of, if any.
    async fn master_of(&self, link: &str) -> Result<Option<String>, NetworkError> {
        if !self.link_exists(link).await? {
            return Ok(None);
        }
        let out = self.run("ip", &["-o", "link", "show", "dev", link]).await?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "master")
            .nth(1)
            .map(str::to_string))
    }

    /// Removes the VM's tap and its anti-spoof registration (its forwards stay;
    /// see `remove_vm`). Idempotent.
    pub async fn remove_tap(&self, vm_id: &str) -> Result<(), NetworkError> {
        let mut st = self.loaded_state().await?;
        self.remove_tap_locked(&mut st, &Self::tap_name(vm_id))
            .await
    }

    /// Replaces the VM's inbound forwards (NET-5) with exactly `forwards`, all to
    /// `ip`. Host ports must lie in `ssh_port_range` and not be forwarded to another
    /// address. Only map elements change, in one nft transaction.
    pub async fn set_port_forwards(
        &self,
        vm_id: &str,
        ip: Ipv4Addr,
        forwards: &[PortForward],
    ) -> Result<(), NetworkError> {
        self.check_vm_ip(ip)?;
        let range = self.cfg.ssh_port_range;
        let mut wanted: BTreeSet<ForwardEntry> = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for f in forwards {
            let proto = ruleset::proto_name(f.protocol);
            if !range.contains(f.host_port) {
                return Err(NetworkError::PortOutOfRange {
                    proto,
                    host_port: f.host_port,
                    range,
                });
            }
            if f.guest_port == 0 {
                return Err(NetworkError::InvalidGuestPort {
                    proto,
                    host_port: f.host_port,
                });
            }
            if !seen.insert((f.protocol, f.host_port)) {
                return Err(NetworkError::DuplicatePort {
                    proto,
                    host_port: f.host_port,
                });
            }
            wanted.insert(ForwardEntry {
                protocol: f.protocol,
                host_port: f.host_port,
                ip,
                guest_port: f.guest_port,
            });
        }
        let mut st = self.loaded_state().await?;
        for w in &wanted {
            if let Some(cur) = st.elements.fwd(w.protocol).get(&w.host_port) {
                if cur.ip != ip {
                    return Err(NetworkError::PortConflict {
                        proto: ruleset::proto_name(w.protocol),
                        host_port: w.host_port,
                        owner: cur.ip,
                    });
                }
            }
        }
        let mut ips = st.vm_ips.get(vm_id).cloned().unwrap_or_default();
        ips.insert(ip);
        let current: BTreeSet<ForwardEntry> = entries(&st.elements)
            .into_iter()
            .filter(|e| ips.contains(&e.ip))
            .collect();
        let remove: Vec<ForwardEntry> = current.difference(&wanted).copied().collect();
        let add: Vec<ForwardEntry> = wanted.difference(&current).copied().collect();
        self.apply_forwards(&mut st, &remove, &add).await?;
        st.vm_ips.insert(vm_id.to_owned(), BTreeSet::from([ip]));
        Ok(())
    }

    /// Removes everything the VM has on the host network: forwards, anti-spoof
    /// registration, tap. Idempotent.
    pub async fn remove_vm(&self, vm_id: &str) -> Result<(), NetworkError> {
        self.remove_vm_port(vm_id, &Self::tap_name(vm_id)).await
    }

    /// [`Network::remove_vm`] for a VM whose port is `tap` (a hypervisor's tap is
    /// unregistered but not deleted: the hypervisor owns it).
    pub async fn remove_vm_port(&self, vm_id: &str, tap: &str) -> Result<(), NetworkError> {
        let mut st = self.loaded_state().await?;
        let tap = tap.to_string();
        let mut ips = st.vm_ips.remove(vm_id).unwrap_or_default();
        ips.extend(
            st.elements
                .allowed
                .iter()
                .filter(|a| a.tap == tap)
                .map(|a| a.ip),
        );
        let remove: Vec<ForwardEntry> = entries(&st.elements)
            .into_iter()
            .filter(|e| ips.contains(&e.ip))
            .collect();
        self.apply_forwards(&mut st, &remove, &[]).await?;
        self.remove_tap_locked(&mut st, &tap).await
    }

    /// The forwards as nftables holds them now.
    pub async fn forwards(&self) -> Result<Vec<ForwardEntry>, NetworkError> {
        let elements = self.read_elements().await?;
        Ok(entries(&elements))
    }

    /// Number of rules in the agent's tables (constant as VMs/forwards are added).
    pub async fn rule_count(&self) -> Result<usize, NetworkError> {
        let mut n = 0;
        for (family, table) in self.tables() {
            if let Some(json) = self.nft_list(family, &table).await? {
                n += ruleset::count_rules(&json)?;
            }
        }
        Ok(n)
    }

    /// Deletes the agent's tables, taps and bridge; nothing else (the host's own
    /// interfaces and firewall stay as they are; `ip_forward` is left as found).
    pub async fn teardown(&self) -> Result<(), NetworkError> {
        let mut st = self.state.lock().await;
        self.nft_script(&ruleset::render_delete(&self.cfg)).await?;
        for name in self.owned_links().await? {
            self.run("ip", &["link", "del", "dev", &name]).await?;
        }
        *st = State::default();
        tracing::info!(bridge = %self.cfg.bridge, "host network torn down");
        Ok(())
    }

    // ---- internals ----

    fn tables(&self) -> [(&'static str, String); 2] {
        [
            ("inet", self.cfg.table.clone()),
            ("bridge", ruleset::l2_table(&self.cfg)),
        ]
    }

    fn check_vm_ip(&self, ip: Ipv4Addr) -> Result<(), NetworkError> {
        if self.cfg.subnet.is_vm_address(ip) {
            Ok(())
        } else {
            Err(NetworkError::AddressOutsideSubnet {
                ip,
                subnet: self.cfg.subnet,
            })
        }
    }

    /// The state lock, with the mirror loaded from nftables on first use.
    async fn loaded_state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, NetworkError> {
        let mut st = self.state.lock().await;
        if !st.loaded {
            st.elements = self.read_elements().await?;
            st.loaded = true;
        }
        Ok(st)
    }

    async fn remove_tap_locked(&self, st: &mut State, tap: &str) -> Result<(), NetworkError> {
        let stale: Vec<AllowedPair> = st
            .elements
            .allowed
            .iter()
            .filter(|a| a.tap == tap)
            .cloned()
            .collect();
        if !stale.is_empty() {
            let l2 = ruleset::l2_table(&self.cfg);
            self.nft_script(&delete_pairs_script(&l2, &stale)).await?;
            for a in &stale {
                st.elements.allowed.remove(a);
            }
        }
        if tap.starts_with(TAP_PREFIX) && self.link_exists(tap).await? {
            self.run("ip", &["link", "del", "dev", tap]).await?;
        }
        Ok(())
    }

    async fn apply_forwards(
        &self,
        st: &mut State,
        remove: &[ForwardEntry],
        add: &[ForwardEntry],
    ) -> Result<(), NetworkError> {
        if remove.is_empty() && add.is_empty() {
            return Ok(());
        }
        let t = &self.cfg.table;
        let mut script = String::new();
        // A changed guest port is a delete plus an add of the same key.
        for e in remove {
            script.push_str(&format!(
                "delete element inet {t} {} {{ {} }}\n",
                ruleset::fwd_map(e.protocol),
                e.host_port
            ));
        }
        for e in add {
            script.push_str(&format!(
                "add element inet {t} {} {{ {} : {} . {} }}\n",
                ruleset::fwd_map(e.protocol),
                e.host_port,
                e.ip,
                e.guest_port
            ));
        }
        self.nft_script(&script).await?;
        for e in remove {
            fwd_mut(&mut st.elements, e.protocol).remove(&e.host_port);
        }
        for e in add {
            fwd_mut(&mut st.elements, e.protocol).insert(
                e.host_port,
                ForwardTarget {
                    ip: e.ip,
                    port: e.guest_port,
                },
            );
        }
        Ok(())
    }

    async fn read_elements(&self) -> Result<Elements, NetworkError> {
        let [(fi, ti), (fb, tb)] = self.tables();
        let inet = self.nft_list(fi, &ti).await?.unwrap_or_default();
        let bridge = self.nft_list(fb, &tb).await?.unwrap_or_default();
        Ok(ruleset::parse_elements(&inet, &bridge)?)
    }

    /// `nft -j list table`, or None when the table does not exist.
    async fn nft_list(&self, family: &str, table: &str) -> Result<Option<String>, NetworkError> {
        match self
            .run("nft", &["-j", "-n", "list", "table", family, table])
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(NetworkError::Command { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `disable_ipv6` on one of our interfaces; a kernel without IPv6 needs nothing.
    async fn disable_ipv6(&self, ifname: &str) -> Result<(), NetworkError> {
        // The slash form keeps dots in interface names literal.
        let key = format!("net/ipv6/conf/{ifname}/disable_ipv6=1");
        match self.run("sysctl", &["-qw", &key]).await {
            Ok(_) => Ok(()),
            Err(NetworkError::Command { stderr, .. })
                if stderr.contains("No such file or directory")
                    || stderr.contains("cannot stat") =>
            {
                tracing::debug!(ifname, "no IPv6 in this kernel; nothing to disable");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn link_exists(&self, name: &str) -> Result<bool, NetworkError> {
        match self.run("ip", &["link", "show", "dev", name]).await {
            Ok(_) => Ok(true),
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("does not exist") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Our taps (by prefix) and our bridge, taps first.
    async fn owned_links(&self) -> Result<Vec<String>, NetworkError> {
        let json = self.run("ip", &["-j", "link", "show"]).await?;
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| ParseError(format!("ip -j link: {e}")))?;
        let mut taps = Vec::new();
        let mut bridge = None;
        for link in v.as_array().into_iter().flatten() {
            let Some(name) = link.get("ifname").and_then(|n| n.as_str()) else {
                continue;
            };
            if name.starts_with(TAP_PREFIX) {
                taps.push(name.to_owned());
            } else if name == self.cfg.bridge {
                bridge = Some(name.to_owned());
            }
        }
        taps.extend(bridge);
        Ok(taps)
    }

    async fn nft_script(&self, script: &str) -> Result<(), NetworkError> {
        self.run_with_stdin("nft", &["-f", "-"], Some(script))
            .await
            .map(|_| ())
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, NetworkError> {
        self.run_with_stdin(program, args, None).await
    }

    async fn run_with_stdin(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NetworkError> {
        let mut argv: Vec<&str> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()]);
        }
        argv.push(program);
        argv.extend_from_slice(args);
        let command = argv.join(" ");
        let mut cmd = tokio::process::Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |source| NetworkError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            tracing::debug!(%command, %stderr, "network command failed");
            return Err(NetworkError::Command {
                command,
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// nft commands removing anti-spoof pairs and their MACs from the bridge table.
fn delete_pairs_script(l2: &str, pairs: &[AllowedPair]) -> String {
    let mut script = String::new();
    for a in pairs {
        script.push_str(&format!(
            "delete element bridge {l2} allowed {{ \"{}\" . {} . {} }}\n",
            a.tap, a.mac, a.ip
        ));
    }
    let macs: BTreeSet<MacAddr> = pairs.iter().map(|a| a.mac).collect();
    for mac in macs {
        script.push_str(&format!("delete element bridge {l2} vm_macs {{ {mac} }}\n"));
    }
    let ports: BTreeSet<&str> = pairs.iter().map(|a| a.tap.as_str()).collect();
    for port in ports {
        script.push_str(&format!(
            "delete element bridge {l2} vm_ports {{ \"{port}\" }}\n"
        ));
    }
    script
}

fn entries(e: &Elements) -> Vec<ForwardEntry> {
    let mut out = Vec::new();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for (hp, to) in e.fwd(proto) {
            out.push(ForwardEntry {
                protocol: proto,
                host_port: *hp,
                ip: to.ip,
                guest_port: to.port,
            });
        }
    }
    out
}

fn fwd_mut(
    e: &mut Elements,
    proto: Protocol,
) -> &mut std::collections::BTreeMap<u16, ForwardTarget> {
    match proto {
        Protocol::Tcp => &mut e.fwd_tcp,
        Protocol::Udp => &mut e.fwd_udp,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tap_names_are_deterministic_short_and_prefixed() {
        let a = Network::tap_name("vm-a");
        assert_eq!(a, Network::tap_name("vm-a"));
        assert_ne!(a, Network::tap_name("vm-b"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(TAP_PREFIX));
        assert!(a[TAP_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn new_validates_config() {
        let mut cfg = NetworkConfig::new("10.1.2.0/24".parse().unwrap(), "eth0");
        cfg.bridge = "br0".into();
        let err = Network::new(cfg).unwrap_err();
        assert!(err.to_string().contains("network.bridge"), "{err}");
    }

    #[tokio::test]
    async fn net_5_forward_validation_happens_before_any_command() {
        // A netns that does not exist: any command would fail, so these errors
        // prove validation runs first.
        let cfg = NetworkConfig::new("10.1.2.0/24".parse().unwrap(), "eth0");
        let net = Network::in_netns(cfg, "clawy-does-not-exist").unwrap();
        let ip = Ipv4Addr::new(10, 1, 2, 5);
        let fw = |h, g| PortForward {
            protocol: Protocol::Tcp,
            host_port: h,
            guest_port: g,
        };
        assert!(matches!(
            net.set_port_forwards("a", ip, &[fw(80, 22)]).await,
            Err(NetworkError::PortOutOfRange { host_port: 80, .. })
        ));
        assert!(matches!(
            net.set_port_forwards("a", ip, &[fw(22001, 22), fw(22001, 23)])
                .await,
            Err(NetworkError::DuplicatePort {
                host_port: 22001,
                ..
            })
        ));
        assert!(matches!(
            net.set_port_forwards("a", ip, &[fw(22001, 0)]).await,
            Err(NetworkError::InvalidGuestPort { .. })
        ));
        assert!(matches!(
            net.set_port_forwards("a", Ipv4Addr::new(10, 1, 3, 5), &[])
                .await,
            Err(NetworkError::AddressOutsideSubnet { .. })
        ));
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        assert!(matches!(
            net.ensure_tap("a", mac, Ipv4Addr::new(10, 1, 2, 1)).await,
            Err(NetworkError::AddressOutsideSubnet { .. })
        ));
    }
}
