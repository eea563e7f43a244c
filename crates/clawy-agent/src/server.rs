//! Serve the API over HTTPS only (DATA-3). A plaintext client fails the TLS
//! handshake and the connection is closed; there is no HTTP listener.
//!
//! Everything before authentication is bounded, so an anonymous client cannot
//! take the agent down by holding connections: at most `max_connections` are
//! served at once (more wait in the kernel's backlog, so the agent never runs out
//! of file descriptors), the TLS handshake and an HTTP/1 request head must
//! complete in time, and a connection with no request in flight that moves no
//! bytes for `idle_timeout` is closed (HTTP/1 keep-alive and HTTP/2 alike).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::{DEFAULT_HTTP_LIMITS, HttpLimits};

/// After an idle connection was asked to close (HTTP/2 GOAWAY), how long it may
/// take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Connections the kernel queues for us before we accept them. A short queue
/// (the usual 128) overflows under a burst of connects and each dropped SYN
/// costs its client a one-second retransmit; the kernel caps it at somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

/// The agent's listening socket, with a backlog deep enough for bursts and for
/// clients waiting while `max_connections` are served.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accept connections forever with the default limits.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
) -> std::io::Result<()> {
    serve_tls_with(listener, tls, app, DEFAULT_HTTP_LIMITS).await
}

/// Accept connections forever. Each connection: TLS handshake (bounded), then
/// HTTP/1.1 or HTTP/2 on the router, closed when idle.
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first, then accept: at the cap the agent stops accepting and
        // clients queue in the backlog instead of costing descriptors.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(tls, app, limits, peer).await;
        });
    }
}

async fn serve_connection<S>(io: S, app: Router, limits: HttpLimits, peer: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
    };
    let in_flight = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let guard = InFlight::new(in_flight.clone());
        async move {
            let res = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(guard);
            res
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = activity.idle_for(limits.idle_timeout) => {
            tracing::debug!(%peer, "closing idle connection");
            conn.as_mut().graceful_shutdown();
        }
    }
    // Graceful first (HTTP/2 GOAWAY; HTTP/1 closes between requests), then drop.
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// When a connection last moved bytes, and how many requests it has in flight.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no request is in flight and no byte moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + limit;
            if Instant::now() >= due {
                if self.in_flight.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // A slow request (a VM stop may take its time) is not idleness.
                tokio::time::sleep(limit.min(Duration::from_secs(1))).await;
                continue;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's stream, noting every read or write that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft limit on open files to the hard limit, so `max_connections`
/// plus the VMs' sockets, disks and helper pipes fit. Returns the new soft
/// limit (None when it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum {
        if lim.current.is_none_or(|cur| cur < hard) {
            lim.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, lim) {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.or(Some(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_quiet_and_no_request_in_flight() {
        let a = Arc::new(Activity::new());
        let limit = Duration::from_millis(200);
        // Busy with a request: not idle even long after the last byte.
        let guard = InFlight::new(a.clone());
        let idle = tokio::time::timeout(Duration::from_millis(800), a.idle_for(limit)).await;
        assert!(idle.is_err());
        drop(guard);
        // Quiet: idle once the limit passes after the last activity, not before.
        let t0 = Instant::now();
        a.idle_for(limit).await;
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited <= Duration::from_secs(2), "{waited:?}");
    }
}
