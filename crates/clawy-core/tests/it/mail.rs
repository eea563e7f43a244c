//! Mail: bodies (which may hold a reset link) never reach the logs.

use crate::common::*;
use clawy_core::mail::{Mail, MailError, Mailer};
use clawy_core::{Actor, ServerConfig};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Buf, tracing::subscriber::DefaultGuard) {
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    (buf.clone(), tracing::subscriber::set_default(sub))
}

#[tokio::test]
async fn auth_1_mail_without_smtp_is_logged_as_not_sent_without_its_body() {
    let (buf, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::for_tests(dir.path(), "sqlite://unused.db");
    let mailer = Mailer::from_config(&config).unwrap();
    assert!(!mailer.is_configured());
    let mail = Mail {
        to: "someone@example.com".into(),
        subject: "Reset your Clawy password".into(),
        body: "https://clawy.test/reset-password?token=SECRET-TOKEN-123".into(),
        kind: "password_reset",
    };
    assert!(!format!("{mail:?}").contains("SECRET-TOKEN-123"));
    assert!(matches!(
        mailer.send(&mail).await,
        Err(MailError::NotConfigured)
    ));
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    // The capture holds the mailer's line (with the subject, so fields are logged)
    // before it is searched for the body.
    assert!(logged.contains("mail not sent"), "{logged}");
    assert!(logged.contains("Reset your Clawy password"), "{logged}");
    assert!(!logged.contains("SECRET-TOKEN-123"), "{logged}");
}

#[tokio::test]
async fn auth_1_reset_flow_logs_no_token() {
    let (buf, _guard) = capture();
    let t = TestCore::with_smtp(|_| {}).await;
    t.user("logs@example.com").await;
    t.core
        .accounts()
        .request_password_reset("logs@example.com", &Actor::anonymous(client("192.0.2.1")))
        .await
        .unwrap();
    let mail = t
        .smtp
        .as_ref()
        .unwrap()
        .wait_for_containing("reset-password?token=")
        .await
        .unwrap();
    let start = mail.body.find("token=").unwrap() + 6;
    let token: String = mail.body[start..].chars().take(43).collect();
    // The background sender logs its outcome after the SMTP sink has the mail; wait
    // for that line (bounded), so the capture is known to hold the sender's log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let sent_line = loop {
        let logged = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        if let Some(l) = logged.lines().find(|l| l.contains("mail sent")) {
            break l.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the capture never saw the sender's \"mail sent\" line: {logged}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        sent_line.contains("kind=\"password_reset\"") || sent_line.contains("kind=password_reset"),
        "{sent_line}"
    );
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.contains(&token), "reset token leaked into logs");
    assert!(!logged.contains(GOOD_PW), "password leaked into logs");
}
