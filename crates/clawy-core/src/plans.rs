//! Plans: instance sizes, operator-defined.
//!
//! Plans `small`, `medium`, `large` are seeded by the migration. Instances copy a
//! plan's numbers at create time, so editing or deleting a plan never changes what an
//! existing instance holds.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};

/// Upper bounds that catch typos (a plan bigger than any host is useless anyway).
pub const MAX_VCPUS: u32 = 256;
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
pub const MAX_DISK_GIB: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("A plan name is 1 to 32 lower-case letters, digits or '-'.")]
    InvalidName,
    #[error("vcpus must be between 1 and {MAX_VCPUS}.")]
    InvalidVcpus,
    #[error("memory_mib must be between 128 and {MAX_MEMORY_MIB}.")]
    InvalidMemory,
    #[error("disk_gib must be between 1 and {MAX_DISK_GIB}.")]
    InvalidDisk,
    #[error("A plan with this name already exists.")]
    Duplicate,
    #[error("No such plan: {0}.")]
    NotFound(String),
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(PlanError);

impl From<InternalError> for PlanError {
    fn from(e: InternalError) -> Self {
        PlanError::Internal(e)
    }
}

impl DomainError for PlanError {
    fn code(&self) -> &'static str {
        match self {
            PlanError::InvalidName => "invalid_name",
            PlanError::InvalidVcpus => "invalid_vcpus",
            PlanError::InvalidMemory => "invalid_memory",
            PlanError::InvalidDisk => "invalid_disk",
            PlanError::Duplicate => "duplicate_plan",
            PlanError::NotFound(_) => "not_found",
            PlanError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            PlanError::InvalidName => ErrorKind::Invalid { field: "name" },
            PlanError::InvalidVcpus => ErrorKind::Invalid { field: "vcpus" },
            PlanError::InvalidMemory => ErrorKind::Invalid {
                field: "memory_mib",
            },
            PlanError::InvalidDisk => ErrorKind::Invalid { field: "disk_gib" },
            PlanError::Duplicate => ErrorKind::Conflict,
            PlanError::NotFound(_) => ErrorKind::NotFound,
            PlanError::Internal(_) => ErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Create or replace a plan's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

const COLS: &str = "id, name, vcpus, memory_mib, disk_gib, created_at, updated_at";

fn plan_from_row(r: &sqlx::any::AnyRow) -> Result<Plan, sqlx::Error> {
    Ok(Plan {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        vcpus: r.try_get::<i64, _>("vcpus")?.clamp(0, i64::from(u32::MAX)) as u32,
        memory_mib: r.try_get::<i64, _>("memory_mib")?.max(0) as u64,
        disk_gib: r.try_get::<i64, _>("disk_gib")?.max(0) as u64,
        created_at: ms_to_datetime(r.try_get("created_at")?),
        updated_at: ms_to_datetime(r.try_get("updated_at")?),
    })
}

fn validate(spec: &PlanSpec) -> Result<PlanSpec, PlanError> {
    let name = spec.name.trim().to_string();
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(PlanError::InvalidName);
    }
    if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
        return Err(PlanError::InvalidVcpus);
    }
    if spec.memory_mib < 128 || spec.memory_mib > MAX_MEMORY_MIB {
        return Err(PlanError::InvalidMemory);
    }
    if spec.disk_gib == 0 || spec.disk_gib > MAX_DISK_GIB {
        return Err(PlanError::InvalidDisk);
    }
    Ok(PlanSpec {
        name,
        ..spec.clone()
    })
}

pub struct Plans<'a> {
    pub(crate) core: &'a Core,
}

impl Plans<'_> {
    /// All plans, smallest first.
    pub async fn list(&self) -> Result<Vec<Plan>, PlanError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM plans ORDER BY vcpus, memory_mib, disk_gib, name"
        )));
        self.core.store().rows(q, plan_from_row).await
    }

    /// A plan by name (what the API takes) or id.
    pub async fn get(&self, name_or_id: &str) -> Result<Plan, PlanError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM plans WHERE name = $1 OR id = $1 ORDER BY (name = $1) DESC LIMIT 1"
        )))
        .bind(name_or_id);
        self.core
            .store()
            .row_or(
                q,
                plan_from_row,
                PlanError::NotFound(name_or_id.to_string()),
            )
            .await
    }

    /// The operator's `default_plan`.
    pub async fn default_plan(&self) -> Result<Plan, PlanError> {
        self.get(&self.core.config().default_plan).await
    }

    pub async fn create(&self, actor: &Actor, spec: PlanSpec) -> Result<Plan, PlanError> {
        let spec = validate(&spec)?;
        let id = uuid::Uuid::new_v4().to_string();
        let insert = sqlx::query(
            "INSERT INTO plans (name, vcpus, memory_mib, disk_gib, id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        );
        let insert = bind_spec(insert, &spec).bind(&id).bind(self.core.now_ms());
        self.save(
            insert,
            actor,
            AuditAction::PlanCreated,
            &describe(&spec),
            &id,
        )
        .await
    }

    /// Changes a plan's name or numbers. Existing instances keep what they were
    /// created with.
    pub async fn update(
        &self,
        actor: &Actor,
        name_or_id: &str,
        spec: PlanSpec,
    ) -> Result<Plan, PlanError> {
        let spec = validate(&spec)?;
        let current = self.get(name_or_id).await?;
        let update = sqlx::query(
            "UPDATE plans SET name = $1, vcpus = $2, memory_mib = $3, disk_gib = $4, updated_at = $5 WHERE id = $6",
        );
        let update = bind_spec(update, &spec)
            .bind(self.core.now_ms())
            .bind(&current.id);
        let detail = format!("{} -> {}", current.name, describe(&spec));
        self.save(
            update,
            actor,
            AuditAction::PlanUpdated,
            &detail,
            &current.id,
        )
        .await
    }

    /// Runs a plan's INSERT or UPDATE (a name that exists already is `Duplicate`),
    /// records it, and reads the plan `id` back as stored.
    async fn save(
        &self,
        write: crate::db::Query<'_>,
        actor: &Actor,
        action: AuditAction,
        detail: &str,
        id: &str,
    ) -> Result<Plan, PlanError> {
        let res = write.execute(self.core.store().pool()).await;
        if crate::db::unique_violation(res)? {
            return Err(PlanError::Duplicate);
        }
        let audit = self.core.audit();
        audit.record(None, actor, action, detail).await?;
        self.get(id).await
    }

    pub async fn delete(&self, actor: &Actor, name_or_id: &str) -> Result<(), PlanError> {
        let current = self.get(name_or_id).await?;
        sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(&current.id)
            .execute(self.core.store().pool())
            .await?;
        self.core
            .audit()
            .record(None, actor, AuditAction::PlanDeleted, &current.name)
            .await?;
        Ok(())
    }
}

/// Binds a plan's name and numbers to `$1`–`$4` (both writes number them alike).
fn bind_spec<'q>(q: crate::db::Query<'q>, spec: &'q PlanSpec) -> crate::db::Query<'q> {
    q.bind(&spec.name)
        .bind(i64::from(spec.vcpus))
        .bind(spec.memory_mib as i64)
        .bind(spec.disk_gib as i64)
}

fn describe(spec: &PlanSpec) -> String {
    format!(
        "plan {}: {} vCPU, {} MiB, {} GiB",
        spec.name, spec.vcpus, spec.memory_mib, spec.disk_gib
    )
}
