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
    probe_addr(
        SocketAddr::new(ip, GATEWAY_PORT),
        timeout,
        started,
        checked_at,
    )
    .await
}

async fn probe_addr(
    addr: SocketAddr,
    timeout: Duration,
    started: Instant,
    checked_at: String,
) -> HealthProbe {
    let ip = addr.ip();
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
    async fn bad_address_is_not_ok() {
        let p = probe_gateway("not-an-ip", Duration::from_millis(200)).await;
        assert!(!p.tcp_ok);
        assert_eq!(p.http_status, None);
    }

    fn now() -> (Instant, String) {
        (Instant::now(), "t".to_string())
    }

    #[tokio::test]
    async fn http_answer_is_reported_and_closed_port_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET / HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
                .await
                .unwrap();
        });
        let (t, c) = now();
        let p = probe_addr(addr, Duration::from_secs(2), t, c).await;
        server.await.unwrap();
        assert!(p.tcp_ok);
        assert_eq!(p.http_status, Some(503));
        // A port that accepts TCP but speaks no HTTP: tcp_ok, no status.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"SSH-2.0-dropbear\r\n").await.unwrap();
        });
        let (t, c) = now();
        let p = probe_addr(silent, Duration::from_secs(2), t, c).await;
        server.await.unwrap();
        assert!(p.tcp_ok);
        assert_eq!(p.http_status, None);
        // Nothing listening any more (the first listener ended with its task).
        let (t, c) = now();
        let p = probe_addr(addr, Duration::from_millis(500), t, c).await;
        assert!(!p.tcp_ok);
    }
}
