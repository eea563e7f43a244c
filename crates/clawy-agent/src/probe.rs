//! Host-side health probe of a guest's gateway port (ACCESS-1/ACCESS-2: health
//! comes from probing a listening port, never from inside the guest).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clawy_proto::agent::{GATEWAY_PORT, HealthProbe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TCP connect to `ip:18789`, then `GET /` and read the status line. Short
/// timeouts: a probe must never hold up a status answer for long.
pub async fn probe_gateway(ip: &str, timeout: Duration) -> HealthProbe {
    let started = Instant::now();
    let checked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return HealthProbe {
            tcp_ok: false,
            http_status: None,
            latency_ms: 0,
            checked_at,
        };
    };
    let addr = SocketAddr::new(ip, GATEWAY_PORT);
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
    let (tcp_ok, http_status) = match stream {
        Ok(Ok(mut s)) => {
            let status = tokio::time::timeout(timeout, http_status(&mut s, ip))
                .await
                .ok()
                .flatten();
            (true, status)
        }
        _ => (false, None),
    };
    HealthProbe {
        tcp_ok,
        http_status,
        latency_ms: started.elapsed().as_millis() as u64,
        checked_at,
    }
}

async fn http_status(s: &mut TcpStream, ip: IpAddr) -> Option<u16> {
    let req = format!("GET / HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: clawy-agent-probe\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.ok()?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    let mut parts = head.split(' ');
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn closed_port_is_not_ok() {
        // 127.0.0.1:18789 is normally closed in the test environment; if something
        // listens there the probe must at least not claim an HTTP status it did not see.
        let p = probe_gateway("not-an-ip", Duration::from_millis(200)).await;
        assert!(!p.tcp_ok);
        assert_eq!(p.http_status, None);
    }
}
