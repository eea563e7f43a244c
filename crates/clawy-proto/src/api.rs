//! REST API wire types (`/api/v1`). JSON in and out; the OpenAPI document is generated
//! from these types (`utoipa::ToSchema`), so a change here is a change of the contract.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API returns: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (e.g. `not_found`, `forbidden`, `invalid_request`).
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }
}

/// API key tiers, ordered: `read` ⊂ `manage` ⊂ `admin` (AUTH-2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// GET own resources.
    Read,
    /// Read + lifecycle of own resources (instances, SSH keys).
    Manage,
    /// Manage + API keys and account settings.
    Admin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Manage => "manage",
            Tier::Admin => "admin",
        }
    }
}

/// How the caller of a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Session,
}

/// `GET /api/v1/me`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub email: String,
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
    /// How this request authenticated.
    pub auth: AuthMethod,
    /// The privilege of this request (a session has the tier of the full account).
    pub tier: Tier,
    /// The id of the API key used, when `auth` is `api_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

/// An API key as listed; never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    /// The visible start of the key (e.g. `clawy_r_AbC1`), to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/api-keys`
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub tier: Tier,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The account's password: required when a browser session (not an API key)
    /// creates an admin-tier key (AUTH-2 re-authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for CreateApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateApiKey")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .field("expires_at", &self.expires_at)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A freshly created or regenerated key: `key` is shown this once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The full secret key. Store it now: the server keeps only its hash.
    pub key: String,
}

/// A registered SSH public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    /// e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub algorithm: String,
    /// `SHA256:…` as printed by `ssh-keygen -lf`.
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKeyList {
    pub ssh_keys: Vec<SshKey>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/ssh-keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSshKey {
    pub name: String,
    /// One line in OpenSSH format, e.g. `ssh-ed25519 AAAA… me@laptop`.
    pub public_key: String,
}

/// One entry of the account's audit log (never carries a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Increasing sequence number (also the paging cursor).
    pub id: i64,
    pub at: DateTime<Utc>,
    /// e.g. `login_ok`, `api_key_created`.
    pub kind: String,
    /// Who acted (e.g. `user:<id>`, `api_key:<id>`, `operator:<id>`).
    pub actor: String,
    pub client_addr: Option<String>,
    /// Free-form, non-secret detail (e.g. the key name).
    pub detail: Option<String>,
}

/// `GET /api/v1/audit` and `…/instances/{id}/events`: newest first. Pass `next_after`
/// as `after` for the next (older) page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/security-reports` (no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityReport {
    /// How to reach the reporter (optional).
    #[serde(default)]
    pub contact: Option<String>,
    pub title: String,
    pub details: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityReportReceipt {
    /// Quote this id in follow-ups.
    pub tracking_id: String,
    pub message: String,
}

/// `GET /healthz`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
}

// ---------------------------------------------------------------------------------------
// Instances, plans, regions, hosts, metrics.
// ---------------------------------------------------------------------------------------

/// A VM size the operator offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// e.g. `small`; what `POST /api/v1/instances` takes as `plan`.
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// The plan taken when a create request leaves `plan` out.
    pub is_default: bool,
}

/// `GET /api/v1/plans`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<Plan>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/admin/plans` (operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// `PATCH /api/v1/admin/plans/{id}` (operators; `id` may be the plan name): only the
/// fields given change.
/// Existing instances keep the size they were created with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub disk_gib: Option<u64>,
}

/// A location instances can be placed in (DATA-2: only the operator's allowed countries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Region {
    /// ISO 3166-1 alpha-2 country code, e.g. `DE`.
    pub code: String,
    /// Enabled hosts in the region (regions without any are not listed).
    pub hosts: u64,
    /// Some host there has room for the default plan right now.
    pub has_capacity: bool,
    /// The region taken when a create request leaves `region` out.
    pub is_default: bool,
}

/// `GET /api/v1/regions`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegionList {
    pub regions: Vec<Region>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// Lifecycle state as the API reports it. `unknown` means the instance's host has not
/// answered recently: the last known state is not claimed (see `last_contact_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Provisioning,
    Running,
    Stopped,
    Deleting,
    Deleted,
    Error,
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Provisioning => "provisioning",
            InstanceState::Running => "running",
            InstanceState::Stopped => "stopped",
            InstanceState::Deleting => "deleting",
            InstanceState::Deleted => "deleted",
            InstanceState::Error => "error",
            InstanceState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<InstanceState> {
        [
            InstanceState::Pending,
            InstanceState::Provisioning,
            InstanceState::Running,
            InstanceState::Stopped,
            InstanceState::Deleting,
            InstanceState::Deleted,
            InstanceState::Error,
            InstanceState::Unknown,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// A state the platform is still working towards another one from.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            InstanceState::Pending | InstanceState::Provisioning | InstanceState::Deleting
        )
    }
}

/// Health as seen from the host (ACCESS-1): the host-side probe of the gateway port
/// and the guest's allow-listed service-health heartbeat; nothing else is read from
/// inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceHealth {
    /// `ok` (port answers), `down` (probed, no answer) or `unknown` (not probed yet).
    pub gateway: String,
    /// The gateway's HTTP status on the last probe, if it answered HTTP.
    pub http_status: Option<u16>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Per-service states: `gateway` (the host's port probe), then what the
    /// guest's heartbeat reports: `openclaw_gateway`, `sshd`, `ufw`, `fail2ban`. A
    /// heartbeat older than three intervals (90 s) makes those `unknown`.
    pub services: Vec<ServiceHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceHealth {
    pub name: String,
    /// `ok`, `down` or `unknown`.
    pub state: String,
    /// Seconds since the heartbeat that reported it (none for the port probe or
    /// before the first heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
}

/// An instance: one VM of the caller's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub state: InstanceState,
    /// What the owner asked for: `running` or `stopped`.
    pub desired_power: String,
    pub private_ip: Option<String>,
    /// Host port forwarded to the guest's SSH port.
    pub ssh_port: Option<u16>,
    /// Ready to paste, e.g. `ssh -p 22001 claw@clawy.example`.
    pub ssh_command: Option<String>,
    /// DATA-5: the token of the guest's OpenClaw gateway, in the create answer only
    /// (shown once; the platform cannot show it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_token: Option<String>,
    pub plan: String,
    /// Country code of the region.
    pub region: String,
    /// `DE` or `DE/fra1`: where the host is.
    pub host_location: Option<String>,
    pub health: InstanceHealth,
    /// When the control plane last heard from the instance's host.
    pub last_contact_at: Option<DateTime<Utc>>,
    pub uptime_secs: Option<u64>,
    /// Why the instance is in `error`, in words a person can act on.
    pub error_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Public hostname `<name>-<short id>.<apex>`, served over HTTPS by the
    /// edge of the instance's host. Absent when the operator runs no edge.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `https://<hostname>/` while the instance is not deleted.
    #[serde(default)]
    pub https_url: Option<String>,
    /// "DNS records" (ACCESS-1): what resolves the hostname, as published.
    #[serde(default)]
    pub dns_records: Vec<DnsRecord>,
}

/// One DNS record of an instance's hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    pub name: String,
    /// `A` or `AAAA`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub value: String,
    /// `published`, `pending` (being published or retried), `removing`, `removed`, or
    /// `external` (the operator's own wildcard record, not managed by Clawy).
    pub status: String,
}

/// `GET /api/v1/instances`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/instances`. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// A DNS label: lowercase letters, digits and `-`, 1–63 characters, unique per user.
    pub name: String,
    /// Plan name; the operator's default when left out.
    #[serde(default)]
    pub plan: Option<String>,
    /// Country code; the operator's default when left out.
    #[serde(default)]
    pub region: Option<String>,
    /// Ids of the caller's SSH keys to install (copied at create time).
    #[serde(default)]
    pub ssh_key_ids: Vec<String>,
    /// DATA-5, optional: the Telegram bot token for OpenClaw's Telegram channel
    /// (`123456789:AA…`). Delivered once into the VM, then erased from the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_bot_token: Option<String>,
    /// DATA-5, optional: `anthropic`, `openai` or `openrouter`; with `model_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    /// DATA-5, optional: the model provider's API key. Delivered once into the VM,
    /// then erased from the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_key: Option<String>,
}

impl std::fmt::Debug for CreateInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateInstance")
            .field("name", &self.name)
            .field("plan", &self.plan)
            .field("region", &self.region)
            .field("ssh_key_ids", &self.ssh_key_ids)
            .field("telegram_bot_token", &self.telegram_bot_token.is_some())
            .field("model_provider", &self.model_provider)
            .field("model_key", &self.model_key.is_some())
            .finish()
    }
}

/// `GET /api/v1/instances/{id}/metrics`: one point per sample (`1h`, `24h`) or per hour
/// (`30d`, the hourly averages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceMetrics {
    pub instance_id: String,
    /// `1h`, `24h` or `30d`.
    pub range: String,
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    pub at: DateTime<Utc>,
    pub cpu_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    /// Counters since the VM started (cumulative).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
}

/// Capacity or allocation of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostResources {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// A registered host agent (operators). The agent's token is never returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub url: String,
    /// SHA-256 of the agent's certificate, pinned (DATA-3).
    pub fingerprint: String,
    /// Country code.
    pub location: String,
    pub site: Option<String>,
    pub enabled: bool,
    pub reachable: bool,
    pub last_contact_at: Option<DateTime<Utc>>,
    /// Why the last contact failed, when it did.
    pub last_error: Option<String>,
    pub hostname: Option<String>,
    /// `kvm` or `tcg` (as the agent reports it).
    pub accelerator: Option<String>,
    pub capacity: HostResources,
    /// The sum of the plans of the host's live instances.
    pub allocated: HostResources,
    pub instance_count: u64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub hosts: Vec<Host>,
    /// Pass as `after` for the next page; absent on the last page (the one pagination
    /// rule: `limit` 1–500, default 50).
    #[serde(default)]
    pub next_after: Option<String>,
}

/// `POST /api/v1/admin/hosts`: the server connects to the agent with the pinned
/// fingerprint and reads its host info before saving.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHost {
    /// A unique DNS label, e.g. `fra1-a`; the agent's hostname when left out.
    #[serde(default)]
    pub name: Option<String>,
    /// `https://host:port` of the agent.
    pub url: String,
    /// SHA-256 of the agent's certificate (hex, colons allowed).
    pub fingerprint: String,
    /// The agent's bearer token; stored encrypted, never returned.
    pub token: String,
    /// Country code.
    pub location: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for CreateHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateHost")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("fingerprint", &self.fingerprint)
            .field("token", &"[redacted]")
            .field("location", &self.location)
            .field("site", &self.site)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// `PATCH /api/v1/admin/hosts/{id}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHost {
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `POST /api/v1/admin/hosts/{id}/credentials` (DATA-3 rotation): a new agent token
/// (create it on the host with `clawy agent token create` first) and/or the new
/// certificate fingerprint. Checked against the agent before anything is stored.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateHostCredentials {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl std::fmt::Debug for RotateHostCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateHostCredentials")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// An instance in the operator's list: with its owner and host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminInstance {
    #[serde(flatten)]
    pub instance: Instance,
    pub owner_id: String,
    pub owner_email: String,
    pub host_id: Option<String>,
    /// The last DNS publication failure (operators only), e.g. a refused TSIG key.
    #[serde(default)]
    pub dns_error: Option<String>,
}

/// `GET /api/v1/admin/instances?limit=&after=`: oldest first; pass `next_after` as
/// `after` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminInstancePage {
    pub instances: Vec<AdminInstance>,
    pub next_after: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn create_host_debug_hides_the_token() {
        let h = CreateHost {
            name: None,
            url: "https://a:1".into(),
            fingerprint: "ab".into(),
            token: "very-secret-token".into(),
            location: "DE".into(),
            site: None,
            enabled: None,
        };
        assert!(!format!("{h:?}").contains("very-secret-token"));
    }

    #[test]
    fn instance_state_round_trips() {
        for s in ["pending", "running", "unknown", "error", "deleted"] {
            assert_eq!(InstanceState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(
            serde_json::to_string(&InstanceState::Provisioning).unwrap(),
            "\"provisioning\""
        );
    }

    #[test]
    fn tier_order_is_read_manage_admin() {
        assert!(Tier::Read < Tier::Manage && Tier::Manage < Tier::Admin);
        assert_eq!(serde_json::to_string(&Tier::Manage).unwrap(), "\"manage\"");
    }

    #[test]
    fn create_api_key_rejects_unknown_fields() {
        let err = serde_json::from_str::<CreateApiKey>(r#"{"name":"a","tier":"read","x":1}"#);
        assert!(err.is_err());
        let ok: CreateApiKey = serde_json::from_str(r#"{"name":"a","tier":"read"}"#).unwrap();
        assert_eq!(ok.expires_at, None);
    }
}
