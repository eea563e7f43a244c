//! The guests' service-health heartbeat (ACCESS-1, ACCESS-2): the allow-listed
//! facts exactly as guest/openclaw-image/CONTRACT.md defines the `v: 1` body. The
//! agent parses a guest's body into these types (unknown fields refused at every
//! level) and reports the latest one in `VmStatus`; the control plane stores it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    Active,
    Activating,
    Inactive,
    Failed,
    Unknown,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Active => "active",
            UnitState::Activating => "activating",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
            UnitState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudInit {
    Done,
    Running,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultIncoming {
    Deny,
    Reject,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub state: UnitState,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub state: UnitState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ufw {
    pub state: UnitState,
    pub default_incoming: DefaultIncoming,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail2ban {
    pub state: UnitState,
    pub jails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    pub openclaw_gateway: Gateway,
    pub sshd: Unit,
    pub ufw: Ufw,
    pub fail2ban: Fail2ban,
}

/// The allow-listed facts, exactly the contract's `v: 1` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub v: u32,
    pub image: String,
    pub boot_id: String,
    pub booted_at: String,
    pub sent_at: String,
    pub config_applied: bool,
    pub cloud_init: CloudInit,
    pub services: Services,
}

/// The latest heartbeat the agent accepted from a VM, as `VmStatus` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedHeartbeat {
    /// RFC 3339 UTC, the agent's clock when it accepted the heartbeat.
    pub received_at: String,
    /// Seconds since then, by the agent's monotonic clock when it answered: the
    /// control plane dates the heartbeat by its own clock minus this, so a skewed
    /// host clock cannot make a stale heartbeat look fresh.
    pub age_secs: u64,
    pub facts: Heartbeat,
}
