//! A small hand-written QMP client over QEMU's unix socket. Only the commands the
//! driver uses, with serde types written for QEMU 7.2's replies (the `qapi` crate's
//! 9.1 schema does not decode them all). QMP serves one client at a time, so every
//! use connects, does its work and disconnects.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP timed out")]
    Timeout,
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP sent something unexpected: {0}")]
    Protocol(String),
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// `query-status` reply.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusInfo {
    pub running: bool,
    pub status: String,
}

/// One entry of `query-blockstats`.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockStats {
    #[serde(default)]
    pub device: Option<String>,
    pub stats: BlockDeviceStats,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BlockDeviceStats {
    pub rd_bytes: u64,
    pub wr_bytes: u64,
    pub rd_operations: u64,
    pub wr_operations: u64,
}

#[derive(Deserialize)]
struct QmpErrorBody {
    class: String,
    desc: String,
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connect, read the greeting and enter command mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout)?
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            timeout,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected greeting, got {greeting}"
            )));
        }
        let _: Value = qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut line))
            .await
            .map_err(|_| QmpError::Timeout)??;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Run one command and decode its `return`. Asynchronous events arriving in
    /// between are skipped.
    pub async fn execute<T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| QmpError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        tokio::time::timeout(self.timeout, self.writer.write_all(&bytes))
            .await
            .map_err(|_| QmpError::Timeout)??;
        loop {
            let reply = self.read_message().await?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return serde_json::from_value(ret.clone())
                    .map_err(|e| QmpError::Protocol(format!("{command}: {e}")));
            }
            if let Some(err) = reply.get("error") {
                let body: QmpErrorBody = serde_json::from_value(err.clone())
                    .map_err(|e| QmpError::Protocol(e.to_string()))?;
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: body.class,
                    desc: body.desc,
                });
            }
            return Err(QmpError::Protocol(format!("unexpected reply {reply}")));
        }
    }

    pub async fn query_status(&mut self) -> Result<StatusInfo, QmpError> {
        self.execute("query-status", None).await
    }

    /// ACPI power button: the guest decides whether to shut down.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        let _: Value = self.execute("system_powerdown", None).await?;
        Ok(())
    }

    pub async fn system_reset(&mut self) -> Result<(), QmpError> {
        let _: Value = self.execute("system_reset", None).await?;
        Ok(())
    }

    pub async fn cont(&mut self) -> Result<(), QmpError> {
        let _: Value = self.execute("cont", None).await?;
        Ok(())
    }

    /// End QEMU. It may close the socket before the reply arrives; that is success.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute::<Value>("quit", None).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn query_blockstats(&mut self) -> Result<Vec<BlockStats>, QmpError> {
        self.execute("query-blockstats", None).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A scripted QMP peer: checks the client's messages and answers like QEMU 7.2.
    #[tokio::test]
    async fn speaks_qmp_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"Debian\"}, \"capabilities\": [\"oob\"]}}\n").await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = String::new();
            let replies: [&[u8]; 3] = [
                b"{\"return\": {}}\n",
                b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESET\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-system-reset\"}}\n{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n",
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            ];
            for r in replies {
                let n = s.read(&mut buf).await.unwrap();
                seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                s.write_all(r).await.unwrap();
            }
            seen
        });
        let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).await.unwrap();
        let st = qmp.query_status().await.unwrap();
        assert!(st.running);
        assert_eq!(st.status, "running");
        let err = qmp.system_reset().await.unwrap_err();
        assert!(
            matches!(err, QmpError::Command { ref class, .. } if class == "GenericError"),
            "{err}"
        );
        let seen = server.await.unwrap();
        assert!(seen.contains("\"qmp_capabilities\""));
        assert!(seen.contains("\"query-status\""));
        assert!(seen.contains("\"system_reset\""));
    }
}
