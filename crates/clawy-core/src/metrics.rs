//! Instance metrics and health (ACCESS-1: only what the host sees of a VM — CPU,
//! memory, disk, network counters, uptime, and a probe of the gateway port; nothing
//! from inside the guest).
//!
//! Raw samples are kept for 24 h; hourly rollups (avg and max) of completed hours for
//! 30 days. [`Metrics::downsample_and_purge`] runs on every poll cycle, so the rows per
//! instance stay bounded (≤ 24 h / poll interval raw + 720 rollups). Health keeps
//! only the latest probe per instance. There is no in-guest heartbeat: the only
//! service state is `gateway`, from the probe.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::Core;
use crate::clock::ms_to_datetime;
use crate::db::b2i;
use crate::error::{DomainError, ErrorKind, InternalError, internal_from};
use crate::instances::InstanceHealth;

pub const RAW_RETENTION_MS: i64 = 24 * 3600 * 1000;
pub const ROLLUP_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;
pub const HOUR_MS: i64 = 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("The time range is empty or reversed.")]
    InvalidRange,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(MetricsError);

impl DomainError for MetricsError {
    fn code(&self) -> &'static str {
        match self {
            MetricsError::InvalidRange => "invalid_range",
            MetricsError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            MetricsError::InvalidRange => ErrorKind::Invalid { field: "range" },
            MetricsError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// One poll of one VM (from the agent's `VmStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSample {
    pub instance_id: String,
    pub at: DateTime<Utc>,
    pub cpu_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
}

/// A point of a series: raw (avg = max = the sample) or an hourly rollup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub at: DateTime<Utc>,
    pub cpu_percent: Option<f64>,
    pub cpu_percent_max: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_used_bytes_max: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    /// Counters since VM start (max within the hour for rollups).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Raw,
    Hourly,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub instance_id: String,
    pub resolution: Resolution,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub points: Vec<SeriesPoint>,
}

/// A health probe result to store (latest per instance).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    pub instance_id: String,
    pub checked_at: DateTime<Utc>,
    pub vm_state: Option<String>,
    pub tcp_ok: Option<bool>,
    pub http_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub uptime_secs: Option<u64>,
    /// ACCESS-1: a heartbeat the agent accepted (the contract's facts, JSON) and
    /// when, by the control plane's clock. `None` keeps the stored one.
    pub heartbeat: Option<(String, DateTime<Utc>)>,
}

/// What one purge pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeStats {
    pub raw_deleted: u64,
    pub rollups_deleted: u64,
    pub rollups_written: u64,
}

/// Rows per multi-row INSERT: 500 × 8 columns = 4,000 parameters, far below
/// SQLite's 32,766 and PostgreSQL's 65,535.
pub const WRITE_BATCH: usize = 500;

/// Rows deleted per purge statement: each DELETE is its own short transaction, so a
/// purge after a long outage never holds a writer lock over millions of rows.
pub const PURGE_BATCH: i64 = 5_000;

/// `($1, $2, $3), ($4, $5, $6), …`: `rows` tuples of `cols` placeholders (only
/// numbers go into the SQL text; the values are bound).
fn values_list(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

fn i64_opt(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

fn u64_col(r: &sqlx::any::AnyRow, col: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(|v| v.max(0) as u64))
}

pub struct Metrics<'a> {
    pub(crate) core: &'a Core,
}

impl Metrics<'_> {
    /// Stores samples (a repeated (instance, time) is ignored).
    pub async fn insert_samples(&self, samples: &[MetricSample]) -> Result<(), MetricsError> {
        self.record_poll(samples, &[]).await
    }

    /// Replaces the instance's latest health.
    pub async fn record_health(&self, h: &HealthUpdate) -> Result<(), MetricsError> {
        self.record_health_many(std::slice::from_ref(h)).await
    }

    /// Replaces the latest health of many instances in ONE transaction.
    pub async fn record_health_many(&self, rows: &[HealthUpdate]) -> Result<(), MetricsError> {
        self.record_poll(&[], rows).await
    }

    /// One host's poll: its samples and its health in ONE transaction, written as
    /// multi-row statements of [`WRITE_BATCH`] rows (a statement per VM
    /// made the poll pass cost a round trip per instance; now a host of up to 500
    /// VMs costs BEGIN, one INSERT, one upsert, COMMIT on both backends).
    pub async fn record_poll(
        &self,
        samples: &[MetricSample],
        health: &[HealthUpdate],
    ) -> Result<(), MetricsError> {
        if samples.is_empty() && health.is_empty() {
            return Ok(());
        }
        // PostgreSQL refuses an upsert that touches one row twice in one statement:
        // the latest update of an instance wins, as it would row by row.
        let mut latest: Vec<&HealthUpdate> = Vec::with_capacity(health.len());
        let mut seen = std::collections::HashMap::new();
        for h in health {
            match seen.get(h.instance_id.as_str()) {
                Some(&k) => latest[k] = h,
                None => {
                    seen.insert(h.instance_id.as_str(), latest.len());
                    latest.push(h);
                }
            }
        }
        let mut tx = self.core.store().pool().begin().await?;
        for chunk in samples.chunks(WRITE_BATCH) {
            let sql = format!(
                "INSERT INTO metric_samples (instance_id, at, cpu_percent, memory_used_bytes, disk_used_bytes, \
                 net_rx_bytes, net_tx_bytes, uptime_secs) VALUES {} ON CONFLICT (instance_id, at) DO NOTHING",
                values_list(chunk.len(), 8)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q
                    .bind(s.instance_id.clone())
                    .bind(s.at.timestamp_millis())
                    .bind(s.cpu_percent)
                    .bind(i64_opt(s.memory_used_bytes))
                    .bind(i64_opt(s.disk_used_bytes))
                    .bind(i64_opt(s.net_rx_bytes))
                    .bind(i64_opt(s.net_tx_bytes))
                    .bind(i64_opt(s.uptime_secs));
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in latest.chunks(WRITE_BATCH) {
            let sql = format!(
                "INSERT INTO instance_health (instance_id, checked_at, vm_state, tcp_ok, http_status, latency_ms, uptime_secs, \
                 heartbeat, heartbeat_at) \
                 VALUES {} ON CONFLICT (instance_id) DO UPDATE SET \
                 checked_at = excluded.checked_at, vm_state = excluded.vm_state, tcp_ok = excluded.tcp_ok, \
                 http_status = excluded.http_status, latency_ms = excluded.latency_ms, uptime_secs = excluded.uptime_secs, \
                 heartbeat = COALESCE(excluded.heartbeat, instance_health.heartbeat), \
                 heartbeat_at = COALESCE(excluded.heartbeat_at, instance_health.heartbeat_at)",
                values_list(chunk.len(), 9)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for h in chunk {
                q = q
                    .bind(h.instance_id.clone())
                    .bind(h.checked_at.timestamp_millis())
                    .bind(h.vm_state.clone())
                    .bind(h.tcp_ok.map(b2i))
                    .bind(h.http_status.map(i64::from))
                    .bind(i64_opt(h.latency_ms))
                    .bind(i64_opt(h.uptime_secs))
                    .bind(h.heartbeat.as_ref().map(|(j, _)| j.clone()))
                    .bind(h.heartbeat.as_ref().map(|(_, at)| at.timestamp_millis()));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn latest_health(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceHealth>, MetricsError> {
        let row = sqlx::query(
            "SELECT checked_at, vm_state, tcp_ok, http_status, latency_ms, uptime_secs, heartbeat, heartbeat_at \
             FROM instance_health WHERE instance_id = $1",
        )
        .bind(instance_id)
        .fetch_optional(self.core.store().pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(InstanceHealth {
            checked_at: ms_to_datetime(r.try_get("checked_at")?),
            vm_state: r.try_get("vm_state")?,
            tcp_ok: r.try_get::<Option<i64>, _>("tcp_ok")?.map(|v| v != 0),
            http_status: u64_col(&r, "http_status")?.and_then(|v| u16::try_from(v).ok()),
            latency_ms: u64_col(&r, "latency_ms")?,
            uptime_secs: u64_col(&r, "uptime_secs")?,
            heartbeat: r
                .try_get::<Option<String>, _>("heartbeat")?
                .and_then(|j| serde_json::from_str(&j).ok()),
            heartbeat_at: r
                .try_get::<Option<i64>, _>("heartbeat_at")?
                .map(ms_to_datetime),
        }))
    }

    /// Points between `from` and `to`: raw samples when the range lies within the last
    /// 24 h, hourly rollups otherwise. Callers scope the instance by owner first.
    pub async fn series(
        &self,
        instance_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Series, MetricsError> {
        let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
        if t <= f {
            return Err(MetricsError::InvalidRange);
        }
        let now = self.core.now_ms();
        let pool = self.core.store().pool();
        let (resolution, points) = if f >= now - RAW_RETENTION_MS {
            let rows = sqlx::query(
                "SELECT at, cpu_percent, memory_used_bytes, disk_used_bytes, net_rx_bytes, net_tx_bytes, uptime_secs \
                 FROM metric_samples WHERE instance_id = $1 AND at >= $2 AND at <= $3 ORDER BY at",
            )
            .bind(instance_id)
            .bind(f)
            .bind(t)
            .fetch_all(pool)
            .await?;
            let pts = rows
                .iter()
                .map(|r| {
                    let cpu: Option<f64> = r.try_get("cpu_percent")?;
                    let mem = u64_col(r, "memory_used_bytes")?;
                    Ok(SeriesPoint {
                        at: ms_to_datetime(r.try_get("at")?),
                        cpu_percent: cpu,
                        cpu_percent_max: cpu,
                        memory_used_bytes: mem,
                        memory_used_bytes_max: mem,
                        disk_used_bytes: u64_col(r, "disk_used_bytes")?,
                        net_rx_bytes: u64_col(r, "net_rx_bytes")?,
                        net_tx_bytes: u64_col(r, "net_tx_bytes")?,
                        uptime_secs: u64_col(r, "uptime_secs")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            (Resolution::Raw, pts)
        } else {
            let rows = sqlx::query(
                "SELECT hour, cpu_avg, cpu_max, memory_avg, memory_max, disk_max, net_rx_max, net_tx_max, uptime_max \
                 FROM metric_rollups WHERE instance_id = $1 AND hour >= $2 AND hour <= $3 ORDER BY hour",
            )
            .bind(instance_id)
            .bind(f - f.rem_euclid(HOUR_MS))
            .bind(t)
            .fetch_all(pool)
            .await?;
            let pts = rows
                .iter()
                .map(|r| {
                    Ok(SeriesPoint {
                        at: ms_to_datetime(r.try_get("hour")?),
                        cpu_percent: r.try_get("cpu_avg")?,
                        cpu_percent_max: r.try_get("cpu_max")?,
                        memory_used_bytes: r
                            .try_get::<Option<f64>, _>("memory_avg")?
                            .map(|v| v.max(0.0) as u64),
                        memory_used_bytes_max: u64_col(r, "memory_max")?,
                        disk_used_bytes: u64_col(r, "disk_max")?,
                        net_rx_bytes: u64_col(r, "net_rx_max")?,
                        net_tx_bytes: u64_col(r, "net_tx_max")?,
                        uptime_secs: u64_col(r, "uptime_max")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            (Resolution::Hourly, pts)
        };
        Ok(Series {
            instance_id: instance_id.to_string(),
            resolution,
            from,
            to,
            points,
        })
    }

    /// Rolls up every COMPLETED hour not rolled up yet, then deletes raw samples
    /// older than 24 h and rollups older than 30 days in batches of [`PURGE_BATCH`].
    ///
    /// This used to recompute the last three hours from raw rows on every
    /// poll cycle (at 100,000 instances and a 30 s interval, aggregating up to 36 M
    /// rows every 30 s). Now a watermark (`metric_rollup_progress`) remembers the
    /// last hour rolled up, so each raw row is aggregated once, in the first cycle
    /// after its hour ends; the hour in progress is only in the raw series (which
    /// serves every range within the last 24 h). The watermark moves with a
    /// compare-and-set, so two replicas never both roll up the same hours (and a
    /// repeated rollup would be harmless anyway: the upsert recomputes the hour).
    pub async fn downsample_and_purge(
        &self,
        now: DateTime<Utc>,
    ) -> Result<PurgeStats, MetricsError> {
        let now = now.timestamp_millis();
        let this_hour = now - now.rem_euclid(HOUR_MS);
        let pool = self.core.store().pool();
        let mut written = 0;
        let mark: Option<i64> =
            sqlx::query("SELECT rolled_until FROM metric_rollup_progress WHERE id = 1")
                .fetch_optional(pool)
                .await?
                .map(|r| r.try_get("rolled_until"))
                .transpose()?;
        // First run (or a watermark from before the raw horizon): start at the oldest
        // hour raw samples can still cover.
        let horizon = (now - RAW_RETENTION_MS) - (now - RAW_RETENTION_MS).rem_euclid(HOUR_MS);
        let from = mark.unwrap_or(horizon).max(horizon);
        if from < this_hour {
            let mut tx = pool.begin().await?;
            let moved = match mark {
                Some(old) => sqlx::query(
                    "UPDATE metric_rollup_progress SET rolled_until = $1 WHERE id = 1 AND rolled_until = $2",
                )
                .bind(this_hour)
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "INSERT INTO metric_rollup_progress (id, rolled_until) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                )
                .bind(this_hour)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if moved == 1 {
                written = sqlx::query(
                    "INSERT INTO metric_rollups (instance_id, hour, samples, cpu_avg, cpu_max, memory_avg, memory_max, \
                     disk_max, net_rx_max, net_tx_max, uptime_max) \
                     SELECT instance_id, (at / 3600000) * 3600000 AS hr, COUNT(*), AVG(cpu_percent), MAX(cpu_percent), \
                     CAST(AVG(memory_used_bytes) AS DOUBLE PRECISION), MAX(memory_used_bytes), MAX(disk_used_bytes), \
                     MAX(net_rx_bytes), MAX(net_tx_bytes), MAX(uptime_secs) FROM metric_samples \
                     WHERE at >= $1 AND at < $2 GROUP BY instance_id, (at / 3600000) * 3600000 \
                     ON CONFLICT (instance_id, hour) DO UPDATE SET samples = excluded.samples, \
                     cpu_avg = excluded.cpu_avg, cpu_max = excluded.cpu_max, memory_avg = excluded.memory_avg, \
                     memory_max = excluded.memory_max, disk_max = excluded.disk_max, net_rx_max = excluded.net_rx_max, \
                     net_tx_max = excluded.net_tx_max, uptime_max = excluded.uptime_max",
                )
                .bind(from)
                .bind(this_hour)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
        }
        let raw = self
            .purge_batches(
                "DELETE FROM metric_samples WHERE (instance_id, at) IN \
                 (SELECT instance_id, at FROM metric_samples WHERE at < $1 LIMIT $2)",
                now - RAW_RETENTION_MS,
            )
            .await?;
        let rollups = self
            .purge_batches(
                "DELETE FROM metric_rollups WHERE (instance_id, hour) IN \
                 (SELECT instance_id, hour FROM metric_rollups WHERE hour < $1 LIMIT $2)",
                now - ROLLUP_RETENTION_MS,
            )
            .await?;
        Ok(PurgeStats {
            raw_deleted: raw,
            rollups_deleted: rollups,
            rollups_written: written,
        })
    }

    /// Runs a bounded DELETE (`$1` the cut-off, `$2` the batch) until it deletes
    /// less than a batch. Each statement commits on its own: writers wait for one
    /// batch at most, never for the whole purge.
    async fn purge_batches(&self, sql: &'static str, before: i64) -> Result<u64, MetricsError> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(self.core.store().pool())
                .await?
                .rows_affected();
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// (raw samples, rollups) stored for the instance: retention checks.
    pub async fn row_counts(&self, instance_id: &str) -> Result<(u64, u64), MetricsError> {
        let pool = self.core.store().pool();
        let raw: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM metric_samples WHERE instance_id = $1")
                .bind(instance_id)
                .fetch_one(pool)
                .await?
                .try_get("n")?;
        let roll: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM metric_rollups WHERE instance_id = $1")
                .bind(instance_id)
                .fetch_one(pool)
                .await?
                .try_get("n")?;
        Ok((raw.max(0) as u64, roll.max(0) as u64))
    }
}
