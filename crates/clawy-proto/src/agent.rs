//! Wire types of the host agent's HTTPS API (`/v1/...`), shared by the agent, its
//! client and the control plane. No I/O and no validation beyond shape here: the
//! agent validates specs (`clawy_agent::spec`) and answers `invalid_spec` naming the
//! field.

use serde::{Deserialize, Serialize};

/// Current API version prefix.
pub const API_PREFIX: &str = "/v1";

/// The port the OpenClaw gateway listens on inside every guest; the agent's health
/// probe connects to it (ACCESS-2: health comes from probes of listening ports).
pub const GATEWAY_PORT: u16 = 18789;

/// The one timeout every other one derives from: the agent finishes or hands
/// back every request within this many seconds (a hypervisor task that is still
/// running then answers `busy`: the task goes on, and the same idempotent call
/// repeated later picks it up). The agent's graceful stop fits inside it, the
/// client waits [`CLIENT_TIMEOUT_SECS`], and the job runner backs off on `busy`.
pub const OPERATION_TIMEOUT_SECS: u64 = 120;

/// The agent client's whole-request timeout: the operation budget plus room for
/// the connection and the answer.
pub const CLIENT_TIMEOUT_SECS: u64 = OPERATION_TIMEOUT_SECS + 30;

/// Desired shape of one VM: `PUT /v1/vms/{id}` ensures the VM matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Dedicated vCPUs (ISO-2: never overcommitted).
    pub vcpus: u32,
    /// Dedicated memory in MiB (ISO-2: no ballooning).
    pub memory_mib: u64,
    /// Size of the VM's own disk in GiB (ISO-4: one overlay per VM).
    pub disk_gib: u64,
    /// Name of a base image in the agent's images directory (a name, never a path).
    pub base_image: String,
    /// MAC address of the VM's NIC, `52:54:00:xx:xx:xx` style.
    pub mac: String,
    /// Private IPv4 address inside the host's subnet.
    pub private_ip: String,
    /// Guest hostname (cloud-init `local-hostname`).
    pub hostname: String,
    /// SSH public keys installed by cloud-init (AUTH-4: key-only).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Extra cloud-init user data, appended as a second MIME part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Inbound port forwards from the host's uplink to this VM (NET-5).
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
    /// The instance's public hostname (issue 9): the name the host's edge serves
    /// over HTTPS and approves certificates for. `None`: no edge for this VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_hostname: Option<String>,
}

/// One inbound DNAT forward: `host_port` on the host's uplink → `guest_port` on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    #[serde(default)]
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// Observed state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Disk and seed exist; never started or not started since the agent defined it.
    Defined,
    Running,
    Paused,
    /// Stopped on request.
    Stopped,
    /// The hypervisor process went away without a stop request.
    Crashed,
}

/// Result of the host-side health probe of the guest's gateway port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    /// TCP connect to `private_ip:18789` succeeded.
    pub tcp_ok: bool,
    /// HTTP status of `GET /` on that port, if an HTTP answer came back.
    pub http_status: Option<u16>,
    /// Round-trip time of the probe in milliseconds.
    pub latency_ms: u64,
    /// RFC 3339 UTC time of the probe.
    pub checked_at: String,
}

/// Status of one VM as `GET /v1/vms/{id}` reports it (ACCESS-1 metadata only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    pub id: String,
    pub state: VmState,
    pub spec: VmSpec,
    /// Seconds since the hypervisor process started (running/paused only).
    pub uptime_secs: Option<u64>,
    /// CPU use since the previous status query, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the hypervisor process.
    pub memory_used_bytes: Option<u64>,
    pub disk_allocated_bytes: u64,
    /// Bytes the VM's disk overlay occupies on the host.
    pub disk_used_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    /// Name of the VM's tap interface, if it has a network.
    pub tap: Option<String>,
    /// Present when the VM is running and a probe was made.
    pub health: Option<HealthProbe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmList {
    pub vms: Vec<VmStatus>,
}

/// Resources: either a host's capacity or what is allocated of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// `GET /v1/host`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// Location label used by placement (DATA-2), e.g. `DE-fra1`.
    pub location: String,
    /// `qemu` or `proxmox`.
    pub driver: String,
    /// Accelerator in use: `kvm` or `tcg`.
    pub accelerator: String,
    /// What the machine has.
    pub cpu_cores: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// What the agent may hand out (ISO-2).
    pub capacity: Resources,
    /// What defined VMs hold.
    pub allocated: Resources,
    pub vm_count: u64,
    pub agent_version: String,
    /// The host's VM network, when the agent manages one: the control plane allocates
    /// private IPs and SSH forward ports from it. Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<HostNetwork>,
}

/// The VM network of one host, as the agent's `[network]` config defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetwork {
    /// The private /24, e.g. `10.77.3.0/24`.
    pub subnet: String,
    /// The host's address on the bridge (`.1`), the VMs' gateway.
    pub gateway: String,
    /// Inclusive host-port range SSH forwards are taken from, e.g. `[22000, 22999]`.
    pub ssh_port_range: [u16; 2],
}

/// Body of every error answer: `{"error":{"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    Conflict,
    InvalidSpec,
    CapacityExceeded,
    BadRequest,
    PayloadTooLarge,
    Timeout,
    /// Retryable: the VM is locked by a hypervisor task or the task outlived the
    /// request. Never a failure of the instance.
    Busy,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidSpec => "invalid_spec",
            ErrorCode::CapacityExceeded => "capacity_exceeded",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }
}

/// AUTH-4: the one rule for the comment of an SSH public key in a `VmSpec`, shared by
/// the control plane (which stores keys with a comment cleaned by
/// [`clean_ssh_key_comment`]) and the agent (which refuses anything else). The agent
/// writes the key unquoted into cloud-init YAML, so the comment may only hold
/// characters that cannot start YAML syntax.
pub fn is_safe_ssh_key_comment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'@' | b'.' | b'_' | b'-' | b'+' | b'=' | b'/' | b',' | b'(' | b')'
        )
}

/// True when every byte of `comment` passes [`is_safe_ssh_key_comment_byte`].
pub fn is_safe_ssh_key_comment(comment: &str) -> bool {
    comment.bytes().all(is_safe_ssh_key_comment_byte)
}

/// The comment with every character the agent would refuse dropped (and runs of
/// spaces collapsed, ends trimmed), at most 100 bytes: what the control plane stores,
/// so a key it accepted can never be refused by the agent later.
pub fn clean_ssh_key_comment(comment: &str) -> String {
    let kept: String = comment
        .bytes()
        .filter(|b| is_safe_ssh_key_comment_byte(*b))
        .map(char::from)
        .collect();
    let mut out = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    out.truncate(100);
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn spec_rejects_unknown_fields() {
        let bad = r#"{"vcpus":1,"memory_mib":256,"disk_gib":1,"base_image":"a","mac":"52:54:00:00:00:01","private_ip":"10.0.0.2","hostname":"h","exec":"x"}"#;
        assert!(serde_json::from_str::<VmSpec>(bad).is_err());
    }

    #[test]
    fn error_code_serializes_as_its_str() {
        for code in [
            ErrorCode::CapacityExceeded,
            ErrorCode::InvalidSpec,
            ErrorCode::NotFound,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
