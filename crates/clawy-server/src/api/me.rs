//! `GET /api/v1/me`

use crate::api::tier_to_wire;
use crate::auth::{Authed, CallerAuth, Read};
use crate::error::ApiJson;
use clawy_proto::api::{AuthMethod, Me};

/// The account behind the request, and how it authenticated.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "account",
    responses(
        (status = 200, description = "The caller's account", body = Me),
        (status = 401, description = "Missing, invalid, revoked or expired key", body = clawy_proto::api::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_me(caller: Authed<Read>) -> ApiJson<Me> {
    let (auth, api_key_id) = match &caller.auth {
        CallerAuth::ApiKey(k) => (AuthMethod::ApiKey, Some(k.id.clone())),
        CallerAuth::Session(_) => (AuthMethod::Session, None),
    };
    ApiJson(Me {
        id: caller.user.id.clone(),
        email: caller.user.email.clone(),
        is_operator: caller.user.is_operator,
        created_at: caller.user.created_at,
        auth,
        tier: tier_to_wire(caller.tier),
        api_key_id,
    })
}
