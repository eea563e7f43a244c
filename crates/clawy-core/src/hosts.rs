//! Hosts: the agents the control plane drives.
//!
//! An operator registers an agent by URL, pinned certificate fingerprint and bearer
//! token. DATA-3/DATA-4: the token is sealed with the operator key before it is
//! stored and is never part of any read model; only [`Hosts::agent_target`] opens it,
//! for the orchestrator. Capacity and the VM network come from the agent's own
//! `HostInfo` ([`Hosts::update_info`]); reachability is a host property
//! ([`Hosts::mark_contact`]), so instances on an unreachable host are reported as
//! `unknown`, never with a stale state.

use chrono::{DateTime, Utc};
use clawy_proto::agent::{HostEdge, HostInfo, HostNetwork, Resources};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::config::is_country_code;
use crate::db::b2i;
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};

pub const NAME_MAX_CHARS: usize = 63;
pub const SITE_MAX_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("Give the host a name: 1 to {NAME_MAX_CHARS} lower-case letters, digits or '-'.")]
    InvalidName,
    #[error("The agent URL must be https://host:port (the agent only speaks HTTPS).")]
    InvalidUrl,
    #[error(
        "The fingerprint must be the agent certificate's SHA-256: 32 hex pairs separated by ':' (as `clawy agent fingerprint` prints it)."
    )]
    InvalidFingerprint,
    #[error("The agent token is empty.")]
    InvalidToken,
    #[error("The region must be a two-letter country code such as DE.")]
    InvalidCountry,
    #[error("The site label may have up to {SITE_MAX_CHARS} letters, digits or '-'.")]
    InvalidSite,
    #[error("A host with this name already exists.")]
    Duplicate,
    #[error("No such host.")]
    NotFound,
    #[error("The host's stored token cannot be opened with the operator key.")]
    TokenUnreadable,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(HostError);

impl From<InternalError> for HostError {
    fn from(e: InternalError) -> Self {
        HostError::Internal(e)
    }
}

impl DomainError for HostError {
    fn code(&self) -> &'static str {
        match self {
            HostError::InvalidName => "invalid_name",
            HostError::InvalidUrl => "invalid_url",
            HostError::InvalidFingerprint => "invalid_fingerprint",
            HostError::InvalidToken => "invalid_token",
            HostError::InvalidCountry => "invalid_country",
            HostError::InvalidSite => "invalid_site",
            HostError::Duplicate => "duplicate_host",
            HostError::NotFound => "not_found",
            HostError::TokenUnreadable => "internal",
            HostError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            HostError::InvalidName => ErrorKind::Invalid { field: "name" },
            HostError::InvalidUrl => ErrorKind::Invalid { field: "url" },
            HostError::InvalidFingerprint => ErrorKind::Invalid {
                field: "fingerprint",
            },
            HostError::InvalidToken => ErrorKind::Invalid { field: "token" },
            HostError::InvalidCountry => ErrorKind::Invalid { field: "region" },
            HostError::InvalidSite => ErrorKind::Invalid { field: "site" },
            HostError::Duplicate => ErrorKind::Conflict,
            HostError::NotFound => ErrorKind::NotFound,
            HostError::TokenUnreadable | HostError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// What an operator gives to register an agent.
#[derive(Debug, Clone)]
pub struct RegisterHost {
    /// DNS-label-like name, unique (e.g. `fra1-a`).
    pub name: String,
    /// `https://host:port` of the agent.
    pub url: String,
    /// SHA-256 of the agent's certificate, `AA:BB:…`.
    pub fingerprint: String,
    /// The agent's bearer token (DATA-3). Sealed before storage.
    pub token: SecretString,
    /// The region: an ISO 3166-1 alpha-2 country code (DATA-2 policy), e.g. `DE`.
    pub region: String,
    /// Free site label, e.g. `fra1`.
    pub site: String,
    pub enabled: bool,
}

/// A host as operators see it. Never carries the token.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub url: String,
    pub fingerprint: String,
    /// The region: an ISO 3166-1 alpha-2 country code (stored in column `country`).
    pub region: String,
    pub site: String,
    pub enabled: bool,
    /// What the agent may hand out (from its HostInfo; zero until first contact).
    pub capacity: Resources,
    /// The VM network (from HostInfo); `None` until the agent reported one.
    pub network: Option<HostNetwork>,
    /// The host's HTTPS edge (from HostInfo); `None` when its agent runs none.
    pub edge: Option<HostEdge>,
    pub accelerator: Option<String>,
    pub driver: Option<String>,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    /// The location label the agent itself reports (informational).
    pub agent_location: Option<String>,
    pub info_updated_at: Option<DateTime<Utc>>,
    pub reachable: bool,
    pub last_contact_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Host {
    /// `DE-fra1` style label.
    pub fn location_label(&self) -> String {
        if self.site.is_empty() {
            self.region.clone()
        } else {
            format!("{}-{}", self.region, self.site)
        }
    }
}

/// A host with what its live instances hold (operator view, ISO-2).
#[derive(Debug, Clone, Serialize)]
pub struct HostLoad {
    #[serde(flatten)]
    pub host: Host,
    pub allocated: Resources,
    /// Instances on the host that are not deleted.
    pub instance_count: u64,
}

impl HostLoad {
    /// Capacity minus allocation, per resource (saturating at zero).
    pub fn free(&self) -> Resources {
        Resources {
            vcpus: self
                .host
                .capacity
                .vcpus
                .saturating_sub(self.allocated.vcpus),
            memory_mib: self
                .host
                .capacity
                .memory_mib
                .saturating_sub(self.allocated.memory_mib),
            disk_gib: self
                .host
                .capacity
                .disk_gib
                .saturating_sub(self.allocated.disk_gib),
        }
    }
}

/// How to reach a host's agent. For the orchestrator only: it holds the opened token.
pub struct AgentTarget {
    pub host_id: String,
    pub url: String,
    pub fingerprint: String,
    pub token: SecretString,
}

impl std::fmt::Debug for AgentTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTarget")
            .field("host_id", &self.host_id)
            .field("url", &self.url)
            .field("fingerprint", &self.fingerprint)
            .field("token", &"[redacted]")
            .finish()
    }
}

pub(crate) const HOST_COLS: &str = "h.id, h.name, h.url, h.fingerprint, h.country, h.site, h.enabled, \
    h.cap_vcpus, h.cap_memory_mib, h.cap_disk_gib, h.subnet, h.gateway, h.ssh_port_min, h.ssh_port_max, \
    h.accelerator, h.driver, h.hostname, h.agent_version, h.agent_location, h.info_updated_at, \
    h.reachable, h.last_contact_at, h.last_error, h.created_at, h.updated_at, \
    h.edge_apex, h.edge_working, h.edge_error";

/// Sum of what non-deleted instances hold, per host (allocations count from the moment
/// the create transaction commits until the delete job released them).
/// (PostgreSQL's SUM of BIGINT is NUMERIC, which `sqlx::Any` cannot decode: cast.)
pub(crate) const LOAD_JOIN: &str = "LEFT JOIN (SELECT host_id, COUNT(*) AS n, \
    CAST(SUM(vcpus) AS BIGINT) AS a_vcpus, CAST(SUM(memory_mib) AS BIGINT) AS a_mem, \
    CAST(SUM(disk_gib) AS BIGINT) AS a_disk FROM instances WHERE state <> 'deleted' \
    GROUP BY host_id) l ON l.host_id = h.id";

fn opt_u64(r: &sqlx::any::AnyRow, col: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(|v| v.max(0) as u64))
}

pub(crate) fn host_from_row(r: &sqlx::any::AnyRow) -> Result<Host, sqlx::Error> {
    let subnet: Option<String> = r.try_get("subnet")?;
    let gateway: Option<String> = r.try_get("gateway")?;
    let pmin = opt_u64(r, "ssh_port_min")?;
    let pmax = opt_u64(r, "ssh_port_max")?;
    let network = match (subnet, gateway, pmin, pmax) {
        (Some(subnet), Some(gateway), Some(a), Some(b)) => Some(HostNetwork {
            subnet,
            gateway,
            ssh_port_range: [a as u16, b as u16],
        }),
        _ => None,
    };
    let edge = match r.try_get::<Option<String>, _>("edge_apex")? {
        Some(instances_apex) => Some(HostEdge {
            instances_apex,
            working: r.try_get::<i64, _>("edge_working")? != 0,
            error: r.try_get("edge_error")?,
        }),
        None => None,
    };
    Ok(Host {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        fingerprint: r.try_get("fingerprint")?,
        region: r.try_get("country")?,
        site: r.try_get("site")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        capacity: Resources {
            vcpus: r.try_get::<i64, _>("cap_vcpus")?.max(0) as u64,
            memory_mib: r.try_get::<i64, _>("cap_memory_mib")?.max(0) as u64,
            disk_gib: r.try_get::<i64, _>("cap_disk_gib")?.max(0) as u64,
        },
        network,
        edge,
        accelerator: r.try_get("accelerator")?,
        driver: r.try_get("driver")?,
        hostname: r.try_get("hostname")?,
        agent_version: r.try_get("agent_version")?,
        agent_location: r.try_get("agent_location")?,
        info_updated_at: r
            .try_get::<Option<i64>, _>("info_updated_at")?
            .map(ms_to_datetime),
        reachable: r.try_get::<i64, _>("reachable")? != 0,
        last_contact_at: r
            .try_get::<Option<i64>, _>("last_contact_at")?
            .map(ms_to_datetime),
        last_error: r.try_get("last_error")?,
        created_at: ms_to_datetime(r.try_get("created_at")?),
        updated_at: ms_to_datetime(r.try_get("updated_at")?),
    })
}

pub(crate) fn load_from_row(r: &sqlx::any::AnyRow) -> Result<HostLoad, sqlx::Error> {
    Ok(HostLoad {
        host: host_from_row(r)?,
        allocated: Resources {
            vcpus: opt_u64(r, "a_vcpus")?.unwrap_or(0),
            memory_mib: opt_u64(r, "a_mem")?.unwrap_or(0),
            disk_gib: opt_u64(r, "a_disk")?.unwrap_or(0),
        },
        instance_count: opt_u64(r, "n")?.unwrap_or(0),
    })
}

/// Host names follow DNS-label rules (they appear in logs and URLs).
pub fn validate_host_name(name: &str) -> Result<(), HostError> {
    if crate::names::is_dns_label(name) && name.len() <= NAME_MAX_CHARS {
        Ok(())
    } else {
        Err(HostError::InvalidName)
    }
}

/// Normalises `AA:bb:…` to upper case and checks the shape.
pub fn normalize_fingerprint(fp: &str) -> Result<String, HostError> {
    let fp = fp.trim().to_ascii_uppercase();
    let parts: Vec<&str> = fp.split(':').collect();
    if parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(fp)
    } else {
        Err(HostError::InvalidFingerprint)
    }
}

fn validate_url(u: &str) -> Result<String, HostError> {
    let parsed = url::Url::parse(u.trim()).map_err(|_| HostError::InvalidUrl)?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() || !parsed.username().is_empty() {
        return Err(HostError::InvalidUrl);
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !matches!(parsed.path(), "" | "/")
    {
        return Err(HostError::InvalidUrl);
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

fn validate_site(s: &str) -> Result<String, HostError> {
    let s = s.trim();
    if s.len() <= SITE_MAX_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(s.to_string())
    } else {
        Err(HostError::InvalidSite)
    }
}

/// The associated data a host's agent token is sealed with (DATA-3/DATA-4): the row's
/// identity and where the token may be sent. Length-prefixed, so no two different
/// triples give the same bytes.
pub fn token_context(id: &str, url: &str, fingerprint: &str) -> Vec<u8> {
    let mut out = b"clawy-agent-token-v2".to_vec();
    for part in [id, url, fingerprint] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

pub struct Hosts<'a> {
    pub(crate) core: &'a Core,
}

impl Hosts<'_> {
    /// Registers an agent. The token is sealed with the operator key (DATA-3/DATA-4).
    /// Capacity and network stay empty until [`Hosts::update_info`] ran, so a new host
    /// takes no instances before the control plane has talked to it.
    pub async fn register(&self, actor: &Actor, req: RegisterHost) -> Result<Host, HostError> {
        let name = req.name.trim().to_string();
        validate_host_name(&name)?;
        let url = validate_url(&req.url)?;
        let fingerprint = normalize_fingerprint(&req.fingerprint)?;
        if req.token.expose_secret().trim().is_empty() {
            return Err(HostError::InvalidToken);
        }
        let region = req.region.trim().to_ascii_uppercase();
        if !is_country_code(&region) {
            return Err(HostError::InvalidCountry);
        }
        let site = validate_site(&req.site)?;
        let id = uuid::Uuid::new_v4().to_string();
        // DATA-4: sealed (XChaCha20-Poly1305 with the operator key), never plain, and
        // bound to this row (id, URL, fingerprint) so it cannot be moved to another.
        let sealed = self.core.secret_key().seal_bound(
            req.token.expose_secret().as_bytes(),
            &token_context(&id, &url, &fingerprint),
        );
        let now = self.core.now_ms();
        let res = sqlx::query(
            "INSERT INTO hosts (id, name, url, fingerprint, token_sealed, country, site, enabled, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&url)
        .bind(&fingerprint)
        .bind(&sealed)
        .bind(&region)
        .bind(&site)
        .bind(b2i(req.enabled))
        .bind(now)
        .execute(self.core.store().pool())
        .await;
        if crate::db::unique_violation(res)? {
            return Err(HostError::Duplicate);
        }
        self.core
            .audit()
            .record(
                None,
                actor,
                AuditAction::HostRegistered,
                &format!("host {name} {url} {region}-{site}"),
            )
            .await?;
        self.get(&id).await
    }

    pub async fn get(&self, id: &str) -> Result<Host, HostError> {
        self.get_where("h.id", id).await
    }

    pub async fn get_by_name(&self, name: &str) -> Result<Host, HostError> {
        self.get_where("h.name", name).await
    }

    /// The host whose `column` (`h.id` or `h.name`, never a caller's string) is `value`.
    async fn get_where(&self, column: &'static str, value: &str) -> Result<Host, HostError> {
        let sql = format!("SELECT {HOST_COLS} FROM hosts h WHERE {column} = $1");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value);
        self.core
            .store()
            .row_or(q, host_from_row, HostError::NotFound)
            .await
    }

    /// All hosts, by name.
    pub async fn list(&self) -> Result<Vec<Host>, HostError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS} FROM hosts h ORDER BY h.name"
        )));
        self.core.store().rows(q, host_from_row).await
    }

    /// All hosts with their allocation (operator view): one query.
    pub async fn list_with_load(&self) -> Result<Vec<HostLoad>, HostError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS}, l.n, l.a_vcpus, l.a_mem, l.a_disk FROM hosts h {LOAD_JOIN} ORDER BY h.name"
        )));
        self.core.store().rows(q, load_from_row).await
    }

    pub async fn get_with_load(&self, id: &str) -> Result<HostLoad, HostError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS}, l.n, l.a_vcpus, l.a_mem, l.a_disk FROM hosts h {LOAD_JOIN} WHERE h.id = $1"
        )))
        .bind(id);
        self.core
            .store()
            .row_or(q, load_from_row, HostError::NotFound)
            .await
    }

    /// Enables or disables placement on a host (existing instances keep running).
    pub async fn set_enabled(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> Result<Host, HostError> {
        let res = sqlx::query("UPDATE hosts SET enabled = $1, updated_at = $2 WHERE id = $3")
            .bind(b2i(enabled))
            .bind(self.core.now_ms())
            .bind(id)
            .execute(self.core.store().pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(HostError::NotFound);
        }
        let host = self.get(id).await?;
        self.core
            .audit()
            .record(
                None,
                actor,
                AuditAction::HostUpdated,
                &format!(
                    "host {} {}",
                    host.name,
                    if enabled { "enabled" } else { "disabled" }
                ),
            )
            .await?;
        Ok(host)
    }

    /// DATA-3: rotates the credentials the control plane uses for an agent — a new
    /// bearer token (sealed again with the operator key) and/or a new certificate
    /// fingerprint after the agent's certificate was replaced. Audited; the token
    /// never appears in the event.
    pub async fn rotate_credentials(
        &self,
        actor: &Actor,
        id: &str,
        fingerprint: Option<&str>,
        token: Option<&SecretString>,
    ) -> Result<Host, HostError> {
        let current = self.get(id).await?;
        let fingerprint = match fingerprint {
            Some(f) => normalize_fingerprint(f)?,
            None => current.fingerprint.clone(),
        };
        // The token is bound to (id, URL, fingerprint): a new fingerprint re-seals the
        // current token under the new context.
        let context = token_context(&current.id, &current.url, &fingerprint);
        let sealed = match token {
            Some(t) if t.expose_secret().trim().is_empty() => return Err(HostError::InvalidToken),
            Some(t) => self
                .core
                .secret_key()
                .seal_bound(t.expose_secret().as_bytes(), &context),
            None => {
                let now = self.agent_target(id).await?;
                self.core
                    .secret_key()
                    .seal_bound(now.token.expose_secret().as_bytes(), &context)
            }
        };
        sqlx::query(
            "UPDATE hosts SET fingerprint = $1, token_sealed = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&fingerprint)
        .bind(sealed)
        .bind(self.core.now_ms())
        .bind(id)
        .execute(self.core.store().pool())
        .await?;
        let mut what = Vec::new();
        if token.is_some() {
            what.push("token rotated".to_string());
        }
        if fingerprint != current.fingerprint {
            what.push(format!("fingerprint now {fingerprint}"));
        }
        self.core
            .audit()
            .record(
                None,
                actor,
                AuditAction::HostUpdated,
                &format!(
                    "host {}: {}",
                    current.name,
                    if what.is_empty() {
                        "unchanged".to_string()
                    } else {
                        what.join(", ")
                    }
                ),
            )
            .await?;
        self.get(id).await
    }

    /// Stores what the agent reported about itself (capacity, network, accelerator)
    /// and marks the host reachable.
    pub async fn update_info(&self, id: &str, info: &HostInfo) -> Result<Host, HostError> {
        let now = self.core.now_ms();
        let (subnet, gateway, pmin, pmax) = match &info.network {
            Some(n) => (
                Some(n.subnet.clone()),
                Some(n.gateway.clone()),
                Some(i64::from(n.ssh_port_range[0])),
                Some(i64::from(n.ssh_port_range[1])),
            ),
            None => (None, None, None, None),
        };
        // The agent's words end up on operator pages: bounded like last_error.
        let (edge_apex, edge_working, edge_error) = match &info.edge {
            Some(e) => (
                Some(crate::names::truncate_chars(&e.instances_apex, 253)),
                i64::from(e.working),
                e.error
                    .as_deref()
                    .map(|m| crate::names::truncate_chars(m, 500)),
            ),
            None => (None, 0, None),
        };
        let res = sqlx::query(
            "UPDATE hosts SET cap_vcpus = $1, cap_memory_mib = $2, cap_disk_gib = $3, subnet = $4, \
             gateway = $5, ssh_port_min = $6, ssh_port_max = $7, accelerator = $8, driver = $9, \
             hostname = $10, agent_version = $11, agent_location = $12, info_updated_at = $13, \
             reachable = 1, last_contact_at = $13, last_error = NULL, updated_at = $13, \
             edge_apex = $15, edge_working = $16, edge_error = $17 WHERE id = $14",
        )
        .bind(info.capacity.vcpus.min(i64::MAX as u64) as i64)
        .bind(info.capacity.memory_mib.min(i64::MAX as u64) as i64)
        .bind(info.capacity.disk_gib.min(i64::MAX as u64) as i64)
        .bind(subnet)
        .bind(gateway)
        .bind(pmin)
        .bind(pmax)
        .bind(&info.accelerator)
        .bind(&info.driver)
        .bind(&info.hostname)
        .bind(&info.agent_version)
        .bind(&info.location)
        .bind(now)
        .bind(id)
        .bind(edge_apex)
        .bind(edge_working)
        .bind(edge_error)
        .execute(self.core.store().pool())
        .await?;
        if res.rows_affected() == 0 {
            return Err(HostError::NotFound);
        }
        self.get(id).await
    }

    /// Records the outcome of talking to the agent: `Ok` = reachable now, `Err(msg)`
    /// = unreachable (its instances are reported `unknown` with `last_contact_at`).
    pub async fn mark_contact(&self, id: &str, outcome: Result<(), &str>) -> Result<(), HostError> {
        let now = self.core.now_ms();
        let res = match outcome {
            Ok(()) => sqlx::query(
                "UPDATE hosts SET reachable = 1, last_contact_at = $1, last_error = NULL WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(self.core.store().pool())
            .await?,
            Err(msg) => sqlx::query("UPDATE hosts SET reachable = 0, last_error = $1 WHERE id = $2")
                .bind(crate::names::truncate_chars(msg, 500))
                .bind(id)
                .execute(self.core.store().pool())
                .await?,
        };
        if res.rows_affected() == 0 {
            return Err(HostError::NotFound);
        }
        Ok(())
    }

    /// Marks many hosts reachable (their agents answered) in one statement per 500
    /// hosts: a reconcile pass writes once, not once per host. Unknown
    /// ids are ignored (a host deleted during the pass).
    pub async fn mark_reachable_many(&self, ids: &[String]) -> Result<(), HostError> {
        let now = self.core.now_ms();
        for chunk in ids.chunks(500) {
            let list = (0..chunk.len())
                .map(|k| format!("${}", k + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE hosts SET reachable = 1, last_contact_at = $1, last_error = NULL WHERE id IN ({list})"
            )))
            .bind(now);
            for id in chunk {
                q = q.bind(id.clone());
            }
            q.execute(self.core.store().pool()).await?;
        }
        Ok(())
    }

    /// Opens the host's token for the orchestrator's agent client. Never expose this
    /// through an API or a page.
    pub async fn agent_target(&self, id: &str) -> Result<AgentTarget, HostError> {
        let q = sqlx::query("SELECT id, url, fingerprint, token_sealed FROM hosts WHERE id = $1")
            .bind(id);
        self.core
            .store()
            .row_or(q, |r| self.target_from_row(r), HostError::NotFound)
            .await
    }

    /// Targets of every host (enabled or not: disabled hosts still run instances that
    /// the reconciler and the metrics poller look after).
    pub async fn agent_targets(&self) -> Result<Vec<AgentTarget>, HostError> {
        let q = sqlx::query("SELECT id, url, fingerprint, token_sealed FROM hosts ORDER BY name");
        self.core.store().rows(q, |r| self.target_from_row(r)).await
    }

    fn target_from_row(&self, r: &sqlx::any::AnyRow) -> Result<AgentTarget, HostError> {
        let sealed: String = r.try_get("token_sealed")?;
        let host_id: String = r.try_get("id")?;
        let url: String = r.try_get("url")?;
        let fingerprint: String = r.try_get("fingerprint")?;
        // Only a token sealed for exactly this row opens: one copied from another host's
        // row, or a row whose URL or fingerprint was altered, is refused.
        let token = self
            .core
            .secret_key()
            .open_bound(&sealed, &token_context(&host_id, &url, &fingerprint))
            .map_err(|_| HostError::TokenUnreadable)?;
        Ok(AgentTarget {
            host_id,
            url,
            fingerprint,
            token,
        })
    }

    /// Migration for tokens sealed before they were bound to their row: each is
    /// re-sealed bound to the row it is in now (run once at start-up; afterwards an
    /// unbound token is refused like a tampered one). Returns how many were upgraded.
    pub async fn bind_legacy_tokens(&self) -> Result<u64, HostError> {
        let rows = sqlx::query(
            "SELECT id, url, fingerprint, token_sealed FROM hosts WHERE token_sealed LIKE 'v1.%'",
        )
        .fetch_all(self.core.store().pool())
        .await?;
        let mut upgraded = 0;
        for r in rows {
            let sealed: String = r.try_get("token_sealed")?;
            let id: String = r.try_get("id")?;
            let url: String = r.try_get("url")?;
            let fingerprint: String = r.try_get("fingerprint")?;
            let key = self.core.secret_key();
            let token = key
                .open_str(&sealed)
                .map_err(|_| HostError::TokenUnreadable)?;
            let bound = key.seal_bound(
                token.expose_secret().as_bytes(),
                &token_context(&id, &url, &fingerprint),
            );
            upgraded += sqlx::query(
                "UPDATE hosts SET token_sealed = $1 WHERE id = $2 AND token_sealed = $3",
            )
            .bind(bound)
            .bind(&id)
            .bind(&sealed)
            .execute(self.core.store().pool())
            .await?
            .rows_affected();
        }
        Ok(upgraded)
    }
}
