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
use clawy_core::actor::Tier;
use clawy_proto::api as wire;

/// Declares the API's routes once. From this one table come [`ROUTES`] (which the
/// authorization matrix and the OpenAPI test iterate), the router ([`router`]) and the
/// OpenAPI paths ([`ApiPaths`]): a route cannot be served without appearing in all
/// three, so it cannot escape the authorization matrix.
macro_rules! api_routes {
    ($( $method:literal $path:literal => $route:ident $handler:path ),* $(,)?) => {
        /// Every API route: (method, path under `/api/v1`).
        pub const ROUTES: &[(&str, &str)] = &[ $( ($method, $path) ),* ];

        /// The API router: each table entry routed to its handler (axum merges the
        /// methods of one path).
        pub fn router() -> Router<AppState> {
            Router::new()
                $( .route($path, axum::routing::$route($handler)) )*
        }

        /// The OpenAPI paths of the table's handlers (`#[utoipa::path]` on each).
        #[derive(utoipa::OpenApi)]
        #[openapi(paths( $( $handler ),* ))]
        pub struct ApiPaths;
    };
}

api_routes! {
    "GET" "/me" => get me::get_me,
    "GET" "/api-keys" => get api_keys::list,
    "POST" "/api-keys" => post api_keys::create,
    "DELETE" "/api-keys/{id}" => delete api_keys::revoke,
    "POST" "/api-keys/{id}/regenerate" => post api_keys::regenerate,
    "GET" "/ssh-keys" => get ssh_keys::list,
    "POST" "/ssh-keys" => post ssh_keys::add,
    "DELETE" "/ssh-keys/{id}" => delete ssh_keys::delete,
    "GET" "/audit" => get audit::list,
    "POST" "/security-reports" => post security_reports::create,
    "GET" "/openapi.json" => get crate::openapi::openapi_json,
    "GET" "/plans" => get plans::list,
    "GET" "/regions" => get regions::list,
    "GET" "/instances" => get instances::list,
    "POST" "/instances" => post instances::create,
    "GET" "/instances/{id}" => get instances::get,
    "DELETE" "/instances/{id}" => delete instances::delete,
    "POST" "/instances/{id}/start" => post instances::start,
    "POST" "/instances/{id}/stop" => post instances::stop,
    "POST" "/instances/{id}/reboot" => post instances::reboot,
    "POST" "/instances/{id}/retry" => post instances::retry,
    "GET" "/instances/{id}/metrics" => get instances::metrics,
    "GET" "/instances/{id}/events" => get instances::events,
    "GET" "/admin/hosts" => get hosts::list,
    "POST" "/admin/hosts" => post hosts::create,
    "PATCH" "/admin/hosts/{id}" => patch hosts::update,
    "POST" "/admin/hosts/{id}/credentials" => post hosts::rotate_credentials,
    "GET" "/admin/instances" => get instances::admin_list,
    "POST" "/admin/plans" => post plans::create,
    "PATCH" "/admin/plans/{id}" => patch plans::update,
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
    fn every_route_appears_once_and_the_router_builds() {
        for (i, (method, path)) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[..i].contains(&(*method, *path)),
                "{method} {path} twice"
            );
        }
        // axum panics on a path/method routed twice or a malformed path.
        let _ = router();
    }

    #[test]
    fn tier_conversion_round_trips_and_keeps_order() {
        for t in Tier::ALL {
            assert_eq!(tier_from_wire(tier_to_wire(t)), t);
        }
        assert!(tier_to_wire(Tier::Read) < tier_to_wire(Tier::Admin));
    }
}
