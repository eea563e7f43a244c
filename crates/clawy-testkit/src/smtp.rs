//! A real SMTP sink for tests: Debian's `python3-aiosmtpd` with its Maildir handler,
//! on a free loopback port. Tests point `smtp_url` at [`SmtpSink::url`] and wait for
//! mails with a bounded poll.

use anyhow::{Context, bail};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running `python3 -m aiosmtpd` writing every message to a Maildir.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The message as received (headers and encoded body).
    pub raw: String,
    pub subject: String,
    /// `To:` header value.
    pub to: String,
    /// The body with quoted-printable or base64 transfer encoding undone.
    pub body: String,
}

impl ReceivedMail {
    /// True if the subject or decoded body contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.subject.contains(needle) || self.body.contains(needle)
    }
}

fn python() -> &'static str {
    // Debian's interpreter has the python3-aiosmtpd package; a pyenv shim on PATH may not.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl SmtpSink {
    /// Starts the sink and waits (at most 15 s) until it accepts connections.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        let dir = tempfile::Builder::new().prefix("clawy-smtp-").tempdir()?;
        let maildir = dir.path().join("maildir");
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = Command::new(python())
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting python3 -m aiosmtpd (install python3-aiosmtpd)")?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = Some(anyhow::anyhow!("aiosmtpd exited with {status}"));
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(SmtpSink { child, port, dir });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(anyhow::anyhow!(
                        "aiosmtpd did not listen on port {port} within 15 s"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("aiosmtpd did not start")))
    }

    /// `smtp://127.0.0.1:<port>` for the `smtp_url` config key.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir().join(sub)) {
                for e in rd.flatten() {
                    let modified = e.metadata().and_then(|m| m.modified()).ok();
                    files.push((modified, e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read(&p).ok())
            .map(|b| parse_mail(&String::from_utf8_lossy(&b)))
            .collect()
    }

    /// Waits (bounded) for a message matching `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedMail) -> bool,
    ) -> anyhow::Result<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!(
                    "no matching mail within {timeout:?}; received: {:?}",
                    self.messages()
                        .iter()
                        .map(|m| &m.subject)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 10 s) for a message whose subject or body contains `needle`.
    pub async fn wait_for_containing(&self, needle: &str) -> anyhow::Result<ReceivedMail> {
        self.wait_for(Duration::from_secs(10), |m| m.contains(needle))
            .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal RFC 5322 parsing: unfolded headers, body with transfer encoding undone.
pub fn parse_mail(raw: &str) -> ReceivedMail {
    let normalized = raw.replace("\r\n", "\n");
    let (head, body) = normalized.split_once("\n\n").unwrap_or((&normalized, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| {
        headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let cte = get("content-transfer-encoding").to_ascii_lowercase();
    let body = match cte.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| body.to_string())
        }
        _ => body.to_string(),
    };
    ReceivedMail {
        raw: raw.to_string(),
        subject: get("subject"),
        to: get("to"),
        body,
    }
}

fn decode_qp(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if i + 1 < b.len() && b[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            if i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
