//! The OpenAPI document is generated from the code and lists every route.

use crate::common::{TestApp, json};
use reqwest::StatusCode;

#[tokio::test]
async fn openapi_json_is_valid_and_lists_every_route() {
    let app = TestApp::start().await;
    let resp = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc = json(resp).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in clawy_server::api::ROUTES {
        let full = format!("/api/v1{path}");
        let item = paths
            .get(&full)
            .unwrap_or_else(|| panic!("{full} missing from openapi.json"));
        assert!(
            item.get(method.to_ascii_lowercase()).is_some(),
            "{method} {full} missing from openapi.json"
        );
    }
    // Nothing documented that the router does not serve.
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, clawy_server::api::ROUTES.len());
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Authenticated routes declare the bearer requirement.
    assert!(paths["/api/v1/me"]["get"]["security"].is_array());
}

#[tokio::test]
async fn every_documented_route_is_served() {
    // The reverse of the above: each ROUTES entry answers something other than the
    // router's 404/405 fallbacks.
    let app = TestApp::start().await;
    for (method, path) in clawy_server::api::ROUTES {
        let path = path.replace("{id}", "nonexistent");
        let resp = app
            .request(method.parse().unwrap(), &format!("/api/v1{path}"))
            .send()
            .await
            .unwrap();
        assert_ne!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if resp.status() == StatusCode::NOT_FOUND {
            let body = json(resp).await;
            assert_ne!(
                body["error"]["message"].as_str().unwrap_or(""),
                "No such API route. See /api/v1/openapi.json for the routes that exist.",
                "{method} {path} is not routed"
            );
        }
    }
}

/// Schema drift Schemathesis found: the paging parameters were declared `in: path`
/// on routes without them, so clients generated from the document never sent them.
/// Every path parameter is a `{name}` of its path, and every `{name}` is declared;
/// the paging bounds are the server's (1–500).
#[tokio::test]
async fn openapi_parameters_are_where_the_server_reads_them() {
    let app = TestApp::start().await;
    let doc = json(
        app.client
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut limits = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
            for p in params.iter().filter(|p| p["name"] == "limit") {
                assert_eq!(p["in"], "query", "{method} {path}: {p}");
                assert_eq!(p["schema"]["minimum"], 1, "{method} {path}: {p}");
                assert_eq!(p["schema"]["maximum"], 500, "{method} {path}: {p}");
                limits += 1;
            }
        }
    }
    assert!(limits >= 6, "paged routes document `limit`: {limits}");
}
