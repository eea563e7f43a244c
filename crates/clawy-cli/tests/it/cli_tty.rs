//! The CLI on a terminal: `clawy login` reads the key without echo, and `--wait`
//! draws a spinner line. `script(1)` gives the command a pseudo-terminal; the test
//! types only after the prompt is shown, as a person would.

use crate::cli_support::{CLAWY, Server, text};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `command` (a shell line) on a pty; sends `typed` once `prompt` appeared.
/// Returns everything the terminal showed and the exit code.
fn on_tty(command: &str, env: &[(&str, &str)], prompt: Option<&str>, typed: &str) -> (String, i32) {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", command, "/dev/null"])
        .env_remove("CLAWY_API_KEY")
        .env_remove("CLAWY_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let mut sent = prompt.is_none();
    if sent {
        stdin.write_all(typed.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => shown.extend(b),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !sent && prompt.is_some_and(|p| text(&shown).contains(p)) {
            // A moment for the read to start, then type.
            std::thread::sleep(Duration::from_millis(200));
            stdin.write_all(typed.as_bytes()).unwrap();
            stdin.flush().unwrap();
            sent = true;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; terminal showed: {}",
            text(&shown)
        );
    }
    drop(stdin);
    let status = child.wait().unwrap();
    (text(&shown), status.code().unwrap_or(-1))
}

#[tokio::test]
async fn cli_tty_login_does_not_echo_the_key() {
    let server = Server::start().await;
    let key = server.user_with_key("tty@example.test", "manage");
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_string();
    let cmd = format!("{CLAWY} login --server {}", server.base);
    let typed = format!("{key}\n");
    let (shown, code) = tokio::task::spawn_blocking(move || {
        on_tty(
            &cmd,
            &[("XDG_CONFIG_HOME", &home_s)],
            Some("API key"),
            &typed,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Logged in"), "{shown}");
    // AUTH-2: the key never appears on the terminal.
    assert!(!shown.contains(&key), "the key was echoed: {shown}");
    assert!(home.path().join("clawy/credentials.toml").exists());
}

// Multi-threaded: the stub answers while the pty child runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tty_wait_draws_a_spinner_with_the_state() {
    let (base, _task) = crate::cli_wait::start_stub().await;
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_string();
    let cmd = format!("{CLAWY} instances create ok --wait --poll-interval 0.2");
    let (shown, code) = tokio::task::spawn_blocking(move || {
        on_tty(
            &cmd,
            &[
                ("XDG_CONFIG_HOME", &home_s),
                ("CLAWY_SERVER", &base),
                ("CLAWY_API_KEY", "clawy_m_stub"),
            ],
            None,
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    // One line redrawn in place: carriage return, frame, current state.
    assert!(
        [
            "| provisioning",
            "/ provisioning",
            "- provisioning",
            "\\ provisioning"
        ]
        .iter()
        .any(|f| shown.contains(&format!("\r\u{1b}[2K{f}"))),
        "{shown:?}"
    );
    assert!(shown.contains("Ready: ok"), "{shown:?}");
}
