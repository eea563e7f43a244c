//! Vulnerability reports (REPORT-1): anyone may submit one; it is stored, gets a
//! tracking id (`CLAWY-<year>-<6 chars>`), is rate-limited per client address, and
//! the configured security contact is notified by email. Operators list and read them.

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use sqlx::Row;
use std::time::Duration;

use crate::Core;
use crate::accounts::{User, normalize_email};
use crate::actor::Actor;
use crate::audit::AuditAction;
use crate::clock::ms_to_datetime;
use crate::crypto::random_bytes;
use crate::error::{CoreError, DomainError, ErrorKind, InternalError, internal_from};
use crate::mail::Mail;
use crate::page::{Keyset, Page, PageRequest, created_cursor};
use crate::throttle::ThrottleError;

pub const TITLE_MAX_CHARS: usize = 200;
pub const BODY_MAX_CHARS: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Give the report a title of 1 to {TITLE_MAX_CHARS} characters.")]
    InvalidTitle,
    #[error("Describe the problem in 1 to {BODY_MAX_CHARS} characters.")]
    InvalidBody,
    #[error("The contact email address is not valid: {0}")]
    InvalidEmail(String),
    #[error("Too many reports from your address. Try again in {} minutes, or email the security contact directly.", retry_after.as_secs().div_ceil(60))]
    RateLimited { retry_after: Duration },
    #[error("Only operators can read security reports.")]
    Forbidden,
    #[error("No such report.")]
    NotFound,
    #[error(transparent)]
    Internal(InternalError),
}
internal_from!(ReportError);

impl From<InternalError> for ReportError {
    fn from(e: InternalError) -> Self {
        ReportError::Internal(e)
    }
}

impl From<ThrottleError> for ReportError {
    fn from(e: ThrottleError) -> Self {
        match e {
            ThrottleError::Throttled { retry_after } => ReportError::RateLimited { retry_after },
            ThrottleError::Internal(i) => ReportError::Internal(i),
        }
    }
}

impl DomainError for ReportError {
    fn code(&self) -> &'static str {
        match self {
            ReportError::InvalidTitle => "invalid_title",
            ReportError::InvalidBody => "invalid_body",
            ReportError::InvalidEmail(_) => "invalid_email",
            ReportError::RateLimited { .. } => "rate_limited",
            ReportError::Forbidden => "forbidden",
            ReportError::NotFound => "not_found",
            ReportError::Internal(_) => "internal",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            ReportError::InvalidTitle => ErrorKind::Invalid { field: "title" },
            ReportError::InvalidBody => ErrorKind::Invalid { field: "body" },
            ReportError::InvalidEmail(_) => ErrorKind::Invalid { field: "email" },
            ReportError::RateLimited { retry_after } => ErrorKind::Throttled {
                retry_after: *retry_after,
            },
            ReportError::Forbidden => ErrorKind::Forbidden,
            ReportError::NotFound => ErrorKind::NotFound,
            ReportError::Internal(_) => ErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub id: String,
    /// What the reporter is told, e.g. `CLAWY-2026-7KQ2MX`.
    pub tracking_id: String,
    pub reporter_email: Option<String>,
    pub title: String,
    pub body: String,
    pub client_addr: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Crockford base32 without ambiguous letters.
const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn tracking_id(year: i32) -> String {
    let bytes = random_bytes::<6>();
    let s: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % 32] as char)
        .collect();
    format!("CLAWY-{year}-{s}")
}

fn report_from_row(r: &sqlx::any::AnyRow) -> Result<Report, sqlx::Error> {
    Ok(Report {
        id: r.try_get("id")?,
        tracking_id: r.try_get("tracking_id")?,
        reporter_email: r.try_get("reporter_email")?,
        title: r.try_get("title")?,
        body: r.try_get("body")?,
        client_addr: r.try_get("client_addr")?,
        created_at: ms_to_datetime(r.try_get("created_at")?),
    })
}

const COLS: &str = "id, tracking_id, reporter_email, title, body, client_addr, created_at";

/// Reports, newest first.
const REPORT_ORDER: Keyset = Keyset {
    time: "created_at",
    key: "id",
    newest_first: true,
};

pub struct Reports<'a> {
    pub(crate) core: &'a Core,
}

impl Reports<'_> {
    /// Stores a report from anyone (no account needed), rate-limited per client address,
    /// and notifies the security contact in the background.
    pub async fn create(
        &self,
        reporter_email: Option<&str>,
        title: &str,
        body: &str,
        actor: &Actor,
    ) -> Result<Report, ReportError> {
        let title = title.trim();
        let body = body.trim();
        if title.is_empty()
            || title.chars().count() > TITLE_MAX_CHARS
            || title.chars().any(char::is_control)
        {
            return Err(ReportError::InvalidTitle);
        }
        if body.is_empty() || body.chars().count() > BODY_MAX_CHARS {
            return Err(ReportError::InvalidBody);
        }
        let reporter_email = match reporter_email.map(str::trim).filter(|s| !s.is_empty()) {
            Some(e) => {
                Some(normalize_email(e).map_err(|e| ReportError::InvalidEmail(e.to_string()))?)
            }
            None => None,
        };
        let subject = self.core.throttle().subject(&actor.client);
        let per_hour = self.core.config().throttle.reports_per_hour;
        self.core
            .throttle()
            .hit("report", &subject, per_hour, Duration::from_secs(3600))
            .await?;

        let now = self.core.now();
        let id = uuid::Uuid::new_v4().to_string();
        let mut tracking = tracking_id(now.year());
        for attempt in 0..5 {
            let res = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO security_reports ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            )))
            .bind(&id)
            .bind(&tracking)
            .bind(reporter_email.clone())
            .bind(title)
            .bind(body)
            .bind(actor.client.addr_string())
            .bind(now.timestamp_millis())
            .execute(self.core.store().pool())
            .await;
            match res {
                Ok(_) => break,
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() && attempt < 4 => {
                    tracking = tracking_id(now.year());
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.core
            .audit()
            .record(None, actor, AuditAction::ReportSubmitted, &tracking)
            .await?;
        let report = Report {
            id,
            tracking_id: tracking,
            reporter_email,
            title: title.to_string(),
            body: body.to_string(),
            client_addr: actor.client.addr_string(),
            created_at: ms_to_datetime(now.timestamp_millis()),
        };
        let contact = &self.core.config().security_contact;
        if contact.contains('@') {
            self.core.mailer().send_in_background(Mail {
                to: contact.trim_start_matches("mailto:").to_string(),
                subject: format!("[{}] Security report: {}", report.tracking_id, report.title),
                body: format!(
                    "A security report was submitted.\n\nTracking id: {}\nReceived: {}\nReporter: {}\nClient address: {}\n\nTitle: {}\n\n{}\n",
                    report.tracking_id,
                    report.created_at.to_rfc3339(),
                    report.reporter_email.as_deref().unwrap_or("(anonymous)"),
                    report.client_addr.as_deref().unwrap_or("(unknown)"),
                    report.title,
                    report.body
                ),
                kind: "security_report",
            });
        }
        Ok(report)
    }

    /// All reports, newest first (operators only).
    pub async fn list(&self, viewer: &User) -> Result<Vec<Report>, ReportError> {
        if !viewer.is_operator {
            return Err(ReportError::Forbidden);
        }
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM security_reports ORDER BY created_at DESC, id"
        )));
        self.core.store().rows(q, report_from_row).await
    }

    /// A page of reports, newest first (operators only).
    pub async fn page(&self, viewer: &User, req: &PageRequest) -> Result<Page<Report>, CoreError> {
        if !viewer.is_operator {
            return Err(CoreError::new(ReportError::Forbidden));
        }
        let select = format!("SELECT {COLS} FROM security_reports");
        let cursor = |r: &Report| created_cursor(r.created_at.timestamp_millis(), &r.id);
        self.core
            .store()
            .page::<_, _, ReportError>(
                REPORT_ORDER,
                req,
                (&select, ""),
                |q| q,
                report_from_row,
                cursor,
            )
            .await
    }

    /// One report by tracking id (operators only).
    pub async fn get(&self, viewer: &User, tracking_id: &str) -> Result<Report, ReportError> {
        if !viewer.is_operator {
            return Err(ReportError::Forbidden);
        }
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM security_reports WHERE tracking_id = $1"
        )))
        .bind(tracking_id.trim().to_ascii_uppercase());
        self.core
            .store()
            .row_or(q, report_from_row, ReportError::NotFound)
            .await
    }
}
