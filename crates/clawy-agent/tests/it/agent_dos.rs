//! The agent's HTTPS listener before authentication (its limits are in
//! docs/DECISIONS.md, "Listener limits before auth"): 2,000 idle TCP connections
//! and idle TLS sessions do not keep a real client out, and they are closed once
//! their timeouts pass.
//!
//! The agent starts with a soft open-files limit of 1024 (a common default), so
//! without its own limit raise and connection handling this many idle sockets
//! would exhaust its descriptors.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clawy_agent_client::AgentClient;
use clawy_testkit::agent::{AgentOptions, TestAgent};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");
const IDLE_TCP: usize = 2000;
const IDLE_TLS: usize = 20;
/// Seconds, as configured below, for the handshake and for idle sessions.
const TIMEOUT_SECS: u64 = 4;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn dos_idle_connections_neither_starve_clients_nor_stay_open() {
    let tmp = tempfile::tempdir().unwrap();
    // The agent binary behind a soft limit of 1024 open files.
    let wrapper = tmp.path().join("clawy-low-nofile");
    std::fs::write(
        &wrapper,
        format!("#!/bin/bash\nulimit -S -n 1024\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = AgentOptions {
        extra_toml: format!(
            "tls_handshake_timeout_secs = {TIMEOUT_SECS}\nidle_timeout_secs = {TIMEOUT_SECS}\nheader_read_timeout_secs = {TIMEOUT_SECS}\n"
        ),
        ..AgentOptions::default()
    };
    let agent = TestAgent::start(&wrapper, opts, None).await.unwrap();
    let addr = agent.base_url.trim_start_matches("https://").to_string();
    let pid = agent.pid().unwrap();

    // Idle TLS sessions: handshake done, then silence (openssl keeps its stdin
    // open and sends nothing).
    let mut tls_idle = Vec::new();
    for _ in 0..IDLE_TLS {
        tls_idle.push(
            tokio::process::Command::new("openssl")
                .args(["s_client", "-quiet", "-connect", &addr])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    // Idle TCP connections that never start a handshake.
    let t0 = Instant::now();
    let mut tcp_idle = Vec::with_capacity(IDLE_TCP);
    for _ in 0..IDLE_TCP {
        tcp_idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let opened = Instant::now();
    eprintln!(
        "opened {IDLE_TCP} in {:?}; agent fds {}",
        t0.elapsed(),
        fd_count(pid)
    );
    // The agent really holds them (not just the kernel's backlog).
    let deadline = Instant::now() + Duration::from_secs(2);
    while fd_count(pid) < IDLE_TCP && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fds = fd_count(pid);
    assert!(
        fds >= IDLE_TCP,
        "the agent holds {fds} descriptors\n{}",
        agent.log()
    );

    // A real, authenticated client still gets its answer at once.
    let c = AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token).unwrap();
    let t = Instant::now();
    let host = c.host().await.unwrap();
    let took = t.elapsed();
    assert!(!host.location.is_empty());
    assert!(took < Duration::from_secs(1), "GET /v1/host took {took:?}");
    assert!(
        opened.elapsed() < Duration::from_secs(TIMEOUT_SECS),
        "the check ran after the idle sockets could have timed out"
    );

    // After the timeouts, the agent has closed every idle socket: each TCP one
    // reads EOF (or a reset), each openssl client has exited.
    let limit = Duration::from_secs(TIMEOUT_SECS + 6);
    for (i, s) in tcp_idle.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        let left = limit.saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("idle connection {i} got {n} bytes"),
            Err(_) => panic!("idle TCP connection {i} still open after {limit:?}"),
        }
    }
    for (i, p) in tls_idle.iter_mut().enumerate() {
        let left = limit.saturating_sub(opened.elapsed()) + Duration::from_secs(1);
        match tokio::time::timeout(left, p.wait()).await {
            Ok(Ok(_)) => {}
            _ => panic!("idle TLS session {i} still open after {limit:?}"),
        }
    }
    // And the agent is still fine.
    c.host().await.unwrap();
}
