//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the wire types in `clawy_proto::api`, served at `GET /api/v1/openapi.json`.

use crate::api;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Clawy API",
        description = "Control-plane REST API. Authenticate with `Authorization: Bearer clawy_…` (API keys have tiers read ⊂ manage ⊂ admin). Errors are `{\"error\":{\"code\":\"…\",\"message\":\"…\"}}`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(
        clawy_proto::api::ErrorBody,
        clawy_proto::api::ErrorDetail,
        clawy_proto::api::Tier,
        clawy_proto::api::AuthMethod,
        clawy_proto::api::Me,
        clawy_proto::api::ApiKey,
        clawy_proto::api::ApiKeyList,
        clawy_proto::api::CreateApiKey,
        clawy_proto::api::CreatedApiKey,
        clawy_proto::api::SshKey,
        clawy_proto::api::SshKeyList,
        clawy_proto::api::CreateSshKey,
        clawy_proto::api::AuditEvent,
        clawy_proto::api::AuditPage,
        clawy_proto::api::CreateSecurityReport,
        clawy_proto::api::SecurityReportReceipt,
        clawy_proto::api::Plan,
        clawy_proto::api::PlanList,
        clawy_proto::api::CreatePlan,
        clawy_proto::api::UpdatePlan,
        clawy_proto::api::Region,
        clawy_proto::api::RegionList,
        clawy_proto::api::InstanceState,
        clawy_proto::api::InstanceHealth,
        clawy_proto::api::ServiceHealth,
        clawy_proto::api::DnsRecord,
        clawy_proto::api::Instance,
        clawy_proto::api::InstanceList,
        clawy_proto::api::CreateInstance,
        clawy_proto::api::InstanceMetrics,
        clawy_proto::api::MetricPoint,
        clawy_proto::api::HostResources,
        clawy_proto::api::Host,
        clawy_proto::api::HostList,
        clawy_proto::api::CreateHost,
        clawy_proto::api::UpdateHost,
        clawy_proto::api::RotateHostCredentials,
        clawy_proto::api::AdminInstance,
        clawy_proto::api::AdminInstancePage,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "account", description = "The caller's account and audit log"),
        (name = "api-keys", description = "API keys (admin tier)"),
        (name = "ssh-keys", description = "SSH public keys for instances"),
        (name = "security", description = "Vulnerability reports"),
        (name = "instances", description = "Your VMs, plans and regions"),
        (name = "operator", description = "Hosts, plans and all instances (operators only; others get 404)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("clawy_<tier>_<32 base62><6 checksum>")
                    .description(Some(
                        "An API key from the dashboard or `clawy admin create-api-key`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The generated document: the metadata above and the paths of the route table
/// (`api::ApiPaths`, built from the same table as the router).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(api::ApiPaths::openapi());
    add_common_responses(&mut doc);
    doc
}

/// The routes anyone may call without credentials (REPORT-1 reports, this document);
/// every other route takes a bearer key or a session.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/security-reports"),
    ("GET", "/api/v1/openapi.json"),
];

/// Answers every route of a kind can give, documented once here instead of by hand
/// on each handler (where they were missing): an authenticated route can answer 401
/// (no, a bad, an expired or a revoked key) and 429 (too many failed keys from the
/// address, AUTH-5); a route with a JSON body can answer 415 (not JSON), 400
/// (malformed JSON), 413 (body too large) and 422 (fields); a route with a query
/// string 400 and 422.
fn add_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("PATCH", &mut item.patch),
            ("DELETE", &mut item.delete),
        ] {
            let Some(op) = op.as_mut() else { continue };
            if !PUBLIC_ROUTES.contains(&(method, path.as_str())) {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                add_error(
                    op,
                    "401",
                    "Missing, invalid, expired or revoked credentials (`unauthorized`)",
                );
                add_error(
                    op,
                    "429",
                    "Too many failed authentications from this address (`too_many_attempts`); see `Retry-After`. A valid key is never refused",
                );
            }
            // Query strings are parsed strictly (unknown keys refused): 400, and a
            // value out of range (a page size of 0) is 422 with the field named.
            // Schemathesis found both undocumented.
            let has_query = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
            });
            if has_query {
                add_error(
                    op,
                    "400",
                    "The query string is not valid: an unknown parameter or a malformed value (`invalid_query`)",
                );
                add_error(
                    op,
                    "422",
                    "A query value is out of range (the message names it)",
                );
            }
            if op.request_body.is_some() {
                add_error(op, "400", "The body is not valid JSON (`invalid_json`)");
                add_error(
                    op,
                    "422",
                    "The body is JSON but not what this route takes: a missing, unknown or invalid field (`invalid_body`, or a code naming the field)",
                );
                add_error(op, "413", "The body is too large");
                add_error(
                    op,
                    "415",
                    "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)",
                );
            }
        }
    }
}

fn add_error(op: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                            "ErrorBody",
                        )))),
                    )
                    .build(),
            )
        });
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    axum::Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth5_every_route_documents_401_429_and_body_errors() {
        let doc = document();
        let mut checked = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ] {
                let Some(op) = op else { continue };
                checked += 1;
                let has = |s: &str| op.responses.responses.contains_key(s);
                if !PUBLIC_ROUTES.contains(&(method, path.as_str())) {
                    assert!(has("401") && has("429"), "{method} {path}");
                    assert!(op.security.is_some(), "{method} {path}");
                }
                if op.request_body.is_some() {
                    assert!(has("415") && has("400"), "{method} {path}");
                }
            }
        }
        assert_eq!(checked, api::ROUTES.len());
    }
}
