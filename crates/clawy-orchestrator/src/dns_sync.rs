//! Keeps the operator's DNS server in step with the instances (ACCESS-1):
//! the job runner publishes an instance's records right after "VM running" and
//! removes them once the delete confirmed the VM gone; a periodic pass finishes what
//! a crash or an unreachable server left undone and repairs drift (a record missing
//! or wrong on the server is rewritten, a deleted instance's record is removed).
//!
//! DNS never blocks an instance: a failure is stored on the instance
//! (`dns_error`, operators see it in the instance list), logged without any secret,
//! and retried on the next pass. Every call is bounded by `dns_timeout_secs`.
//!
//! The TSIG key is read (and opened) from the database at every pass, so
//! `clawy admin dns-set-key` takes effect without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clawy_core::Core;
use clawy_core::dns_records::{DnsWork, Wanted};
use clawy_core::instances::Instance;

use crate::dns::{DnsError, DnsName, DnsPublisher, DnsServer, NameRecords, TsigSecret};

/// What one pass did (tests read it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsReport {
    pub published: usize,
    pub removed: usize,
    pub repaired: usize,
    pub failed: usize,
    /// The pass could not talk to DNS at all (no key, bad settings): the reason.
    pub blocked: Option<String>,
}

pub struct DnsSync {
    core: Arc<Core>,
    /// Passes run so far (which of them read the records back).
    passes: AtomicU32,
}

impl std::fmt::Debug for DnsSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSync").finish_non_exhaustive()
    }
}

/// Why no publisher could be made.
fn no_key() -> String {
    "no TSIG key stored: run `clawy admin dns-set-key --key-name <name>`".to_string()
}

impl DnsSync {
    pub fn new(core: Arc<Core>) -> Self {
        DnsSync {
            core,
            passes: AtomicU32::new(0),
        }
    }

    /// True when the operator configured RFC 2136 publication.
    pub fn enabled(&self) -> bool {
        self.core.config().dns.is_some()
    }

    /// A publisher from the config and the sealed key; `Err` says what is missing.
    async fn publisher(&self) -> Result<Option<DnsPublisher>, String> {
        let Some(settings) = self.core.config().dns.clone() else {
            return Ok(None);
        };
        let key = self
            .core
            .dns_records()
            .tsig_key()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(no_key)?;
        let key_name = DnsName::parse(&key.name, "TSIG key name", 1).map_err(|e| e.to_string())?;
        let server = DnsServer {
            addr: settings.server,
            zone: settings.zone.clone(),
            key_name,
            secret: TsigSecret::new(key.secret.to_vec()),
            timeout: Duration::from_secs(settings.timeout_secs),
            ttl: settings.ttl_secs,
        };
        DnsPublisher::new(server)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Publishes or removes one instance's records now (a job step). Never fails
    /// the job: a problem is stored on the instance and the periodic pass retries.
    pub async fn sync_instance(&self, inst: &Instance) {
        if !self.enabled() {
            return;
        }
        let work = match self.core.dns_records().work_for(inst).await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(instance = %inst.id, error = %e, "reading the DNS work failed");
                return;
            }
        };
        match self.publisher().await {
            Ok(Some(p)) => {
                let _ = self.apply(&p, &work, false).await;
            }
            Ok(None) => {}
            Err(reason) => self.fail(&work, &reason).await,
        }
    }

    /// One periodic pass: unfinished work, then (with `check_published`) a read-back
    /// of every published record.
    pub async fn pass(&self, check_published: bool) -> DnsReport {
        let mut report = DnsReport::default();
        if !self.enabled() {
            return report;
        }
        let work = match self.core.dns_records().work(check_published).await {
            Ok(w) => w,
            Err(e) => {
                report.blocked = Some(e.to_string());
                return report;
            }
        };
        if work.is_empty() {
            return report;
        }
        let publisher = match self.publisher().await {
            Ok(Some(p)) => p,
            Ok(None) => return report,
            Err(reason) => {
                tracing::warn!(error = %reason, "DNS publication is blocked");
                for w in &work {
                    if w.instance.dns.state.as_deref() != Some("published") {
                        self.fail(w, &reason).await;
                        report.failed += 1;
                    }
                }
                report.blocked = Some(reason);
                return report;
            }
        };
        for w in &work {
            let verify = w.instance.dns.state.as_deref() == Some("published");
            match self.apply(&publisher, w, verify).await {
                Ok(Applied::Published) => report.published += 1,
                Ok(Applied::Removed) => report.removed += 1,
                Ok(Applied::Repaired) => report.repaired += 1,
                Ok(Applied::Unchanged) => {}
                Err(e) => {
                    report.failed += 1;
                    // An unreachable server or a refused key fails every name the
                    // same way: stop here and retry on the next pass.
                    if matches!(
                        e,
                        DnsError::Timeout { .. }
                            | DnsError::Unreachable { .. }
                            | DnsError::TsigRejected { .. }
                    ) {
                        report.blocked = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        report
    }

    async fn apply(
        &self,
        p: &DnsPublisher,
        w: &DnsWork,
        verify_first: bool,
    ) -> Result<Applied, DnsError> {
        let name = match DnsName::parse(&w.hostname, "instance hostname", 2) {
            Ok(n) => n,
            Err(e) => {
                self.fail(w, &e.to_string()).await;
                return Ok(Applied::Unchanged);
            }
        };
        let result = match &w.wanted {
            Wanted::NoAddress { host } => {
                self.fail(
                    w,
                    &format!(
                        "host {host} has no public address: run `clawy admin host-public-address {host} --ipv4 …`"
                    ),
                )
                .await;
                return Ok(Applied::Unchanged);
            }
            Wanted::Records { a, aaaa } => {
                let want = NameRecords {
                    a: a.clone(),
                    aaaa: aaaa.clone(),
                };
                if verify_first {
                    match p.matches(&name, &want).await {
                        Ok(true) => Ok(Applied::Unchanged),
                        Ok(false) => p.upsert(&name, &want).await.map(|()| Applied::Repaired),
                        Err(e) => Err(e),
                    }
                } else {
                    p.upsert(&name, &want).await.map(|()| Applied::Published)
                }
            }
            Wanted::Absent => p.delete(&name).await.map(|()| Applied::Removed),
        };
        match &result {
            Ok(applied) => {
                if *applied != Applied::Unchanged || w.instance.dns.error.is_some() {
                    if let Err(e) = self.core.dns_records().mark_done(w).await {
                        tracing::warn!(instance = %w.instance.id, error = %e, "recording the DNS state failed");
                    }
                }
                if *applied == Applied::Repaired {
                    tracing::info!(instance = %w.instance.id, hostname = %w.hostname, "DNS drift repaired");
                }
            }
            Err(e) => self.fail(w, &e.to_string()).await,
        }
        result
    }

    async fn fail(&self, w: &DnsWork, reason: &str) {
        tracing::warn!(instance = %w.instance.id, hostname = %w.hostname, error = %reason, "DNS publication failed; retrying later");
        if let Err(e) = self.core.dns_records().mark_failed(w, reason).await {
            tracing::warn!(instance = %w.instance.id, error = %e, "recording the DNS failure failed");
        }
    }

    /// The periodic pass (`Orchestrator::start` runs it at the reconciler's
    /// interval): every `verify_every`-th one also reads the published records back.
    pub async fn periodic_pass(&self, verify_every: u32) -> DnsReport {
        let n = self.passes.fetch_add(1, Ordering::Relaxed);
        let r = self.pass(verify_every <= 1 || n % verify_every == 0).await;
        if r != DnsReport::default() {
            tracing::info!(published = r.published, removed = r.removed, repaired = r.repaired, failed = r.failed, blocked = ?r.blocked, "DNS pass");
        }
        r
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Published,
    Removed,
    Repaired,
    Unchanged,
}
