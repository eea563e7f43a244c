//! The agent's HTTP API. Handlers are thin: authenticate (middleware), parse into a
//! [`VmAction`], hand it to the executor, map the outcome. The router is built from
//! [`ROUTES`] so the route list a test checks is the route list served (ACCESS-2).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use clawy_proto::agent::{GuestSecrets, VmSpec};

use crate::error::AgentError;
use crate::executor::{Executor, Outcome, VmAction};
use crate::spec::{SpecError, VmId};
use crate::tokens::TokenVerifier;

/// Largest request body: a spec with keys and user data fits easily.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Every route the agent serves. ACCESS-2: nothing here reads guest files, runs
/// commands, or opens a console or guest-agent channel; `tests` fail if a route
/// outside this allow-list appears.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/host"),
    ("GET", "/v1/vms"),
    ("GET", "/v1/vms/{id}"),
    ("PUT", "/v1/vms/{id}"),
    ("DELETE", "/v1/vms/{id}"),
    ("POST", "/v1/vms/{id}/start"),
    ("POST", "/v1/vms/{id}/stop"),
    ("POST", "/v1/vms/{id}/reboot"),
    ("GET", "/v1/vms/{id}/probe"),
];

#[derive(Clone)]
pub struct ApiState {
    pub executor: Arc<Executor>,
    pub tokens: Arc<TokenVerifier>,
}

fn handler_for(method: &str, path: &str) -> Option<MethodRouter<ApiState>> {
    Some(match (method, path) {
        ("GET", "/v1/host") => get(host_info),
        ("GET", "/v1/vms") => get(list_vms),
        ("GET", "/v1/vms/{id}") => get(get_vm),
        ("PUT", "/v1/vms/{id}") => put(ensure_vm),
        ("DELETE", "/v1/vms/{id}") => delete(delete_vm),
        ("POST", "/v1/vms/{id}/start") => post(start_vm),
        ("POST", "/v1/vms/{id}/stop") => post(stop_vm),
        ("POST", "/v1/vms/{id}/reboot") => post(reboot_vm),
        ("GET", "/v1/vms/{id}/probe") => get(probe_vm),
        _ => return None,
    })
}

/// Build the router from [`ROUTES`]. `request_timeout` bounds every request (a
/// graceful stop may take the configured stop timeout).
pub fn router(state: ApiState, request_timeout: Duration) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<ApiState>)> = Vec::new();
    for (method, path) in ROUTES {
        let Some(h) = handler_for(method, path) else {
            // A table entry without a handler is a programming error caught by tests.
            tracing::error!(method, path, "route without handler");
            continue;
        };
        match by_path.iter_mut().find(|(p, _)| p == path) {
            Some((_, mr)) => {
                let merged = std::mem::take(mr).merge(h);
                *mr = merged;
            }
            None => by_path.push((path, h)),
        }
    }
    let mut r: Router<ApiState> = Router::new();
    for (path, mr) in by_path {
        r = r.route(path, mr);
    }
    r.fallback(|| async { AgentError::NotFound("no such route".into()).into_response() })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(AgentError::BadRequest("method not allowed".into()).body()),
            )
                .into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| with_timeout(req, next, request_timeout),
        ))
        .with_state(state)
}

async fn with_timeout(req: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => AgentError::Timeout.into_response(),
    }
}

/// DATA-3: every route needs a live bearer token (checked in constant time).
async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if !t.is_empty() && state.tokens.verify(t) => next.run(req).await,
        _ => AgentError::Unauthorized.into_response(),
    }
}

fn respond(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Host(h) => Json(*h).into_response(),
        Outcome::Vms(l) => Json(l).into_response(),
        Outcome::Vm(v) => Json(*v).into_response(),
        Outcome::Created(v) => (StatusCode::CREATED, Json(*v)).into_response(),
        Outcome::Probe(p) => Json(p).into_response(),
        Outcome::Deleted => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn run(state: &ApiState, action: VmAction) -> Response {
    match state.executor.execute(action).await {
        Ok(o) => respond(o),
        Err(e) => e.into_response(),
    }
}

async fn host_info(State(s): State<ApiState>) -> Response {
    run(&s, VmAction::HostInfo).await
}

async fn list_vms(State(s): State<ApiState>) -> Response {
    run(&s, VmAction::List).await
}

/// The VM id is parsed here, once: past this point only a [`VmId`] travels.
fn vm_id(raw: &str) -> Result<VmId, AgentError> {
    VmId::parse(raw).map_err(AgentError::InvalidSpec)
}

/// Parses the id, then runs the action it builds.
async fn run_for(state: &ApiState, raw: &str, action: impl FnOnce(VmId) -> VmAction) -> Response {
    match vm_id(raw) {
        Ok(id) => run(state, action(id)).await,
        Err(e) => e.into_response(),
    }
}

async fn get_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Get { id }).await
}

async fn ensure_vm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let id = match vm_id(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let mut body = match body {
        Ok(Json(v)) => v,
        Err(rej) => return json_rejection(rej).into_response(),
    };
    // DATA-5: the owner's secrets travel beside the spec (`secrets`), never inside
    // it: the spec is what the agent stores, compares and returns.
    let secrets = match body.as_object_mut().and_then(|o| o.remove("secrets")) {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match serde_json::from_value::<GuestSecrets>(v) {
            Ok(s) => Some(Box::new(s)),
            // serde's message could quote a value: name the field only.
            Err(_) => {
                return AgentError::InvalidSpec(SpecError {
                    field: "secrets".into(),
                    message:
                        "must be {gateway_token, telegram_bot_token?, model_key?: {provider, key}}"
                            .into(),
                })
                .into_response();
            }
        },
    };
    // Through axum's own parser again, so a bad spec is answered exactly as before
    // (`invalid_spec` naming the field).
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let spec = match Json::<VmSpec>::from_bytes(&bytes) {
        Ok(Json(spec)) => spec,
        Err(rej) => return json_rejection(rej).into_response(),
    };
    run(
        &s,
        VmAction::Ensure {
            id,
            spec: Box::new(spec),
            secrets,
        },
    )
    .await
}

/// A body that does not deserialize into a spec is an `invalid_spec` naming the
/// field serde complained about; a body that is not JSON at all is `bad_request`.
fn json_rejection(rej: JsonRejection) -> AgentError {
    match rej {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            // axum's text: "Failed to deserialize the JSON body into the target type: FIELD: why"
            let detail = text
                .split_once("target type: ")
                .map(|x| x.1)
                .unwrap_or(&text);
            let (field, message) = match detail.split_once(": ") {
                Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
                _ => (
                    unknown_field(detail).unwrap_or_else(|| "spec".into()),
                    detail.to_string(),
                ),
            };
            AgentError::InvalidSpec(SpecError { field, message })
        }
        JsonRejection::BytesRejection(_) => AgentError::PayloadTooLarge,
        other => AgentError::BadRequest(other.body_text()),
    }
}

fn unknown_field(detail: &str) -> Option<String> {
    let rest = detail.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0.to_string())
}

async fn delete_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Delete { id }).await
}

async fn start_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Start { id }).await
}

async fn stop_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Stop { id }).await
}

async fn reboot_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Reboot { id }).await
}

async fn probe_vm(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    run_for(&s, &id, |id| VmAction::Probe { id }).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// ACCESS-2: the served routes are exactly this allow-list.
    #[test]
    fn access_2_routes_are_allow_listed() {
        let allowed: &[(&str, &str)] = &[
            ("GET", "/v1/host"),
            ("GET", "/v1/vms"),
            ("GET", "/v1/vms/{id}"),
            ("PUT", "/v1/vms/{id}"),
            ("DELETE", "/v1/vms/{id}"),
            ("POST", "/v1/vms/{id}/start"),
            ("POST", "/v1/vms/{id}/stop"),
            ("POST", "/v1/vms/{id}/reboot"),
            ("GET", "/v1/vms/{id}/probe"),
        ];
        for r in ROUTES {
            assert!(
                allowed.contains(r),
                "route {r:?} is not on the ACCESS-2 allow-list"
            );
            assert!(
                handler_for(r.0, r.1).is_some(),
                "route {r:?} has no handler"
            );
        }
        for bad in [
            "exec",
            "file",
            "files",
            "console",
            "serial",
            "guest-agent",
            "qga",
            "shell",
            "vnc",
        ] {
            assert!(
                !ROUTES.iter().any(|(_, p)| p.contains(bad)),
                "a route mentions `{bad}`"
            );
        }
    }
}
