//! `/api/v1/api-keys`: admin tier (AUTH-2). The secret is in the response of create and
//! regenerate only; lists never carry it. A key never creates or regenerates a key of a
//! higher tier than its own (checked in core with `caller.key_tier()`).

use crate::api::{tier_from_wire, tier_to_wire};
use crate::auth::{Admin, Authed};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::pagination::PageQuery;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawy_core::SecretString;
use clawy_core::actor::Tier;
use clawy_core::api_keys::{ApiKey, NewApiKey};
use clawy_proto::api::{self as wire, ApiKeyList, CreateApiKey, CreatedApiKey, ErrorBody};

use crate::state::AppState;

fn to_wire(k: ApiKey) -> wire::ApiKey {
    wire::ApiKey {
        id: k.id,
        name: k.name,
        tier: tier_to_wire(k.tier),
        prefix: k.prefix,
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        expires_at: k.expires_at,
    }
}

fn created_to_wire(n: NewApiKey) -> CreatedApiKey {
    let k = n.api_key;
    CreatedApiKey {
        id: k.id,
        name: k.name,
        tier: tier_to_wire(k.tier),
        prefix: k.prefix,
        created_at: k.created_at,
        expires_at: k.expires_at,
        key: n.key.into_inner(),
    }
}

/// The account's live API keys (never the secrets).
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys",
    params(PageQuery),
    responses(
        (status = 200, body = ApiKeyList),
        (status = 401, body = ErrorBody), (status = 403, description = "Tier below admin", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed<Admin>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<ApiKeyList>, ApiError> {
    let keys = state.core.api_keys().list(&caller.user.id).await?;
    let (api_keys, next_after) = q.page_of(keys, |k| k.id.clone(), to_wire)?;
    Ok(ApiJson(ApiKeyList {
        api_keys,
        next_after,
    }))
}

/// Creates a key; `key` in the answer is shown this once.
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; store `key` now", body = CreatedApiKey),
        (status = 401, body = ErrorBody), (status = 403, description = "Tier below admin, or above the caller's own, or an admin key from a session without `password` (`password_required`)", body = ErrorBody),
        (status = 409, description = "The account already has the most API keys it may have (`too_many_keys`)", body = ErrorBody),
        (status = 422, description = "Invalid name or expiry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Authed<Admin>,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    let tier = tier_from_wire(req.tier);
    if tier == Tier::Admin && caller.key_tier().is_none() {
        // AUTH-2: a browser session re-authenticates before minting an admin key.
        let Some(password) = req.password.clone() else {
            return Err(password_required());
        };
        state
            .core
            .accounts()
            .confirm_password(
                &caller.user.id,
                &SecretString::from(password),
                &caller.actor(),
            )
            .await?;
    }
    let created = state
        .core
        .api_keys()
        .create(
            &caller.user.id,
            &req.name,
            tier,
            req.expires_at,
            caller.key_tier(),
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, ApiJson(created_to_wire(created))))
}

/// Revokes a key: it stops working at once.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such key on this account", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Authed<Admin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .core
        .api_keys()
        .revoke(&caller.user.id, &id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// New secret for the same key; the old secret is dead from this instant.
#[utoipa::path(
    post, path = "/api/v1/api-keys/{id}/regenerate", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 200, description = "Regenerated; store `key` now", body = CreatedApiKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such key on this account", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn regenerate(
    State(state): State<AppState>,
    caller: Authed<Admin>,
    Path(id): Path<String>,
) -> Result<ApiJson<CreatedApiKey>, ApiError> {
    if caller.key_tier().is_none() {
        // AUTH-2: regenerating an admin key from a session needs the password, which
        // this body-less call cannot carry: the dashboard's form asks for it.
        let key = state.core.api_keys().get(&caller.user.id, &id).await?;
        if key.tier == Tier::Admin {
            return Err(password_required());
        }
    }
    let regenerated = state
        .core
        .api_keys()
        .regenerate(&caller.user.id, &id, caller.key_tier(), &caller.actor())
        .await?;
    Ok(ApiJson(created_to_wire(regenerated)))
}

/// AUTH-2: admin-tier keys are not minted on the strength of a session cookie alone.
fn password_required() -> ApiError {
    ApiError::forbidden(
        "password_required",
        "Creating or regenerating an admin-tier key from a browser session needs your password: send it as `password` (or use the dashboard's form, or an admin API key).",
    )
}
