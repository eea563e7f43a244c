//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the wire types in `clawy_proto::api`, served at `GET /api/v1/openapi.json`.

use crate::api;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    doc
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    axum::Json(document()).into_response()
}
