//! `/api/v1/ssh-keys`: list with read, add/delete with manage (AUTH-2, AUTH-4).

use crate::auth::{Authed, Manage, Read};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::pagination::PageQuery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawy_proto::api::{self as wire, CreateSshKey, ErrorBody, SshKeyList};

fn to_wire(k: clawy_core::ssh_keys::SshKey) -> wire::SshKey {
    wire::SshKey {
        id: k.id,
        name: k.name,
        algorithm: k.algorithm,
        fingerprint: k.fingerprint,
        public_key: k.public_key,
        created_at: k.created_at,
    }
}

/// The account's SSH public keys.
#[utoipa::path(
    get, path = "/api/v1/ssh-keys", tag = "ssh-keys",
    params(PageQuery),
    responses((status = 200, body = SshKeyList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Read>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<SshKeyList>, ApiError> {
    let keys = state.core.ssh_keys().list(&caller.user.id).await?;
    let (ssh_keys, next_after) = q.page_of(keys, |k| k.id.clone(), to_wire)?;
    Ok(ApiJson(SshKeyList {
        ssh_keys,
        next_after,
    }))
}

/// Adds an SSH public key (ed25519, ecdsa, rsa ≥ 3072 bits).
#[utoipa::path(
    post, path = "/api/v1/ssh-keys", tag = "ssh-keys",
    request_body = CreateSshKey,
    responses(
        (status = 201, body = wire::SshKey),
        (status = 401, body = ErrorBody), (status = 403, description = "Tier below manage", body = ErrorBody),
        (status = 409, description = "Key already added, or the account has the most SSH keys it may have (`too_many_keys`)", body = ErrorBody),
        (status = 422, description = "Not an acceptable public key (the message says why)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    ApiJson(req): ApiJson<CreateSshKey>,
) -> Result<(StatusCode, ApiJson<wire::SshKey>), ApiError> {
    let key = state
        .core
        .ssh_keys()
        .add(&caller.user.id, &req.name, &req.public_key, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, ApiJson(to_wire(key))))
}

/// Removes an SSH public key.
#[utoipa::path(
    delete, path = "/api/v1/ssh-keys/{id}", tag = "ssh-keys",
    params(("id" = String, Path, description = "SSH key id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such key on this account", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Authed<Manage>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .core
        .ssh_keys()
        .delete(&caller.user.id, &id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
