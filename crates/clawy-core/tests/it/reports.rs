//! REPORT-1: vulnerability reports are stored, acknowledged with a tracking id,
//! rate-limited per address, and mailed to the security contact.

use crate::common::*;
use clawy_core::reports::ReportError;
use clawy_core::{Actor, DomainError, ErrorKind};
use std::time::Duration;

#[tokio::test]
async fn report_1_stored_tracked_and_mailed_to_the_security_contact() {
    let t = TestCore::with_smtp(|_| {}).await;
    let smtp = t.smtp.as_ref().unwrap();
    let r = t
        .core
        .reports()
        .create(
            Some(" Finder@Example.org "),
            "XSS in /login",
            "Steps: …",
            &Actor::anonymous(client("198.51.100.20")),
        )
        .await
        .unwrap();
    assert!(
        r.tracking_id.starts_with("CLAWY-2026-") && r.tracking_id.len() == "CLAWY-2026-".len() + 6,
        "{}",
        r.tracking_id
    );
    assert_eq!(r.reporter_email.as_deref(), Some("finder@example.org"));
    let mail = smtp.wait_for_containing(&r.tracking_id).await.unwrap();
    assert!(mail.to.contains("security@clawy.test"), "{}", mail.to);
    assert!(mail.body.contains("XSS in /login"));

    let op = t
        .core
        .accounts()
        .create_user("op@example.com", &pw(GOOD_PW), true, &Actor::system())
        .await
        .unwrap();
    let user = t.user("user@example.com").await;
    let list = t.core.reports().list(&op).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        t.core
            .reports()
            .get(&op, &r.tracking_id.to_lowercase())
            .await
            .unwrap(),
        r
    );
    let e = t.core.reports().list(&user).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert!(matches!(
        t.core.reports().get(&op, "CLAWY-2026-NOPE00").await,
        Err(ReportError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn report_1_concurrent_reports_store_only_the_limit() {
    let t = TestCore::with(|c| c.throttle.reports_per_hour = 3).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let core = t.core.clone();
        tasks.push(tokio::spawn(async move {
            core.reports()
                .create(
                    None,
                    &format!("burst {i}"),
                    "details",
                    &Actor::anonymous(client("203.0.113.33")),
                )
                .await
        }));
    }
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(ReportError::RateLimited { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 17);
    assert_eq!(t.count("SELECT COUNT(*) FROM security_reports").await, 3);
}

#[tokio::test]
async fn report_1_rate_limited_per_client_address() {
    let t = TestCore::new().await;
    let reports = t.core.reports();
    let c = Actor::anonymous(client("203.0.113.30"));
    for i in 0..5 {
        reports
            .create(None, &format!("report {i}"), "details", &c)
            .await
            .unwrap();
    }
    let e = reports
        .create(None, "six", "details", &c)
        .await
        .unwrap_err();
    let ReportError::RateLimited { retry_after } = e else {
        panic!("{e:?}")
    };
    assert!(retry_after <= Duration::from_secs(3600) && retry_after > Duration::from_secs(3500));
    assert_eq!(e_code(retry_after), "rate_limited");
    reports
        .create(
            None,
            "other address",
            "details",
            &Actor::anonymous(client("203.0.113.31")),
        )
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(3601));
    reports
        .create(None, "an hour later", "details", &c)
        .await
        .unwrap();
    // Validation.
    assert_eq!(
        reports.create(None, "", "x", &c).await.unwrap_err().code(),
        "invalid_title"
    );
    assert_eq!(
        reports.create(None, "t", " ", &c).await.unwrap_err().code(),
        "invalid_body"
    );
    assert_eq!(
        reports
            .create(Some("not-an-email"), "t", "b", &c)
            .await
            .unwrap_err()
            .code(),
        "invalid_email"
    );
}

fn e_code(retry_after: Duration) -> &'static str {
    ReportError::RateLimited { retry_after }.code()
}
