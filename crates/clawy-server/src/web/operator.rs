//! Operator pages: users and vulnerability reports (REPORT-1). Everyone else gets the
//! ordinary 404, so the pages' existence is not revealed.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use minijinja::context;
use serde::Serialize;

use super::context::OperatorPage;
use super::render::page;
use super::{WebResult, show_time};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/operator",
            get(|| async { axum::response::Redirect::to("/operator/users") }),
        )
        .route("/operator/users", get(users_page))
        .route("/operator/reports", get(reports_page))
}

#[derive(Serialize)]
struct UserRow {
    email: String,
    is_operator: bool,
    created: String,
    created_iso: String,
}

async fn users_page(OperatorPage { mut web, .. }: OperatorPage) -> WebResult {
    let users: Vec<UserRow> = web
        .state
        .core
        .accounts()
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            let (created, created_iso) = show_time(u.created_at);
            UserRow {
                email: u.email,
                is_operator: u.is_operator,
                created,
                created_iso,
            }
        })
        .collect();
    let layout = web.layout("Operator · Users", "operator");
    Ok(web.finish(page(
        StatusCode::OK,
        "operator_users.html",
        &layout,
        context! { users, subnav => "users" },
    )))
}

#[derive(Serialize)]
struct ReportRow {
    tracking_id: String,
    title: String,
    details: String,
    reporter_email: Option<String>,
    client_addr: Option<String>,
    created: String,
    created_iso: String,
}

async fn reports_page(OperatorPage { mut web, operator }: OperatorPage) -> WebResult {
    let reports: Vec<ReportRow> = web
        .state
        .core
        .reports()
        .list(&operator)
        .await?
        .into_iter()
        .map(|r| {
            let (created, created_iso) = show_time(r.created_at);
            ReportRow {
                tracking_id: r.tracking_id,
                title: r.title,
                details: r.body,
                reporter_email: r.reporter_email,
                client_addr: r.client_addr,
                created,
                created_iso,
            }
        })
        .collect();
    let layout = web.layout("Operator · Reports", "operator");
    Ok(web.finish(page(
        StatusCode::OK,
        "operator_reports.html",
        &layout,
        context! { reports, subnav => "reports" },
    )))
}
