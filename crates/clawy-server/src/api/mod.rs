//! The REST API under `/api/v1`. Handlers are short: an extractor that states the
//! privilege needed (`Authed<Read|Manage|Admin>`), one call into `clawy-core` scoped to
//! the caller's own account, and a mapping to the wire types of `clawy_proto::api`.

pub mod api_keys;
pub mod audit;
pub mod hosts;
pub mod instances;
pub mod me;
pub mod plans;
pub mod regions;
pub mod security_reports;
pub mod ssh_keys;

use crate::state::AppState;
use axum::Router;
use axum::routing::{delete, get, patch, post};
use clawy_core::actor::Tier;
use clawy_proto::api as wire;

/// Every API route: (method, path under `/api/v1`). The OpenAPI test and the
/// authorization matrix check themselves against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/me"),
    ("GET", "/api-keys"),
    ("POST", "/api-keys"),
    ("DELETE", "/api-keys/{id}"),
    ("POST", "/api-keys/{id}/regenerate"),
    ("GET", "/ssh-keys"),
    ("POST", "/ssh-keys"),
    ("DELETE", "/ssh-keys/{id}"),
    ("GET", "/audit"),
    ("POST", "/security-reports"),
    ("GET", "/openapi.json"),
    ("GET", "/plans"),
    ("GET", "/regions"),
    ("GET", "/instances"),
    ("POST", "/instances"),
    ("GET", "/instances/{id}"),
    ("DELETE", "/instances/{id}"),
    ("POST", "/instances/{id}/start"),
    ("POST", "/instances/{id}/stop"),
    ("POST", "/instances/{id}/reboot"),
    ("POST", "/instances/{id}/retry"),
    ("GET", "/instances/{id}/metrics"),
    ("GET", "/instances/{id}/events"),
    ("GET", "/admin/hosts"),
    ("POST", "/admin/hosts"),
    ("PATCH", "/admin/hosts/{id}"),
    ("GET", "/admin/instances"),
    ("POST", "/admin/plans"),
    ("PATCH", "/admin/plans/{id}"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me::get_me))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/{id}", delete(api_keys::revoke))
        .route("/api-keys/{id}/regenerate", post(api_keys::regenerate))
        .route("/ssh-keys", get(ssh_keys::list).post(ssh_keys::add))
        .route("/ssh-keys/{id}", delete(ssh_keys::delete))
        .route("/audit", get(audit::list))
        .route("/security-reports", post(security_reports::create))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/plans", get(plans::list))
        .route("/regions", get(regions::list))
        .route("/instances", get(instances::list).post(instances::create))
        .route(
            "/instances/{id}",
            get(instances::get).delete(instances::delete),
        )
        .route("/instances/{id}/start", post(instances::start))
        .route("/instances/{id}/stop", post(instances::stop))
        .route("/instances/{id}/reboot", post(instances::reboot))
        .route("/instances/{id}/retry", post(instances::retry))
        .route("/instances/{id}/metrics", get(instances::metrics))
        .route("/instances/{id}/events", get(instances::events))
        .route("/admin/hosts", get(hosts::list).post(hosts::create))
        .route("/admin/hosts/{id}", patch(hosts::update))
        .route("/admin/instances", get(instances::admin_list))
        .route("/admin/plans", post(plans::create))
        .route("/admin/plans/{id}", patch(plans::update))
}

/// An operator acting through the API, as audit events name them (ACCESS-3).
pub(crate) fn operator_audit(op: &crate::auth::Operator) -> clawy_core::Actor {
    clawy_core::Actor::operator(&op.user.id, &op.user.email, op.client.clone())
}

pub(crate) fn tier_to_wire(t: Tier) -> wire::Tier {
    match t {
        Tier::Read => wire::Tier::Read,
        Tier::Manage => wire::Tier::Manage,
        Tier::Admin => wire::Tier::Admin,
    }
}

pub(crate) fn tier_from_wire(t: wire::Tier) -> Tier {
    match t {
        wire::Tier::Read => Tier::Read,
        wire::Tier::Manage => Tier::Manage,
        wire::Tier::Admin => Tier::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_conversion_round_trips_and_keeps_order() {
        for t in Tier::ALL {
            assert_eq!(tier_from_wire(tier_to_wire(t)), t);
        }
        assert!(tier_to_wire(Tier::Read) < tier_to_wire(Tier::Admin));
    }
}
