//! Outgoing mail over SMTP (lettre, async on tokio).
//!
//! Mails can carry secrets (a password-reset link), so a [`Mail`]'s `Debug` never shows
//! its body, and nothing here logs a body. Without `smtp_url` a mail is logged as "not
//! sent" with its kind, recipient and subject only.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

use crate::config::ServerConfig;
use crate::error::{DomainError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail is not configured (no smtp_url)")]
    NotConfigured,
    #[error("config key `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("the mail could not be built: {0}")]
    Build(String),
    #[error("the mail server refused or could not be reached: {0}")]
    Send(String),
}

impl DomainError for MailError {
    fn code(&self) -> &'static str {
        match self {
            MailError::NotConfigured => "mail_not_configured",
            MailError::Config { .. } => "mail_config",
            MailError::Build(_) => "mail_build",
            MailError::Send(_) => "mail_send",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            MailError::NotConfigured | MailError::Send(_) => ErrorKind::Unavailable,
            MailError::Config { .. } | MailError::Build(_) => ErrorKind::Internal,
        }
    }
}

/// One plain-text mail. `Debug` leaves the body out (it may hold a reset link).
#[derive(Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// What kind of mail this is, for logs (e.g. `password_reset`).
    pub kind: &'static str,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("body", &"[not shown]")
            .finish()
    }
}

#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("configured", &self.transport.is_some())
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    pub fn from_config(config: &ServerConfig) -> Result<Mailer, MailError> {
        let from: Mailbox = config.mail_from.parse().map_err(|e| MailError::Config {
            key: "mail_from",
            message: format!("`{}` is not a mailbox: {e}", config.mail_from),
        })?;
        let transport = match &config.smtp_url {
            None => None,
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Config {
                        key: "smtp_url",
                        message: e.to_string(),
                    })?
                    .timeout(Some(Duration::from_secs(15)))
                    .build(),
            ),
        };
        Ok(Mailer { transport, from })
    }

    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// Sends now. Without `smtp_url`, logs that the mail was not sent and returns
    /// [`MailError::NotConfigured`].
    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let Some(transport) = &self.transport else {
            tracing::warn!(kind = mail.kind, to = %mail.to, subject = %mail.subject,
                "mail not sent: no smtp_url configured");
            return Err(MailError::NotConfigured);
        };
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| MailError::Build(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| MailError::Build(e.to_string()))?;
        transport
            .send(message)
            .await
            .map_err(|e| MailError::Send(e.to_string()))?;
        tracing::info!(kind = mail.kind, to = %mail.to, "mail sent");
        Ok(())
    }

    /// Sends on a background task (so the time to answer does not depend on whether a
    /// mail was sent) and logs a failure without the body.
    pub fn send_in_background(&self, mail: Mail) {
        let me = self.clone();
        tokio::spawn(async move {
            match me.send(&mail).await {
                Ok(()) | Err(MailError::NotConfigured) => {}
                Err(e) => {
                    tracing::error!(kind = mail.kind, to = %mail.to, error = %e, "mail could not be sent")
                }
            }
        });
    }
}
