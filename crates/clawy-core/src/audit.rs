//! Append-only audit log of account events (ACCESS-3 groundwork).
//!
//! There is no update or delete function in this module, and the table refuses UPDATE
//! and DELETE with triggers on both backends. Events never carry a secret: `detail`
//! holds names, ids, key prefixes and fingerprints only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::actor::Actor;
use crate::clock::ms_to_datetime;
use crate::error::{CoreError, InternalError};
use crate::names::truncate_chars;
use crate::page::{MAX_LIMIT, Page, PageRequest};

/// What happened. Stored as its snake_case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Signup,
    UserCreated,
    OperatorChanged,
    LoginOk,
    LoginFailed,
    LoginThrottled,
    AccountLocked,
    Logout,
    PasswordChanged,
    PasswordResetRequested,
    EmailVerified,
    InviteCreated,
    PasswordReset,
    SessionRevoked,
    SessionsRevoked,
    ApiKeyCreated,
    ApiKeyRegenerated,
    ApiKeyRevoked,
    ApiKeyThrottled,
    SshKeyAdded,
    SshKeyRemoved,
    ReportSubmitted,
    InstanceCreated,
    InstanceStartRequested,
    InstanceStopRequested,
    InstanceRebootRequested,
    InstanceDeleteRequested,
    InstanceRetryRequested,
    InstanceStateChanged,
    InstanceRepaired,
    InstanceDriftDetected,
    JobRetry,
    JobFailed,
    HostRegistered,
    HostUpdated,
    PlanCreated,
    PlanUpdated,
    PlanDeleted,
    InstanceViewedByOperator,
}

impl AuditAction {
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::Signup,
        AuditAction::UserCreated,
        AuditAction::OperatorChanged,
        AuditAction::LoginOk,
        AuditAction::LoginFailed,
        AuditAction::LoginThrottled,
        AuditAction::AccountLocked,
        AuditAction::Logout,
        AuditAction::PasswordChanged,
        AuditAction::PasswordResetRequested,
        AuditAction::EmailVerified,
        AuditAction::InviteCreated,
        AuditAction::PasswordReset,
        AuditAction::SessionRevoked,
        AuditAction::SessionsRevoked,
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyRegenerated,
        AuditAction::ApiKeyRevoked,
        AuditAction::ApiKeyThrottled,
        AuditAction::SshKeyAdded,
        AuditAction::SshKeyRemoved,
        AuditAction::ReportSubmitted,
        AuditAction::InstanceCreated,
        AuditAction::InstanceStartRequested,
        AuditAction::InstanceStopRequested,
        AuditAction::InstanceRebootRequested,
        AuditAction::InstanceDeleteRequested,
        AuditAction::InstanceRetryRequested,
        AuditAction::InstanceStateChanged,
        AuditAction::InstanceRepaired,
        AuditAction::InstanceDriftDetected,
        AuditAction::JobRetry,
        AuditAction::JobFailed,
        AuditAction::HostRegistered,
        AuditAction::HostUpdated,
        AuditAction::PlanCreated,
        AuditAction::PlanUpdated,
        AuditAction::PlanDeleted,
        AuditAction::InstanceViewedByOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Signup => "signup",
            AuditAction::UserCreated => "user_created",
            AuditAction::OperatorChanged => "operator_changed",
            AuditAction::LoginOk => "login_ok",
            AuditAction::LoginFailed => "login_failed",
            AuditAction::LoginThrottled => "login_throttled",
            AuditAction::AccountLocked => "account_locked",
            AuditAction::Logout => "logout",
            AuditAction::PasswordChanged => "password_changed",
            AuditAction::PasswordResetRequested => "password_reset_requested",
            AuditAction::EmailVerified => "email_verified",
            AuditAction::InviteCreated => "invite_created",
            AuditAction::PasswordReset => "password_reset",
            AuditAction::SessionRevoked => "session_revoked",
            AuditAction::SessionsRevoked => "sessions_revoked",
            AuditAction::ApiKeyCreated => "api_key_created",
            AuditAction::ApiKeyRegenerated => "api_key_regenerated",
            AuditAction::ApiKeyRevoked => "api_key_revoked",
            AuditAction::ApiKeyThrottled => "api_key_throttled",
            AuditAction::SshKeyAdded => "ssh_key_added",
            AuditAction::SshKeyRemoved => "ssh_key_removed",
            AuditAction::ReportSubmitted => "report_submitted",
            AuditAction::InstanceCreated => "instance_created",
            AuditAction::InstanceStartRequested => "instance_start_requested",
            AuditAction::InstanceStopRequested => "instance_stop_requested",
            AuditAction::InstanceRebootRequested => "instance_reboot_requested",
            AuditAction::InstanceDeleteRequested => "instance_delete_requested",
            AuditAction::InstanceRetryRequested => "instance_retry_requested",
            AuditAction::InstanceStateChanged => "instance_state_changed",
            AuditAction::InstanceRepaired => "instance_repaired",
            AuditAction::InstanceDriftDetected => "instance_drift_detected",
            AuditAction::JobRetry => "job_retry",
            AuditAction::JobFailed => "job_failed",
            AuditAction::HostRegistered => "host_registered",
            AuditAction::HostUpdated => "host_updated",
            AuditAction::PlanCreated => "plan_created",
            AuditAction::PlanUpdated => "plan_updated",
            AuditAction::PlanDeleted => "plan_deleted",
            AuditAction::InstanceViewedByOperator => "instance_viewed_by_operator",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }

    /// A short human label for the activity page.
    pub fn label(self) -> &'static str {
        match self {
            AuditAction::Signup => "Account created",
            AuditAction::UserCreated => "Account created by an operator",
            AuditAction::OperatorChanged => "Operator role changed",
            AuditAction::LoginOk => "Signed in",
            AuditAction::LoginFailed => "Failed sign-in",
            AuditAction::LoginThrottled => "Sign-in attempts throttled",
            AuditAction::AccountLocked => "Sign-in temporarily locked after failures",
            AuditAction::Logout => "Signed out",
            AuditAction::PasswordChanged => "Password changed",
            AuditAction::PasswordResetRequested => "Password reset requested",
            AuditAction::EmailVerified => "Email address verified",
            AuditAction::InviteCreated => "Invitation created",
            AuditAction::PasswordReset => "Password reset",
            AuditAction::SessionRevoked => "Session revoked",
            AuditAction::SessionsRevoked => "Sessions revoked",
            AuditAction::ApiKeyCreated => "API key created",
            AuditAction::ApiKeyRegenerated => "API key regenerated",
            AuditAction::ApiKeyRevoked => "API key revoked",
            AuditAction::ApiKeyThrottled => "API key attempts throttled",
            AuditAction::SshKeyAdded => "SSH key added",
            AuditAction::SshKeyRemoved => "SSH key removed",
            AuditAction::ReportSubmitted => "Security report submitted",
            AuditAction::InstanceCreated => "Instance created",
            AuditAction::InstanceStartRequested => "Start requested",
            AuditAction::InstanceStopRequested => "Stop requested",
            AuditAction::InstanceRebootRequested => "Reboot requested",
            AuditAction::InstanceDeleteRequested => "Delete requested",
            AuditAction::InstanceRetryRequested => "Retry requested",
            AuditAction::InstanceStateChanged => "State changed",
            AuditAction::InstanceRepaired => "Repaired by the reconciler",
            AuditAction::InstanceDriftDetected => "Drift detected",
            AuditAction::JobRetry => "Step failed, will retry",
            AuditAction::JobFailed => "Step failed, gave up",
            AuditAction::HostRegistered => "Host registered",
            AuditAction::HostUpdated => "Host changed",
            AuditAction::PlanCreated => "Plan created",
            AuditAction::PlanUpdated => "Plan changed",
            AuditAction::PlanDeleted => "Plan deleted",
            // ACCESS-3: operator views of an instance are events its owner reads.
            AuditAction::InstanceViewedByOperator => "Viewed by an operator",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored event.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Increasing sequence number; also the pagination cursor (`before`).
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The account the event belongs to (its owner reads it), if any.
    pub user_id: Option<String>,
    /// The instance the event is about (ACCESS-3 instance events), if any.
    pub instance_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub client_addr: Option<String>,
    pub detail: String,
}

impl AuditEvent {
    pub fn action_kind(&self) -> Option<AuditAction> {
        AuditAction::parse(&self.action)
    }
    pub fn label(&self) -> &str {
        self.action_kind()
            .map(AuditAction::label)
            .unwrap_or(&self.action)
    }
}

pub struct Audit<'a> {
    pub(crate) core: &'a Core,
}

impl Audit<'_> {
    /// Appends an event. `user_id` is the account it belongs to (shown to its owner).
    pub async fn record(
        &self,
        user_id: Option<&str>,
        actor: &Actor,
        action: AuditAction,
        detail: &str,
    ) -> Result<(), InternalError> {
        sqlx::query(
            "INSERT INTO audit_events (at, user_id, actor, action, client_addr, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.core.now_ms())
        .bind(user_id.map(str::to_string))
        .bind(actor.describe())
        .bind(action.as_str())
        .bind(actor.client.addr_string())
        .bind(truncate_chars(detail, 500))
        .execute(self.core.store().pool())
        .await?;
        Ok(())
    }

    /// Like [`Audit::record`] but only logs a failure: used where the audit write must
    /// not turn a successful action into an error.
    pub async fn record_best_effort(
        &self,
        user_id: Option<&str>,
        actor: &Actor,
        action: AuditAction,
        detail: &str,
    ) {
        if let Err(e) = self.record(user_id, actor, action, detail).await {
            tracing::error!(error = ?e, action = action.as_str(), "could not write audit event");
        }
    }

    /// Events newest first, older than the event `before`: an account's, an
    /// instance's (scope by owner first: `instances().get(owner, id)`), or all
    /// (operators). Callers that serve a client use [`Audit::page`], which applies
    /// the pagination rule.
    pub async fn list(
        &self,
        scope: Scope<'_>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEvent>, InternalError> {
        self.events(scope, limit_rows(limit), before).await
    }

    /// A page of events (the one pagination rule, `crate::page`), newest first. For an
    /// instance, scope by owner first, as for [`Audit::list_for_instance`].
    pub async fn page(
        &self,
        scope: Scope<'_>,
        req: &PageRequest,
    ) -> Result<Page<AuditEvent>, CoreError> {
        let before = req.id_cursor().map_err(CoreError::new)?;
        let rows = self
            .events(scope, req.fetch(), before)
            .await
            .map_err(CoreError::new)?;
        Ok(Page::from_fetched(rows, req, |e| e.id.to_string()))
    }

    async fn events(
        &self,
        scope: Scope<'_>,
        rows: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditEvent>, InternalError> {
        let (filter, value) = scope.filter(3);
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, at, user_id, instance_id, actor, action, client_addr, detail FROM audit_events \
             WHERE {filter} AND id < $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(before.unwrap_or(i64::MAX))
        .bind(rows)
        .bind(value);
        self.core.store().rows(q, event_from_row).await
    }

    /// How many events `scope` holds (the overview's figure).
    pub async fn count(&self, scope: Scope<'_>) -> Result<i64, InternalError> {
        let (filter, value) = scope.filter(1);
        let sql = format!("SELECT COUNT(*) AS n FROM audit_events WHERE {filter}");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value);
        let n = |r: &sqlx::any::AnyRow| r.try_get::<i64, _>("n");
        Ok(self
            .core
            .store()
            .rows::<_, _, InternalError>(q, n)
            .await?
            .first()
            .copied()
            .unwrap_or(0))
    }

    /// Appends an instance event (ACCESS-3) outside a transaction; the owner reads it
    /// on the instance page and in their account activity.
    pub async fn record_instance(
        &self,
        owner_id: &str,
        instance_id: &str,
        actor: &Actor,
        action: AuditAction,
        detail: &str,
    ) -> Result<(), InternalError> {
        let mut conn = self.core.store().pool().acquire().await?;
        record_instance_event(
            &mut conn,
            self.core.now_ms(),
            owner_id,
            instance_id,
            actor,
            action,
            detail,
        )
        .await
    }
}

/// Which events a list reads: an account's, an instance's, or all (operators).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    User(&'a str),
    Instance(&'a str),
    All,
}

impl Scope<'_> {
    /// The scope's condition on placeholder `$n`, and the value to bind there (every
    /// scope binds one, so the statements number their values alike).
    fn filter(&self, n: usize) -> (String, &str) {
        match self {
            Scope::User(id) => (format!("user_id = ${n}"), id),
            Scope::Instance(id) => (format!("instance_id = ${n}"), id),
            Scope::All => (format!("${n} = ${n}"), ""),
        }
    }
}

/// Rows for the in-crate lists, which keep their historic clamp to 1..=500.
fn limit_rows(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_LIMIT))
}

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<AuditEvent, InternalError> {
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: ms_to_datetime(r.try_get("at")?),
        user_id: r.try_get("user_id")?,
        instance_id: r.try_get("instance_id")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        client_addr: r.try_get("client_addr")?,
        detail: r.try_get("detail")?,
    })
}

/// Appends an instance event on a given connection, so it commits (or not) with the
/// change it describes.
pub(crate) async fn record_instance_event(
    conn: &mut sqlx::AnyConnection,
    now_ms: i64,
    owner_id: &str,
    instance_id: &str,
    actor: &Actor,
    action: AuditAction,
    detail: &str,
) -> Result<(), InternalError> {
    sqlx::query(
        "INSERT INTO audit_events (at, user_id, instance_id, actor, action, client_addr, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms)
    .bind(owner_id)
    .bind(instance_id)
    .bind(actor.describe())
    .bind(action.as_str())
    .bind(actor.client.addr_string())
    .bind(truncate_chars(detail, 500))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
