//! `--wait` against a scripted API (an axum stub standing in for the server, so the
//! rare outcomes are quick and certain): progress lines on a non-terminal, exit 1
//! with the server's reason when the instance goes to `error`, exit 7 on timeout,
//! and `--json` printing the final instance.

use crate::cli_support::{Cli, text};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Stub {
    /// GETs served per instance id, to walk each through its script.
    polls: Mutex<std::collections::HashMap<String, usize>>,
}

/// The state sequence each instance name goes through, one step per GET.
fn script(id: &str) -> &'static [&'static str] {
    match id {
        "id-fails" => &["pending", "provisioning", "error"],
        "id-ok" => &["pending", "provisioning", "provisioning", "running"],
        _ => &["provisioning"],
    }
}

fn instance(id: &str, state: &str) -> Value {
    json!({
        "id": id,
        "name": id.trim_start_matches("id-"),
        "state": state,
        "desired_power": "running",
        "private_ip": "10.77.0.2",
        "ssh_port": 22000,
        "ssh_command": null,
        "plan": "small",
        "region": "DE",
        "host_location": "DE-local",
        "health": {"gateway": if state == "running" { "ok" } else { "unknown" }, "http_status": null, "checked_at": null, "services": []},
        "last_contact_at": null,
        "uptime_secs": null,
        "error_reason": if state == "error" { json!("The host refused the VM: image missing.") } else { Value::Null },
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"
    })
}

async fn create(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let name = body["name"].as_str().unwrap_or("").to_string();
    if name == "full" {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({"error": {"code": "no_capacity", "message": "no capacity in region DE for plan small"}}),
            ),
        );
    }
    (
        StatusCode::ACCEPTED,
        Json(instance(&format!("id-{name}"), "pending")),
    )
}

async fn show(State(stub): State<Arc<Stub>>, Path(id): Path<String>) -> Json<Value> {
    let n = {
        let mut polls = stub.polls.lock().unwrap();
        let n = polls.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let steps = script(&id);
    let state = steps[(n - 1).min(steps.len() - 1)];
    Json(instance(&id, state))
}

pub(crate) async fn start_stub() -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/api/v1/instances", post(create))
        .route("/api/v1/instances/{id}", get(show))
        .with_state(Arc::new(Stub::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, task)
}

// Multi-threaded: the CLI child blocks this test's thread while the stub answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_wait_reports_progress_error_reason_timeout_and_capacity() {
    let (base, _task) = start_stub().await;
    let cli = Cli::with_key(&base, "clawy_m_stub");
    let fast = ["--poll-interval", "0.05"];

    // Reaches running: exit 0, progress lines (not a spinner: stderr is no terminal).
    let mut args = vec!["instances", "create", "ok", "--wait", "--json"];
    args.extend(fast);
    let out = cli.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "running");
    let err = text(&out.stderr);
    assert!(err.contains("id-ok: provisioning"), "{err}");
    assert!(
        !err.contains('\r'),
        "no spinner when stderr is not a terminal: {err:?}"
    );

    // Goes to error: exit 1 with the server's reason and how to retry.
    let mut args = vec!["instances", "create", "fails", "--wait"];
    args.extend(fast);
    let err = cli.fails_with(1, &args);
    assert!(err.contains("image missing"), "{err}");
    assert!(err.contains("clawy instances retry id-fails"), "{err}");

    // Never gets there: exit 7 after --timeout.
    let mut args = vec!["instances", "create", "slow", "--wait", "--timeout", "1"];
    args.extend(fast);
    let err = cli.fails_with(7, &args);
    assert!(err.contains("gave up after 1s"), "{err}");

    // No capacity: exit 5 with the server's sentence.
    let err = cli.fails_with(5, &["instances", "create", "full"]);
    assert!(
        err.contains("no capacity in region DE for plan small"),
        "{err}"
    );
}
