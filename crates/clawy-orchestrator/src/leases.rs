//! Host leases: several `clawy server` replicas on one PostgreSQL share the poll and
//! reconcile work by host. The database is the only coordinator; every
//! step is one atomic statement, and no transaction is held across an agent call.
//!
//! Every refresh (a third of the lease period), a replica:
//! 1. renews its row in `control_replicas` (alive until now + lease);
//! 2. computes its fair share, ⌈hosts / live replicas⌉;
//! 3. renews the leases it holds (`UPDATE … WHERE owner = me`), and hands back the
//!    ones above its share (their `lease_until` set to 0: free at once);
//! 4. claims free or expired hosts up to its share with one
//!    `INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE lease_until < now`: PostgreSQL
//!    re-checks the condition on the locked row, so two replicas never both win a
//!    host.
//!
//! A replica killed with -9 stops renewing: its hosts' leases expire after one
//! lease period and the others claim them at their next refresh (≤ lease + lease/3).
//!
//! The poller also claims a poll slot per host (`polled_at`, which stays with the
//! host when its lease changes hands): a host is polled only if its last poll by
//! ANY replica is at least 9/10 of the interval old, so a lease moving mid-interval
//! never makes a host polled twice in one interval.
//!
//! SQLite is single-replica by nature (one file, one writer): leases are off there;
//! see docs/DECISIONS.md. On PostgreSQL they are on when `CLAWY_HOST_LEASE_SECS` is
//! set (operators running more than one replica set it on every replica).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clawy_core::Core;
use sqlx::Row;

use crate::error::OrchestratorError;

/// Environment variable turning host leases on, with the lease period in seconds.
pub const HOST_LEASE_ENV: &str = "CLAWY_HOST_LEASE_SECS";

/// The lease period from `CLAWY_HOST_LEASE_SECS` (≥ 2 s), if set.
pub fn lease_from_env() -> Option<Duration> {
    std::env::var(HOST_LEASE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s >= 2)
        .map(Duration::from_secs)
}

struct Held {
    hosts: HashSet<String>,
    at: Option<Instant>,
}

/// This replica's leases.
pub struct HostLeases {
    core: std::sync::Arc<Core>,
    replica: String,
    lease: Duration,
    held: tokio::sync::Mutex<Held>,
}

impl std::fmt::Debug for HostLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLeases")
            .field("replica", &self.replica)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn ids(rows: &[sqlx::any::AnyRow]) -> Result<Vec<String>, sqlx::Error> {
    rows.iter()
        .map(|r| r.try_get::<String, _>("host_id"))
        .collect()
}

impl HostLeases {
    pub fn new(core: std::sync::Arc<Core>, replica: String, lease: Duration) -> Self {
        HostLeases {
            core,
            replica,
            lease,
            held: tokio::sync::Mutex::new(Held {
                hosts: HashSet::new(),
                at: None,
            }),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How often [`HostLeases::refresh`] runs: a third of the lease, so a renewal
    /// that fails once does not lose the lease.
    pub fn refresh_every(&self) -> Duration {
        self.lease / 3
    }

    /// The hosts this replica holds, refreshed first when the last refresh is older
    /// than [`HostLeases::refresh_every`].
    pub async fn owned(&self) -> Result<HashSet<String>, OrchestratorError> {
        let mut held = self.held.lock().await;
        if held.at.is_none_or(|t| t.elapsed() >= self.refresh_every()) {
            held.hosts = self.refresh_db().await?;
            held.at = Some(Instant::now());
        }
        Ok(held.hosts.clone())
    }

    /// Renews, rebalances and claims now (the periodic task).
    pub async fn refresh(&self) -> Result<usize, OrchestratorError> {
        let mut held = self.held.lock().await;
        held.hosts = self.refresh_db().await?;
        held.at = Some(Instant::now());
        Ok(held.hosts.len())
    }

    async fn refresh_db(&self) -> Result<HashSet<String>, OrchestratorError> {
        let pool = self.core.store().pool();
        let me = self.replica.as_str();
        let now = self.core.now_ms();
        let until = now + ms(self.lease);
        sqlx::query(
            "INSERT INTO control_replicas (id, alive_until) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET alive_until = excluded.alive_until",
        )
        .bind(me)
        .bind(until)
        .execute(pool)
        .await?;
        let counts = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM control_replicas WHERE alive_until >= $1) AS replicas, \
             (SELECT COUNT(*) FROM hosts) AS hosts",
        )
        .bind(now)
        .fetch_one(pool)
        .await?;
        let replicas = counts.try_get::<i64, _>("replicas")?.max(1);
        let hosts = counts.try_get::<i64, _>("hosts")?.max(0);
        let share = (hosts + replicas - 1) / replicas;
        let mut mine: Vec<String> = ids(&sqlx::query(
            "UPDATE host_leases SET lease_until = $1 WHERE owner = $2 RETURNING host_id",
        )
        .bind(until)
        .bind(me)
        .fetch_all(pool)
        .await?)?;
        mine.sort();
        let held = mine.len() as i64;
        if held > share {
            // Hand the surplus back at once (a replica joined): the others claim it
            // at their next refresh; `polled_at` stays, so nothing is polled twice.
            let surplus = mine.split_off(share as usize);
            for chunk in surplus.chunks(500) {
                let list = (0..chunk.len())
                    .map(|k| format!("${}", k + 2))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE host_leases SET lease_until = 0 WHERE owner = $1 AND host_id IN ({list})"
                )))
                .bind(me);
                for id in chunk {
                    q = q.bind(id.clone());
                }
                q.execute(pool).await?;
            }
        } else if held < share {
            let claimed = ids(&sqlx::query(
                "INSERT INTO host_leases (host_id, owner, lease_until) \
                 SELECT h.id, $1, $2 FROM hosts h LEFT JOIN host_leases l ON l.host_id = h.id \
                 WHERE l.host_id IS NULL OR l.lease_until < $3 ORDER BY h.id LIMIT $4 \
                 ON CONFLICT (host_id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until \
                 WHERE host_leases.lease_until < $3 RETURNING host_id",
            )
            .bind(me)
            .bind(until)
            .bind(now)
            .bind(share - held)
            .fetch_all(pool)
            .await?)?;
            mine.extend(claimed);
        }
        Ok(mine.into_iter().collect())
    }

    /// Of `hosts` (held by this replica), the ones whose poll slot this replica
    /// takes now: not polled by any replica in the last 9/10 of `interval`. One
    /// statement; the slot is taken before the agent is asked, no lock is held.
    pub async fn claim_polls(
        &self,
        interval: Duration,
    ) -> Result<HashSet<String>, OrchestratorError> {
        let now = self.core.now_ms();
        let rows = sqlx::query(
            "UPDATE host_leases SET polled_at = $1 WHERE owner = $2 AND lease_until >= $1 \
             AND (polled_at IS NULL OR polled_at <= $3) RETURNING host_id",
        )
        .bind(now)
        .bind(&self.replica)
        .bind(now - ms(interval) * 9 / 10)
        .fetch_all(self.core.store().pool())
        .await?;
        Ok(ids(&rows)?.into_iter().collect())
    }

    /// Gives every lease back (graceful shutdown): the other replicas take the
    /// hosts at their next refresh instead of after the lease expires.
    pub async fn release_all(&self) -> Result<(), OrchestratorError> {
        let pool = self.core.store().pool();
        sqlx::query("UPDATE host_leases SET lease_until = 0 WHERE owner = $1")
            .bind(&self.replica)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM control_replicas WHERE id = $1")
            .bind(&self.replica)
            .execute(pool)
            .await?;
        self.held.lock().await.hosts.clear();
        Ok(())
    }
}
