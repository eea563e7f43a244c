//! Instances: one dedicated VM per instance.
//!
//! Invariants:
//! - The agent's VM id IS the instance id, so a retried ensure never makes a second VM.
//! - Only the job runner changes an instance's lifecycle `state` (through the `jobs`
//!   module). Calls here validate the request, insert a job, set `desired_power` and
//!   write an event (ACCESS-3), all in one transaction.
//! - Every lookup takes the owner's id; another user's instance is `NotFound`.
//! - Create does placement (ISO-2, DATA-2), IP/MAC/port allocation, the instance row,
//!   the `provision` job and the event in ONE transaction.
//! - An instance whose host is unreachable is reported as `unknown` (with the host's
//!   last contact), never with a stale state ([`Instance::reported_state`]).

use chrono::{DateTime, Utc};
use clawy_proto::agent::{PortForward, Protocol, VmSpec};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::actor::Actor;
use crate::audit::{AuditAction, record_instance_event};
use crate::clock::ms_to_datetime;
use crate::db::Query;
use crate::error::{CoreError, DomainError, ErrorKind, InternalError, internal_from};
use crate::hosts::{HOST_COLS, LOAD_JOIN, load_from_row};
use crate::ipam::{IpamError, allocate_in};
use crate::jobs::{begin_write, enqueue_in};
use crate::lifecycle::{JobKind, JobState, LifecycleAction, decide};
use crate::names::is_dns_label;
use crate::page::{Keyset, Page, PageRequest, created_cursor};
use crate::placement::{Need, PlacementError, Strategy, choose_host};
use crate::plans::PlanError;
use crate::ssh_keys::SshKeyError;

/// Guest SSH port the per-instance forward points at.
pub const GUEST_SSH_PORT: u16 = 22;
/// How often a create retries after a unique-constraint clash with a concurrent one.
const CREATE_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "An instance name is 1 to 63 lower-case letters, digits or '-', not starting or ending with '-'."
    )]
    InvalidName,
    #[error("You already have an instance named {0}.")]
    NameTaken(String),
    #[error("You have reached your limit of {quota} instances. Delete one first.")]
    QuotaExceeded { quota: u32 },
    #[error(
        "Confirm your email address first: open the link we mailed you (you can ask for a new one on your account page)."
    )]
    EmailUnverified,
    #[error("No such SSH key: {0}.")]
    SshKeyNotFound(String),
    #[error("No such plan: {0}.")]
    PlanNotFound(String),
    /// DATA-5: a secret in the wrong format; the message never holds the value.
    #[error("{field} {message}.")]
    InvalidSecret {
        field: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("No such instance.")]
    NotFound,
    #[error("Cannot {action} an instance that is {state}.")]
    InvalidTransition { action: &'static str, state: String },
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(InstanceError);

impl From<crate::guest_secrets::SecretError> for InstanceError {
    fn from(e: crate::guest_secrets::SecretError) -> Self {
        InstanceError::InvalidSecret {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<InternalError> for InstanceError {
    fn from(e: InternalError) -> Self {
        InstanceError::Internal(e)
    }
}

impl From<IpamError> for InstanceError {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::Internal(i) => InstanceError::Internal(i),
            other => InstanceError::Internal(InternalError::other(other.to_string())),
        }
    }
}

impl From<PlanError> for InstanceError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NotFound(p) => InstanceError::PlanNotFound(p),
            PlanError::Internal(i) => InstanceError::Internal(i),
            other => InstanceError::Internal(InternalError::other(other.to_string())),
        }
    }
}

impl DomainError for InstanceError {
    fn code(&self) -> &'static str {
        match self {
            InstanceError::InvalidName => "invalid_name",
            InstanceError::NameTaken(_) => "name_taken",
            InstanceError::QuotaExceeded { .. } => "quota_exceeded",
            InstanceError::EmailUnverified => "email_unverified",
            InstanceError::SshKeyNotFound(_) => "not_found",
            InstanceError::PlanNotFound(_) => "not_found",
            InstanceError::InvalidSecret { .. } => "invalid_secret",
            InstanceError::Placement(p) => p.code(),
            InstanceError::NotFound => "not_found",
            InstanceError::InvalidTransition { .. } => "invalid_state",
            InstanceError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            InstanceError::InvalidName => ErrorKind::Invalid { field: "name" },
            InstanceError::NameTaken(_) => ErrorKind::Conflict,
            InstanceError::QuotaExceeded { .. } | InstanceError::EmailUnverified => {
                ErrorKind::Forbidden
            }
            InstanceError::SshKeyNotFound(_) => ErrorKind::NotFound,
            InstanceError::PlanNotFound(_) => ErrorKind::NotFound,
            InstanceError::InvalidSecret { field, .. } => ErrorKind::Invalid { field },
            InstanceError::Placement(p) => p.kind(),
            InstanceError::NotFound => ErrorKind::NotFound,
            InstanceError::InvalidTransition { .. } => ErrorKind::Conflict,
            InstanceError::Internal(_) => ErrorKind::Internal,
        }
    }
}

pub use crate::lifecycle::{DesiredPower, InstanceState};

/// Latest health as the metrics poller saw it (ACCESS-1: host-side probe only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceHealth {
    pub checked_at: DateTime<Utc>,
    /// VM state as the agent reported it (`running`, `stopped`, `crashed`, …).
    pub vm_state: Option<String>,
    /// TCP connect to the gateway port succeeded.
    pub tcp_ok: Option<bool>,
    pub http_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub uptime_secs: Option<u64>,
    /// ACCESS-1: the guest's latest service-health heartbeat (only the contract's
    /// allow-listed facts) and when it was received, by the control plane's clock.
    pub heartbeat: Option<clawy_proto::heartbeat::Heartbeat>,
    pub heartbeat_at: Option<DateTime<Utc>>,
}

/// How often the guest's reporter sends (guest/openclaw-image/CONTRACT.md).
pub const HEARTBEAT_INTERVAL_SECS: i64 = 30;

/// A heartbeat older than this many intervals says nothing any more: its services
/// show as `unknown`, never as healthy (ACCESS-1).
pub const HEARTBEAT_STALE_INTERVALS: i64 = 3;

/// One guest service as the instance page and API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub name: &'static str,
    /// `ok`, `down` or `unknown`.
    pub state: &'static str,
    /// Seconds since the heartbeat that said so; `None` without one.
    pub age_secs: Option<u64>,
}

impl InstanceHealth {
    /// The gateway port answered the host-side probe.
    pub fn gateway_ok(&self) -> bool {
        self.tcp_ok == Some(true)
    }

    /// The heartbeat's age at `now`, if there is one.
    pub fn heartbeat_age(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.heartbeat_at.map(|at| now - at)
    }

    /// The heartbeat, unless it is stale at `now` (older than
    /// [`HEARTBEAT_STALE_INTERVALS`] intervals).
    pub fn fresh_heartbeat(
        &self,
        now: DateTime<Utc>,
    ) -> Option<&clawy_proto::heartbeat::Heartbeat> {
        let age = self.heartbeat_age(now)?;
        (age <= chrono::Duration::seconds(HEARTBEAT_INTERVAL_SECS * HEARTBEAT_STALE_INTERVALS))
            .then_some(self.heartbeat.as_ref())
            .flatten()
    }

    /// The services' list before any health was recorded: all `unknown`.
    pub fn no_heartbeat_services() -> Vec<ServiceState> {
        ["openclaw_gateway", "sshd", "ufw", "fail2ban"]
            .into_iter()
            .map(|name| ServiceState {
                name,
                state: "unknown",
                age_secs: None,
            })
            .collect()
    }

    /// ACCESS-1: each service the heartbeat reports, with its state and age. A
    /// stale or missing heartbeat makes every one `unknown`, never `ok`.
    pub fn services(&self, now: DateTime<Utc>) -> Vec<ServiceState> {
        use clawy_proto::heartbeat::{DefaultIncoming, UnitState};
        let age = self
            .heartbeat_age(now)
            .map(|a| u64::try_from(a.num_seconds()).unwrap_or(0));
        let unit = |s: UnitState| match s {
            UnitState::Active => "ok",
            UnitState::Inactive | UnitState::Failed => "down",
            UnitState::Activating | UnitState::Unknown => "unknown",
        };
        let states: [(&'static str, &'static str); 4] = match self.fresh_heartbeat(now) {
            Some(hb) => {
                let s = &hb.services;
                let gw = match (s.openclaw_gateway.state, s.openclaw_gateway.ready) {
                    (UnitState::Active, true) => "ok",
                    (UnitState::Active, false) => "unknown",
                    (other, _) => unit(other),
                };
                let ufw = match (s.ufw.state, s.ufw.default_incoming) {
                    (UnitState::Active, DefaultIncoming::Allow) => "down",
                    (other, _) => unit(other),
                };
                [
                    ("openclaw_gateway", gw),
                    ("sshd", unit(s.sshd.state)),
                    ("ufw", ufw),
                    ("fail2ban", unit(s.fail2ban.state)),
                ]
            }
            None => [
                ("openclaw_gateway", "unknown"),
                ("sshd", "unknown"),
                ("ufw", "unknown"),
                ("fail2ban", "unknown"),
            ],
        };
        states
            .into_iter()
            .map(|(name, state)| ServiceState {
                name,
                state,
                age_secs: age,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub plan_id: String,
    /// Plan name at create time.
    pub plan: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Country code.
    pub region: String,
    pub host_id: String,
    pub host_name: String,
    /// `None` once released (deleted).
    pub private_ip: Option<String>,
    pub mac: Option<String>,
    pub ssh_port: Option<u16>,
    pub base_image: String,
    pub state: InstanceState,
    pub error_reason: Option<String>,
    pub desired_power: DesiredPower,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub host_reachable: bool,
    pub host_last_contact_at: Option<DateTime<Utc>>,
    pub health: Option<InstanceHealth>,
    /// Public hostname `<name>-<short id>.<instances_domain>`; `None` when
    /// the operator configured no `instances_domain` at its creation. Reserved for
    /// ever, also after the delete.
    pub hostname: Option<String>,
    /// Its DNS records and where their publication stands (ACCESS-1).
    pub dns: InstanceDns,
}

/// The records of an instance's hostname as the control plane published them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceDns {
    /// `pending`, `published`, `removing`, `removed`; `None` without RFC 2136.
    pub state: Option<String>,
    /// Published A value (the serving host's public IPv4), if any.
    pub a: Option<String>,
    /// Published AAAA value, if any.
    pub aaaa: Option<String>,
    /// The last failure, for operators (cleared on success).
    pub error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

impl Instance {
    /// What the API shows: `unknown` while the host is unreachable (with
    /// `host_last_contact_at`), the stored state otherwise. Deleted and pending
    /// instances do not depend on the host.
    pub fn reported_state(&self) -> &'static str {
        match self.state {
            InstanceState::Deleted | InstanceState::Pending | InstanceState::Error => {
                self.state.as_str()
            }
            _ if !self.host_reachable => "unknown",
            s => s.as_str(),
        }
    }

    /// The inbound forward `ssh_port` (host) → 22 (guest); `None` once released.
    pub fn ssh_port_forward(&self) -> Option<PortForward> {
        self.ssh_port.map(|p| PortForward {
            protocol: Protocol::Tcp,
            host_port: p,
            guest_port: GUEST_SSH_PORT,
        })
    }
}

/// `POST /api/v1/instances` body, parsed.
#[derive(Debug, Clone, Default)]
pub struct CreateInstance {
    pub name: String,
    /// Plan name; `None` = the operator's default.
    pub plan: Option<String>,
    /// Country code; `None` = the operator's default region.
    pub region: Option<String>,
    pub ssh_key_ids: Vec<String>,
    /// DATA-5: the owner's optional secrets for the guest's gateway.
    pub secrets: crate::guest_secrets::OwnerSecrets,
}

/// Answer to a lifecycle request: the instance and the job inserted for it (`None`
/// when the request was already satisfied or already queued: idempotent).
#[derive(Debug, Clone, Serialize)]
pub struct ActionAccepted {
    pub instance: Instance,
    pub job_id: Option<String>,
}

/// A page of instances; `next_after` is passed back as `after` for the next page.
pub type InstancePage = Page<Instance>;

/// Operator list filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub host_id: Option<String>,
    pub owner_id: Option<String>,
    pub state: Option<InstanceState>,
    /// Include deleted instances (default: no).
    pub include_deleted: bool,
}

/// An SSH key as copied into the instance at create time (AUTH-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSshKey {
    pub ssh_key_id: String,
    pub fingerprint: String,
    pub public_key: String,
}

pub(crate) const INSTANCE_FROM: &str = "FROM instances i JOIN hosts h ON h.id = i.host_id \
    LEFT JOIN instance_health ih ON ih.instance_id = i.id";
pub(crate) const INSTANCE_COLS: &str = "i.id, i.owner_id, i.name, i.plan_id, i.plan_name, i.vcpus, \
    i.memory_mib, i.disk_gib, i.region, i.host_id, i.private_ip, i.mac, i.ssh_port, i.base_image, \
    i.state, i.error_reason, i.desired_power, i.created_at, i.updated_at, i.deleted_at, \
    h.name AS host_name, h.reachable AS host_reachable, h.last_contact_at AS host_last_contact_at, \
    ih.checked_at AS health_checked_at, ih.vm_state AS health_vm_state, ih.tcp_ok AS health_tcp_ok, \
    ih.http_status AS health_http_status, ih.latency_ms AS health_latency_ms, \
    ih.uptime_secs AS health_uptime_secs, ih.heartbeat AS health_heartbeat, \
    ih.heartbeat_at AS health_heartbeat_at, i.hostname, i.dns_state, i.dns_a, i.dns_aaaa, \
    i.dns_error, i.dns_checked_at";

fn u64_opt(r: &sqlx::any::AnyRow, col: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(|v| v.max(0) as u64))
}

pub(crate) fn instance_from_row(r: &sqlx::any::AnyRow) -> Result<Instance, InternalError> {
    let state: String = r.try_get("state")?;
    let desired: String = r.try_get("desired_power")?;
    let health = match r.try_get::<Option<i64>, _>("health_checked_at")? {
        Some(at) => Some(InstanceHealth {
            checked_at: ms_to_datetime(at),
            vm_state: r.try_get("health_vm_state")?,
            tcp_ok: r
                .try_get::<Option<i64>, _>("health_tcp_ok")?
                .map(|v| v != 0),
            http_status: u64_opt(r, "health_http_status")?.and_then(|v| u16::try_from(v).ok()),
            latency_ms: u64_opt(r, "health_latency_ms")?,
            uptime_secs: u64_opt(r, "health_uptime_secs")?,
            heartbeat: r
                .try_get::<Option<String>, _>("health_heartbeat")?
                .and_then(|j| serde_json::from_str(&j).ok()),
            heartbeat_at: r
                .try_get::<Option<i64>, _>("health_heartbeat_at")?
                .map(ms_to_datetime),
        }),
        None => None,
    };
    Ok(Instance {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        name: r.try_get("name")?,
        plan_id: r.try_get("plan_id")?,
        plan: r.try_get("plan_name")?,
        vcpus: r.try_get::<i64, _>("vcpus")?.clamp(0, i64::from(u32::MAX)) as u32,
        memory_mib: r.try_get::<i64, _>("memory_mib")?.max(0) as u64,
        disk_gib: r.try_get::<i64, _>("disk_gib")?.max(0) as u64,
        region: r.try_get("region")?,
        host_id: r.try_get("host_id")?,
        host_name: r.try_get("host_name")?,
        private_ip: r.try_get("private_ip")?,
        mac: r.try_get("mac")?,
        ssh_port: u64_opt(r, "ssh_port")?.and_then(|v| u16::try_from(v).ok()),
        base_image: r.try_get("base_image")?,
        state: InstanceState::parse(&state)
            .ok_or_else(|| InternalError::other(format!("unknown instance state `{state}`")))?,
        error_reason: r.try_get("error_reason")?,
        desired_power: DesiredPower::parse(&desired)
            .ok_or_else(|| InternalError::other(format!("unknown desired power `{desired}`")))?,
        created_at: ms_to_datetime(r.try_get("created_at")?),
        updated_at: ms_to_datetime(r.try_get("updated_at")?),
        deleted_at: r
            .try_get::<Option<i64>, _>("deleted_at")?
            .map(ms_to_datetime),
        host_reachable: r.try_get::<i64, _>("host_reachable")? != 0,
        host_last_contact_at: r
            .try_get::<Option<i64>, _>("host_last_contact_at")?
            .map(ms_to_datetime),
        health,
        hostname: r.try_get("hostname")?,
        dns: InstanceDns {
            state: r.try_get("dns_state")?,
            a: r.try_get("dns_a")?,
            aaaa: r.try_get("dns_aaaa")?,
            error: r.try_get("dns_error")?,
            checked_at: r
                .try_get::<Option<i64>, _>("dns_checked_at")?
                .map(ms_to_datetime),
        },
    })
}

/// Instances in the order they were created (ties by id).
const INSTANCE_ORDER: Keyset = Keyset {
    time: "i.created_at",
    key: "i.id",
    newest_first: false,
};

fn cursor_of(i: &Instance) -> String {
    created_cursor(i.created_at.timestamp_millis(), &i.id)
}

pub struct Instances<'a> {
    pub(crate) core: &'a Core,
}

impl Instances<'_> {
    /// Creates an instance for `owner_id`: validation, then placement + allocation +
    /// row + `provision` job + event in one transaction.
    pub async fn create(
        &self,
        actor: &Actor,
        owner_id: &str,
        req: CreateInstance,
    ) -> Result<Instance, InstanceError> {
        Ok(self.create_with_token(actor, owner_id, req).await?.0)
    }

    /// [`Instances::create`], also answering the gateway token the platform generated
    /// for the guest (DATA-5): the only time anyone sees it. The API's and the
    /// dashboard's create show it once; nothing can read it again.
    pub async fn create_with_token(
        &self,
        actor: &Actor,
        owner_id: &str,
        req: CreateInstance,
    ) -> Result<(Instance, crate::crypto::Token), InstanceError> {
        let cfg = self.core.config();
        // DATA-5: formats first, before anything is placed or stored.
        let secrets = req.secrets.into_guest_secrets()?;
        let name = req.name.trim().to_string();
        if !is_dns_label(&name) {
            return Err(InstanceError::InvalidName);
        }
        // Signup abuse: no machine for an address nobody has shown they own.
        let verified = self
            .core
            .accounts()
            .is_email_verified(owner_id)
            .await
            .map_err(|e| match e {
                crate::accounts::AccountError::Internal(i) => InstanceError::Internal(i),
                _ => InstanceError::NotFound,
            })?;
        if !verified {
            return Err(InstanceError::EmailUnverified);
        }
        let plan = match &req.plan {
            Some(p) if !p.trim().is_empty() => self.core.plans().get(p.trim()).await?,
            _ => self.core.plans().default_plan().await?,
        };
        let region = req
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_ascii_uppercase)
            .unwrap_or_else(|| cfg.default_region.clone());
        // DATA-2: refuse a region outside the policy before touching anything.
        if !cfg.allowed_countries.contains(&region) {
            return Err(PlacementError::RegionNotAllowed {
                region,
                allowed: cfg.allowed_countries.join(", "),
            }
            .into());
        }
        // AUTH-4: only the owner's own keys; copied now so the VM's trust is fixed.
        let mut keys = Vec::new();
        for key_id in &req.ssh_key_ids {
            if keys
                .iter()
                .any(|k: &InstanceSshKey| &k.ssh_key_id == key_id)
            {
                continue;
            }
            match self.core.ssh_keys().get(owner_id, key_id).await {
                Ok(k) => keys.push(InstanceSshKey {
                    ssh_key_id: k.id,
                    fingerprint: k.fingerprint,
                    public_key: k.public_key,
                }),
                Err(SshKeyError::NotFound) => {
                    return Err(InstanceError::SshKeyNotFound(key_id.clone()));
                }
                Err(SshKeyError::Internal(e)) => return Err(InstanceError::Internal(e)),
                Err(e) => return Err(InstanceError::Internal(InternalError::other(e.to_string()))),
            }
        }
        let need = Need::from(&plan);
        let mut last_err = None;
        for _ in 0..CREATE_ATTEMPTS {
            match self
                .try_create(
                    actor, owner_id, &name, &plan, &region, &need, &keys, &secrets,
                )
                .await
            {
                Ok(id) => {
                    let token = crate::crypto::Token::new(secrets.gateway_token.clone());
                    return Ok((self.get_any(&id).await?, token));
                }
                Err(CreateTry::Fatal(e)) => return Err(e),
                Err(CreateTry::Clash(e)) => last_err = Some(e),
            }
        }
        Err(InstanceError::Internal(InternalError::Database(
            last_err.unwrap_or(sqlx::Error::PoolTimedOut),
        )))
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_create(
        &self,
        actor: &Actor,
        owner_id: &str,
        name: &str,
        plan: &crate::plans::Plan,
        region: &str,
        need: &Need,
        keys: &[InstanceSshKey],
        secrets: &clawy_proto::agent::GuestSecrets,
    ) -> Result<String, CreateTry> {
        let cfg = self.core.config();
        let store = self.core.store();
        let postgres = store.backend() == crate::Backend::Postgres;
        let mut tx = begin_write(store).await.map_err(CreateTry::from_sqlx)?;
        if postgres {
            // Serialise creates of one owner (quota) and of one region (capacity): the
            // row locks are held until commit. Hosts are locked in id order (no deadlock).
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(owner_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(CreateTry::from_sqlx)?;
            sqlx::query(
                "SELECT id FROM hosts WHERE country = $1 AND enabled = 1 ORDER BY id FOR UPDATE",
            )
            .bind(region)
            .fetch_all(&mut *tx)
            .await
            .map_err(CreateTry::from_sqlx)?;
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN name = $2 THEN 1 ELSE 0 END), 0) AS same \
             FROM instances WHERE owner_id = $1 AND deleted_at IS NULL",
        )
        .bind(owner_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(CreateTry::from_sqlx)?;
        let count: i64 = row.try_get("n").map_err(CreateTry::from_sqlx)?;
        let same: i64 = row
            .try_get::<i64, _>("same")
            .or_else(|_| row.try_get::<f64, _>("same").map(|f| f as i64))
            .map_err(CreateTry::from_sqlx)?;
        if same > 0 {
            return Err(CreateTry::Fatal(InstanceError::NameTaken(name.to_string())));
        }
        if count >= i64::from(cfg.instance_quota) {
            return Err(CreateTry::Fatal(InstanceError::QuotaExceeded {
                quota: cfg.instance_quota,
            }));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS}, l.n, l.a_vcpus, l.a_mem, l.a_disk FROM hosts h {LOAD_JOIN} \
             WHERE h.country = $1 AND h.enabled = 1"
        )))
        .bind(region)
        .fetch_all(&mut *tx)
        .await
        .map_err(CreateTry::from_sqlx)?;
        let loads = rows
            .iter()
            .map(load_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CreateTry::from_sqlx)?;
        let mut candidates = loads;
        // A host whose /24 or port range is full cannot take the instance even if it
        // has CPU and memory: try the next one, and report no capacity if none fits.
        let (host, alloc) = loop {
            let chosen = choose_host(
                &candidates,
                need,
                &plan.name,
                region,
                &cfg.allowed_countries,
                Strategy::MostFree,
            )
            .map_err(|e| CreateTry::Fatal(e.into()))?;
            let host_id = chosen.host.id.clone();
            let Some(net) = chosen.host.network.clone() else {
                candidates.retain(|c| c.host.id != host_id);
                continue;
            };
            match allocate_in(&mut tx, &host_id, &net.subnet, net.ssh_port_range).await {
                Ok(a) => break (chosen.host.clone(), a),
                Err(IpamError::Internal(e)) => {
                    return Err(CreateTry::Fatal(InstanceError::Internal(e)));
                }
                Err(_) => candidates.retain(|c| c.host.id != host_id),
            }
        };
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.core.now_ms();
        // The public hostname is fixed now; a clash of its short id with an
        // earlier instance's is a unique violation and this attempt is retried.
        let hostname = cfg
            .instances_domain
            .as_ref()
            .map(|apex| crate::names::instance_hostname(name, &id, apex));
        let dns_state = match (&hostname, &cfg.dns) {
            (Some(_), Some(_)) => Some("pending".to_string()),
            _ => None,
        };
        sqlx::query(
            "INSERT INTO instances (id, owner_id, name, plan_id, plan_name, vcpus, memory_mib, disk_gib, \
             region, host_id, private_ip, mac, ssh_port, base_image, state, error_reason, desired_power, \
             created_at, updated_at, deleted_at, hostname, dns_state) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11, $12, $13, $14, 'pending', NULL, 'running', $15, $15, NULL, $16, $17)",
        )
        .bind(&id)
        .bind(owner_id)
        .bind(name)
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(i64::from(plan.vcpus))
        .bind(plan.memory_mib as i64)
        .bind(plan.disk_gib as i64)
        .bind(region)
        .bind(&host.id)
        .bind(alloc.private_ip.to_string())
        .bind(&alloc.mac)
        .bind(i64::from(alloc.ssh_port))
        .bind(&cfg.base_image)
        .bind(now)
        .bind(&hostname)
        .bind(dns_state)
        .execute(&mut *tx)
        .await
        .map_err(CreateTry::from_sqlx)?;
        for (pos, k) in keys.iter().enumerate() {
            sqlx::query(
                "INSERT INTO instance_ssh_keys (instance_id, position, ssh_key_id, fingerprint, public_key) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(pos as i64)
            .bind(&k.ssh_key_id)
            .bind(&k.fingerprint)
            .bind(&k.public_key)
            .execute(&mut *tx)
            .await
            .map_err(CreateTry::from_sqlx)?;
        }
        crate::guest_secrets::store_in(&mut tx, self.core.secret_key(), &id, secrets, now)
            .await
            .map_err(CreateTry::from_sqlx)?;
        enqueue_in(&mut tx, now, &id, JobKind::Provision, &actor.describe())
            .await
            .map_err(CreateTry::from_sqlx)?;
        record_instance_event(
            &mut tx,
            now,
            owner_id,
            &id,
            actor,
            AuditAction::InstanceCreated,
            &format!(
                "{name}: plan {} in {region} on host {}, ip {}, ssh port {}",
                plan.name, host.name, alloc.private_ip, alloc.ssh_port
            ),
        )
        .await
        .map_err(|e| CreateTry::Fatal(e.into()))?;
        tx.commit().await.map_err(CreateTry::from_sqlx)?;
        Ok(id)
    }

    /// One of the owner's instances (deleted ones too, with state `deleted`); another
    /// user's instance is [`InstanceError::NotFound`].
    pub async fn get(&self, owner_id: &str, id: &str) -> Result<Instance, InstanceError> {
        self.get_scoped(id, Some(owner_id)).await
    }

    /// Any instance by id: for operators and the orchestrator only.
    pub async fn get_any(&self, id: &str) -> Result<Instance, InstanceError> {
        self.get_scoped(id, None).await
    }

    /// The instance `id`, when `owner` is given only if it is theirs.
    async fn get_scoped(&self, id: &str, owner: Option<&str>) -> Result<Instance, InstanceError> {
        let owned = if owner.is_some() {
            " AND i.owner_id = $2"
        } else {
            ""
        };
        let sql = format!("SELECT {INSTANCE_COLS} {INSTANCE_FROM} WHERE i.id = $1{owned}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
        if let Some(owner) = owner {
            q = q.bind(owner);
        }
        self.core
            .store()
            .row_or(q, instance_from_row, InstanceError::NotFound)
            .await
    }

    /// The owner's instances that are not deleted, oldest first (server-side callers:
    /// `limit` is clamped; `after` is a previous page's `next_after`).
    pub async fn list_for_owner(
        &self,
        owner_id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<InstancePage, CoreError> {
        self.page_for_owner(owner_id, &PageRequest::first(limit).continuing(after))
            .await
    }

    /// Every instance (operators, the reconciler), oldest first, filtered; as
    /// [`Instances::list_for_owner`].
    pub async fn list_all(
        &self,
        filter: &ListFilter,
        limit: u32,
        after: Option<&str>,
    ) -> Result<InstancePage, CoreError> {
        self.page_all(filter, &PageRequest::first(limit).continuing(after))
            .await
    }

    /// A page of the owner's instances that are not deleted (the one pagination
    /// rule, `crate::page`).
    pub async fn page_for_owner(
        &self,
        owner_id: &str,
        req: &PageRequest,
    ) -> Result<Page<Instance>, CoreError> {
        let filter = ListFilter {
            owner_id: Some(owner_id.to_string()),
            ..ListFilter::default()
        };
        self.page_all(&filter, req).await
    }

    /// A page of every instance (operators), filtered, oldest first. Each filter that
    /// is set adds its own condition; an unset one adds nothing (no sentinel value
    /// stands for "any", so an empty owner id can never widen a list).
    pub async fn page_all(
        &self,
        filter: &ListFilter,
        req: &PageRequest,
    ) -> Result<Page<Instance>, CoreError> {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        let columns = [
            ("i.host_id", filter.host_id.clone()),
            ("i.owner_id", filter.owner_id.clone()),
            ("i.state", filter.state.map(|s| s.as_str().to_string())),
        ];
        for (column, value) in columns {
            if let Some(v) = value {
                values.push(v);
                conditions.push(format!("{column} = ${}", values.len() + 3));
            }
        }
        if !filter.include_deleted {
            conditions.push("i.deleted_at IS NULL".to_string());
        }
        let select = format!("SELECT {INSTANCE_COLS} {INSTANCE_FROM}");
        let bind = |mut q: Query<'static>| {
            for v in values {
                q = q.bind(v);
            }
            q
        };
        self.core
            .store()
            .page::<_, _, InstanceError>(
                INSTANCE_ORDER,
                req,
                (&select, &conditions.join(" AND ")),
                bind,
                instance_from_row,
                cursor_of,
            )
            .await
    }

    /// The instances on a host that are not deleted (reconciler), by id.
    pub async fn list_by_host(&self, host_id: &str) -> Result<Vec<Instance>, InstanceError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLS} {INSTANCE_FROM} WHERE i.host_id = $1 AND i.state <> 'deleted' ORDER BY i.id"
        )))
        .bind(host_id)
        .fetch_all(self.core.store().pool())
        .await?;
        Ok(rows
            .iter()
            .map(instance_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The ids of the instances on a host that are not deleted (the poller: one
    /// indexed query per host, no joins; the samples of a VM the database does not
    /// know are dropped).
    pub async fn ids_on_host(&self, host_id: &str) -> Result<Vec<String>, InstanceError> {
        let rows =
            sqlx::query("SELECT id FROM instances WHERE host_id = $1 AND state <> 'deleted'")
                .bind(host_id)
                .fetch_all(self.core.store().pool())
                .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?)
    }

    /// How many instances the owner has (not deleted), for quota displays.
    pub async fn count_for_owner(&self, owner_id: &str) -> Result<u64, InstanceError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM instances WHERE owner_id = $1 AND deleted_at IS NULL",
        )
        .bind(owner_id)
        .fetch_one(self.core.store().pool())
        .await?
        .try_get("n")?;
        Ok(n.max(0) as u64)
    }

    /// The SSH keys copied into the instance at create time (AUTH-4).
    pub async fn ssh_keys(&self, id: &str) -> Result<Vec<InstanceSshKey>, InstanceError> {
        let rows = sqlx::query(
            "SELECT ssh_key_id, fingerprint, public_key FROM instance_ssh_keys WHERE instance_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.core.store().pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceSshKey {
                    ssh_key_id: r.try_get("ssh_key_id")?,
                    fingerprint: r.try_get("fingerprint")?,
                    public_key: r.try_get("public_key")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The agent spec for the instance (hostname = name, SSH forward host port → 22).
    /// Fails for a released (deleted) instance.
    pub async fn vm_spec(&self, id: &str) -> Result<VmSpec, InstanceError> {
        let inst = self.get_any(id).await?;
        let keys = self.ssh_keys(id).await?;
        let (Some(ip), Some(mac), Some(fwd)) = (
            inst.private_ip.clone(),
            inst.mac.clone(),
            inst.ssh_port_forward(),
        ) else {
            return Err(InstanceError::InvalidTransition {
                action: "build a VM spec for",
                state: inst.state.to_string(),
            });
        };
        Ok(VmSpec {
            vcpus: inst.vcpus,
            memory_mib: inst.memory_mib,
            disk_gib: inst.disk_gib,
            base_image: inst.base_image.clone(),
            mac,
            private_ip: ip,
            hostname: inst.name.clone(),
            ssh_authorized_keys: keys.into_iter().map(|k| k.public_key).collect(),
            user_data: None,
            port_forwards: vec![fwd],
            public_hostname: inst.hostname.clone(),
        })
    }

    /// A lifecycle request for the owner's instance: reads the state, the desired
    /// power and the jobs, asks [`decide`], and writes what it says (job, desired
    /// power, event) in one transaction. `actor` is who the event names. Start/stop
    /// of an instance already there, and a second delete or retry, add no job; a
    /// delete cancels the instance's queued jobs (delete wins).
    pub async fn request(
        &self,
        actor: &Actor,
        owner_id: &str,
        id: &str,
        action: LifecycleAction,
    ) -> Result<ActionAccepted, InstanceError> {
        let store = self.core.store();
        let mut tx = begin_write(store).await?;
        let lock = if store.backend() == crate::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT state, desired_power FROM instances WHERE id = $1 AND owner_id = $2{lock}"
        )))
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(InstanceError::NotFound)?;
        let state_s: String = row.try_get("state")?;
        let state = InstanceState::parse(&state_s)
            .ok_or_else(|| InternalError::other(format!("unknown instance state `{state_s}`")))?;
        let desired = DesiredPower::parse(&row.try_get::<String, _>("desired_power")?)
            .unwrap_or(DesiredPower::Running);
        let rows = sqlx::query("SELECT kind, state FROM jobs WHERE instance_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind = JobKind::parse(&r.try_get::<String, _>("kind")?);
            let st = JobState::parse(&r.try_get::<String, _>("state")?);
            if let (Some(k), Some(s)) = (kind, st) {
                jobs.push((k, s));
            }
        }
        let decision = decide(action, state, desired, &jobs).map_err(|r| {
            InstanceError::InvalidTransition {
                action: r.action,
                state: r.state,
            }
        })?;
        let (job, new_desired) = (decision.job, decision.desired);
        let event = match action {
            LifecycleAction::Start => AuditAction::InstanceStartRequested,
            LifecycleAction::Stop => AuditAction::InstanceStopRequested,
            LifecycleAction::Reboot => AuditAction::InstanceRebootRequested,
            LifecycleAction::Delete => AuditAction::InstanceDeleteRequested,
            LifecycleAction::Retry => AuditAction::InstanceRetryRequested,
        };
        let now = self.core.now_ms();
        let mut job_id = None;
        if let Some(kind) = job {
            if kind == JobKind::Delete {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $1, updated_at = $1, \
                     last_error = 'cancelled by a delete request' WHERE instance_id = $2 AND state = 'queued'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            job_id = Some(enqueue_in(&mut tx, now, id, kind, &actor.describe()).await?);
        }
        if new_desired != desired || job.is_some() {
            sqlx::query("UPDATE instances SET desired_power = $1, updated_at = $2 WHERE id = $3")
                .bind(new_desired.as_str())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let detail = match &job {
            Some(k) => format!("{} job queued", k.as_str()),
            None => "already in progress or done".to_string(),
        };
        record_instance_event(&mut tx, now, owner_id, id, actor, event, &detail).await?;
        tx.commit().await?;
        let instance = self.get(owner_id, id).await?;
        Ok(ActionAccepted { instance, job_id })
    }
}

enum CreateTry {
    /// A unique constraint clashed with a concurrent create: try again.
    Clash(sqlx::Error),
    Fatal(InstanceError),
}

impl CreateTry {
    fn from_sqlx(e: sqlx::Error) -> CreateTry {
        let retryable = match &e {
            sqlx::Error::Database(d) => {
                d.is_unique_violation()
                    // PostgreSQL serialization failure / deadlock; SQLite busy.
                    || matches!(d.code().as_deref(), Some("40001") | Some("40P01") | Some("5") | Some("517"))
            }
            _ => false,
        };
        if retryable {
            CreateTry::Clash(e)
        } else {
            CreateTry::Fatal(InstanceError::Internal(InternalError::Database(e)))
        }
    }
}
