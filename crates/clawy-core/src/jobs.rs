//! Durable lifecycle jobs. The ONLY place that changes an instance's
//! lifecycle state.
//!
//! A job is claimed by exactly one worker with ONE statement (`UPDATE … WHERE id =
//! (SELECT … LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING …`), holding a lease that the
//! worker renews while it runs. A worker that dies leaves the lease to expire, after
//! which the job is claimable again; since every step is idempotent (the agent's VM id
//! is the instance id) a re-run is safe. Jobs of one instance run in order: a job is
//! not claimable while an earlier job of the same instance is unfinished. Failures are
//! retried with exponential backoff (`min(2^attempts s, 5 min)` + up to 10 % jitter);
//! after `max_attempts` the instance goes to `error` with a human reason and the owner
//! can retry (`instances().request_retry`). Every attempt is kept in `job_attempts`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::actor::Actor;
use crate::audit::{AuditAction, record_instance_event};
use crate::clock::ms_to_datetime;
use crate::db::{Backend, Store};
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};
use crate::lifecycle::InstanceState;

/// Attempts before a job gives up and the instance goes to `error`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("No such job.")]
    NotFound,
    /// The worker no longer holds the job (its lease expired and another worker took
    /// it, or it finished): the worker must stop and not touch the instance.
    #[error("The job's lease was lost.")]
    LeaseLost,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(JobError);

impl From<InternalError> for JobError {
    fn from(e: InternalError) -> Self {
        JobError::Internal(e)
    }
}

impl DomainError for JobError {
    fn code(&self) -> &'static str {
        match self {
            JobError::NotFound => "not_found",
            JobError::LeaseLost => "lease_lost",
            JobError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            JobError::NotFound => ErrorKind::NotFound,
            JobError::LeaseLost => ErrorKind::Conflict,
            JobError::Internal(_) => ErrorKind::Internal,
        }
    }
}

pub use crate::lifecycle::{JobKind, JobState};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub seq: i64,
    pub instance_id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// Attempts started so far (this one included while running).
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Actor text of whoever asked for it (`user:…`, `api_key:…`, `reconciler`, …).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobAttempt {
    pub job_id: String,
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `lease_expired` (worker died), or `None` while running.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// A job with its attempts (the instance's history shows retries).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobHistory {
    #[serde(flatten)]
    pub job: Job,
    pub attempt_log: Vec<JobAttempt>,
}

/// What [`Jobs::fail`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again; claimable at this time.
    Retrying { run_after: DateTime<Utc> },
    /// Out of attempts: the job failed and the instance is in `error`.
    GaveUp,
}

/// `min(2^attempts s, 5 min)`: the wait after the `attempts`-th failure.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64.checked_shl(attempts.min(20)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Starts a write transaction. SQLite: `BEGIN IMMEDIATE`, so the write lock is taken
/// up front (waiting on busy_timeout) instead of failing when a read upgrades to a
/// write; PostgreSQL: a plain `BEGIN` (row locks do the rest).
pub async fn begin_write(
    store: &Store,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match store.backend() {
        Backend::Sqlite => store.pool().begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => store.pool().begin().await,
    }
}

/// Inserts a queued job inside the actor's transaction (so the job exists iff the
/// change that needs it committed). Returns the job id.
pub async fn enqueue_in(
    conn: &mut sqlx::AnyConnection,
    now_ms: i64,
    instance_id: &str,
    kind: JobKind,
    created_by: &str,
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, instance_id, kind, state, attempts, max_attempts, run_after, created_by, \
         created_at, updated_at) VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $5, $5)",
    )
    .bind(&id)
    .bind(instance_id)
    .bind(kind.as_str())
    .bind(i64::from(DEFAULT_MAX_ATTEMPTS))
    .bind(now_ms)
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

const JOB_COLS: &str = "id, seq, instance_id, kind, state, attempts, max_attempts, run_after, lease_owner, \
    lease_until, last_error, created_by, created_at, updated_at, finished_at";

fn job_from_row(r: &sqlx::any::AnyRow) -> Result<Job, InternalError> {
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    Ok(Job {
        id: r.try_get("id")?,
        seq: r.try_get::<Option<i64>, _>("seq")?.unwrap_or(0),
        instance_id: r.try_get("instance_id")?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| InternalError::other(format!("unknown job kind `{kind}`")))?,
        state: JobState::parse(&state)
            .ok_or_else(|| InternalError::other(format!("unknown job state `{state}`")))?,
        attempts: r
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        max_attempts: r
            .try_get::<i64, _>("max_attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        run_after: ms_to_datetime(r.try_get("run_after")?),
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r
            .try_get::<Option<i64>, _>("lease_until")?
            .map(ms_to_datetime),
        last_error: r.try_get("last_error")?,
        created_by: r.try_get("created_by")?,
        created_at: ms_to_datetime(r.try_get("created_at")?),
        updated_at: ms_to_datetime(r.try_get("updated_at")?),
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at")?
            .map(ms_to_datetime),
    })
}

fn attempt_from_row(r: &sqlx::any::AnyRow) -> Result<JobAttempt, InternalError> {
    Ok(JobAttempt {
        job_id: r.try_get("job_id")?,
        attempt: r
            .try_get::<i64, _>("attempt")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        worker: r.try_get("worker")?,
        started_at: ms_to_datetime(r.try_get("started_at")?),
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at")?
            .map(ms_to_datetime),
        outcome: r.try_get("outcome")?,
        error: r.try_get("error")?,
    })
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct Jobs<'a> {
    pub(crate) core: &'a Core,
}

impl Jobs<'_> {
    /// Claims the oldest runnable job for `worker` with a lease of `lease`: a queued
    /// job whose `run_after` has come, or a running job whose lease expired (its
    /// worker died), and whose instance has no earlier unfinished job. One statement;
    /// on PostgreSQL the candidate row is taken with `FOR UPDATE SKIP LOCKED`, so
    /// concurrent claimers (even in other processes) never get the same job.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, JobError> {
        // A job whose last allowed attempt died with its worker gives up here instead
        // of running once more; then look for the next one.
        for _ in 0..16 {
            let Some(job) = self.claim_once(worker, lease).await? else {
                return Ok(None);
            };
            if job.attempts > job.max_attempts {
                self.give_up(
                    &job,
                    worker,
                    "the worker running the last attempt stopped (lease expired)",
                )
                .await?;
                continue;
            }
            return Ok(Some(job));
        }
        Ok(None)
    }

    async fn claim_once(&self, worker: &str, lease: Duration) -> Result<Option<Job>, JobError> {
        let store = self.core.store();
        let now = self.core.now_ms();
        let lock = match store.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = begin_write(store).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1, \
             updated_at = $3 WHERE id = (SELECT j.id FROM jobs j WHERE (j.state = 'queued' OR \
             (j.state = 'running' AND j.lease_until < $3)) AND j.run_after <= $3 AND NOT EXISTS \
             (SELECT 1 FROM jobs e WHERE e.instance_id = j.instance_id AND e.seq < j.seq \
             AND e.state IN ('queued', 'running')) ORDER BY j.seq LIMIT 1{lock}) RETURNING {JOB_COLS}"
        )))
        .bind(worker)
        .bind(now.saturating_add(dur_ms(lease)))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        // An attempt left open by a dead worker is closed as such (history shows it).
        sqlx::query(
            "UPDATE job_attempts SET finished_at = $1, outcome = 'lease_expired', \
             error = 'the worker stopped before finishing' WHERE job_id = $2 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)")
            .bind(&job.id)
            .bind(i64::from(job.attempts))
            .bind(worker)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Extends the lease; `LeaseLost` when the worker no longer holds the job.
    pub async fn renew(&self, job: &Job, worker: &str, lease: Duration) -> Result<(), JobError> {
        let now = self.core.now_ms();
        let res = sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
        )
        .bind(now.saturating_add(dur_ms(lease)))
        .bind(now)
        .bind(&job.id)
        .bind(worker)
        .execute(self.core.store().pool())
        .await?;
        if res.rows_affected() == 0 {
            return Err(JobError::LeaseLost);
        }
        Ok(())
    }

    /// Sets an intermediate instance state while the job runs (e.g. `provisioning`,
    /// `deleting`), under the lease.
    pub async fn progress(
        &self,
        job: &Job,
        worker: &str,
        state: InstanceState,
    ) -> Result<(), JobError> {
        let mut tx = begin_write(self.core.store()).await?;
        self.check_lease(&mut tx, job, worker).await?;
        self.set_state_in(&mut tx, &job.instance_id, state, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finishes the job successfully and moves the instance to the kind's final state
    /// (`running`, `stopped` or `deleted`) in the same transaction. For `delete`, the
    /// IP, MAC and SSH port are released here — only once the runner confirmed the VM
    /// is gone.
    pub async fn complete(&self, job: &Job, worker: &str) -> Result<(), JobError> {
        self.complete_with_state(job, worker, job.kind.final_state())
            .await
    }

    /// Like [`Jobs::complete`] with an explicit final state (e.g. a start job that
    /// found the VM already running).
    pub async fn complete_with_state(
        &self,
        job: &Job,
        worker: &str,
        state: InstanceState,
    ) -> Result<(), JobError> {
        let now = self.core.now_ms();
        let mut tx = begin_write(self.core.store()).await?;
        let update = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = $1, updated_at = $1, lease_until = NULL, \
             last_error = NULL WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now);
        self.end_attempt(&mut tx, job, worker, update, now, None)
            .await?;
        if state == InstanceState::Deleted {
            // Allocations are released only now: the VM is confirmed gone.
            sqlx::query(
                "UPDATE instances SET private_ip = NULL, mac = NULL, ssh_port = NULL, deleted_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(&job.instance_id)
            .execute(&mut *tx)
            .await?;
            // DATA-5: undelivered secrets of a VM that is gone have no reason to stay.
            sqlx::query("DELETE FROM instance_guest_secrets WHERE instance_id = $1")
                .bind(&job.instance_id)
                .execute(&mut *tx)
                .await?;
        }
        self.set_state_in(&mut tx, &job.instance_id, state, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed attempt. Below `max_attempts`: queued again after the backoff
    /// (+ jitter). Otherwise the job fails and the instance goes to `error` with
    /// `error` as the reason.
    pub async fn fail(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
    ) -> Result<FailOutcome, JobError> {
        let base = backoff(job.attempts);
        let jitter_max = dur_ms(base) / 10;
        let jitter = if jitter_max > 0 {
            rand::thread_rng().gen_range(0..=jitter_max)
        } else {
            0
        };
        self.fail_with_jitter(job, worker, error, Duration::from_millis(jitter as u64))
            .await
    }

    /// [`Jobs::fail`] with the jitter given (tests pin it).
    pub async fn fail_with_jitter(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
        jitter: Duration,
    ) -> Result<FailOutcome, JobError> {
        if job.attempts >= job.max_attempts {
            self.give_up(job, worker, error).await?;
            return Ok(FailOutcome::GaveUp);
        }
        let now = self.core.now_ms();
        let run_after = now
            .saturating_add(dur_ms(backoff(job.attempts)))
            .saturating_add(dur_ms(jitter));
        let error = crate::names::truncate_chars(error, 500);
        let mut tx = begin_write(self.core.store()).await?;
        let update = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_after = $1, lease_owner = NULL, lease_until = NULL, \
             last_error = $2, updated_at = $3 WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
        )
        .bind(run_after)
        .bind(&error)
        .bind(now);
        self.end_attempt(&mut tx, job, worker, update, now, Some(&error))
            .await?;
        // Generic for the owner, like the final reason (see give_up).
        let detail = format!(
            "{} attempt {} of {} failed; next try in {} s",
            job.kind.as_str(),
            job.attempts,
            job.max_attempts,
            (run_after - now + 999) / 1000
        );
        self.job_event(&mut tx, job, now, AuditAction::JobRetry, &detail)
            .await?;
        tx.commit().await?;
        Ok(FailOutcome::Retrying {
            run_after: ms_to_datetime(run_after),
        })
    }

    /// The host was busy (a hypervisor lock, or a task that outlived the
    /// request): queue the job again after `after` without counting the attempt
    /// (`max_attempts` grows with it), so a busy host never sends an instance to
    /// `error`. The attempt is closed as `busy` and the reason kept in
    /// `last_error`; no instance event (a lock is routine).
    pub async fn defer(
        &self,
        job: &Job,
        worker: &str,
        reason: &str,
        after: Duration,
    ) -> Result<(), JobError> {
        let now = self.core.now_ms();
        let run_after = now.saturating_add(dur_ms(after));
        let reason = crate::names::truncate_chars(reason, 500);
        let mut tx = begin_write(self.core.store()).await?;
        let res = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_after = $1, lease_owner = NULL, lease_until = NULL, \
             last_error = $2, updated_at = $3, max_attempts = max_attempts + 1 \
             WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
        )
        .bind(run_after)
        .bind(&reason)
        .bind(now)
        .bind(&job.id)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(JobError::LeaseLost);
        }
        sqlx::query(
            "UPDATE job_attempts SET finished_at = $1, outcome = 'busy', error = $2 \
             WHERE job_id = $3 AND attempt = $4 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(&reason)
        .bind(&job.id)
        .bind(i64::from(job.attempts))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn give_up(&self, job: &Job, worker: &str, error: &str) -> Result<(), JobError> {
        let now = self.core.now_ms();
        let error = crate::names::truncate_chars(error, 500);
        let mut tx = begin_write(self.core.store()).await?;
        let update = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_at = $1, updated_at = $1, lease_until = NULL, \
             last_error = $2 WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
        )
        .bind(now)
        .bind(&error);
        self.end_attempt(&mut tx, job, worker, update, now, Some(&error))
            .await?;
        // The owner sees a generic reason; the detail (an agent's message can name
        // another tenant's VM or the agent's URL) stays in the job's record and the
        // log, which only operators read.
        let reason = format!(
            "{} failed after {} attempts. The cause is recorded for the operator; press Retry to try again.",
            job.kind.as_str(),
            job.attempts.min(job.max_attempts)
        );
        self.job_event(&mut tx, job, now, AuditAction::JobFailed, &reason)
            .await?;
        self.set_state_in(
            &mut tx,
            &job.instance_id,
            InstanceState::Error,
            Some(&reason),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Job, JobError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE id = $1"
        )))
        .bind(id);
        self.core
            .store()
            .row_or(q, job_from_row, JobError::NotFound)
            .await
    }

    /// The instance's jobs with every attempt, oldest first. Callers scope by owner
    /// first (`instances().get(owner, id)`).
    pub async fn history(&self, instance_id: &str) -> Result<Vec<JobHistory>, JobError> {
        let pool = self.core.store().pool();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE instance_id = $1 ORDER BY seq"
        )))
        .bind(instance_id)
        .fetch_all(pool)
        .await?;
        let jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let arows = sqlx::query(
            "SELECT a.job_id, a.attempt, a.worker, a.started_at, a.finished_at, a.outcome, a.error \
             FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.instance_id = $1 ORDER BY a.attempt",
        )
        .bind(instance_id)
        .fetch_all(pool)
        .await?;
        let attempts = arows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs
            .into_iter()
            .map(|job| {
                let attempt_log = attempts
                    .iter()
                    .filter(|a| a.job_id == job.id)
                    .cloned()
                    .collect();
                JobHistory { job, attempt_log }
            })
            .collect())
    }

    /// Jobs not finished yet (queued or running), across all instances.
    pub async fn pending_count(&self) -> Result<u64, JobError> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(self.core.store().pool())
                .await?
                .try_get("n")?;
        Ok(n.max(0) as u64)
    }

    /// Ids of instances that have a queued or running job (the reconciler leaves
    /// those to the job runner). One query.
    pub async fn instances_with_unfinished_jobs(
        &self,
    ) -> Result<std::collections::HashSet<String>, JobError> {
        let rows = sqlx::query(
            "SELECT DISTINCT instance_id FROM jobs WHERE state IN ('queued', 'running')",
        )
        .fetch_all(self.core.store().pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("instance_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Unfinished jobs of one instance, in order.
    pub async fn unfinished_for_instance(&self, instance_id: &str) -> Result<Vec<Job>, JobError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE instance_id = $1 AND state IN ('queued', 'running') ORDER BY seq"
        )))
        .bind(instance_id);
        self.core.store().rows(q, job_from_row).await
    }

    /// Inserts a job outside any other change (the reconciler repairing drift, e.g.
    /// restarting a VM that should run). Writes an event as `actor`.
    pub async fn enqueue(
        &self,
        actor: &Actor,
        instance_id: &str,
        kind: JobKind,
        detail: &str,
    ) -> Result<String, JobError> {
        let now = self.core.now_ms();
        let mut tx = begin_write(self.core.store()).await?;
        let owner = self
            .owner_of(&mut tx, instance_id)
            .await?
            .ok_or(JobError::NotFound)?;
        let id = enqueue_in(&mut tx, now, instance_id, kind, &actor.describe()).await?;
        record_instance_event(
            &mut tx,
            now,
            &owner,
            instance_id,
            actor,
            AuditAction::InstanceRepaired,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn check_lease(
        &self,
        conn: &mut sqlx::AnyConnection,
        job: &Job,
        worker: &str,
    ) -> Result<(), JobError> {
        let row = sqlx::query(
            "SELECT 1 AS ok FROM jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(&job.id)
        .bind(worker)
        .fetch_optional(&mut *conn)
        .await?;
        if row.is_none() {
            return Err(JobError::LeaseLost);
        }
        Ok(())
    }

    /// Ends the worker's running job: runs `update` (a jobs UPDATE whose last two
    /// values, bound here, are the job id and the worker), which must still find the
    /// job leased to the worker (else `LeaseLost`, and the caller's transaction is
    /// dropped); then closes its attempt, `failed` with `error` or `succeeded`.
    async fn end_attempt<'q>(
        &self,
        conn: &mut sqlx::AnyConnection,
        job: &'q Job,
        worker: &'q str,
        update: crate::db::Query<'q>,
        now: i64,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let updated = update
            .bind(&job.id)
            .bind(worker)
            .execute(&mut *conn)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(JobError::LeaseLost);
        }
        let outcome = if error.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        sqlx::query(
            "UPDATE job_attempts SET finished_at = $1, outcome = $2, error = $3 \
             WHERE job_id = $4 AND attempt = $5 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(outcome)
        .bind(error.map(str::to_string))
        .bind(&job.id)
        .bind(i64::from(job.attempts))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// An event about `job` on its instance, for the instance's owner.
    async fn job_event(
        &self,
        conn: &mut sqlx::AnyConnection,
        job: &Job,
        now: i64,
        action: AuditAction,
        detail: &str,
    ) -> Result<(), JobError> {
        if let Some(owner) = self.owner_of(conn, &job.instance_id).await? {
            let (instance, actor) = (&job.instance_id, &Actor::system());
            record_instance_event(conn, now, &owner, instance, actor, action, detail).await?;
        }
        Ok(())
    }

    async fn owner_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        instance_id: &str,
    ) -> Result<Option<String>, JobError> {
        Ok(sqlx::query("SELECT owner_id FROM instances WHERE id = $1")
            .bind(instance_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get::<String, _>("owner_id"))
            .transpose()?)
    }

    /// The single writer of `instances.state` (invariant). Writes an
    /// `instance_state_changed` event when the state actually changes.
    async fn set_state_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        instance_id: &str,
        state: InstanceState,
        error_reason: Option<&str>,
    ) -> Result<(), JobError> {
        let now = self.core.now_ms();
        let row = sqlx::query("SELECT owner_id, state FROM instances WHERE id = $1")
            .bind(instance_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(JobError::NotFound)?;
        let owner: String = row.try_get("owner_id")?;
        let old: String = row.try_get("state")?;
        sqlx::query(
            "UPDATE instances SET state = $1, error_reason = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(error_reason.map(str::to_string))
        .bind(now)
        .bind(instance_id)
        .execute(&mut *conn)
        .await?;
        if old != state.as_str() {
            let detail = match error_reason {
                Some(r) => format!("{old} → {state}: {r}"),
                None => format!("{old} → {state}"),
            };
            record_instance_event(
                conn,
                now,
                &owner,
                instance_id,
                &Actor::system(),
                AuditAction::InstanceStateChanged,
                &detail,
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(60), MAX_BACKOFF);
    }

    #[test]
    fn kinds_round_trip_and_final_states() {
        for k in [
            JobKind::Provision,
            JobKind::Start,
            JobKind::Stop,
            JobKind::Reboot,
            JobKind::Delete,
        ] {
            assert_eq!(JobKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(JobKind::Stop.final_state(), InstanceState::Stopped);
        assert_eq!(JobKind::Delete.final_state(), InstanceState::Deleted);
    }
}
