//! Operator pages: users and vulnerability reports (REPORT-1), a page at a time by
//! the one pagination rule. Everyone else gets the ordinary 404, so the pages'
//! existence is not revealed.

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use minijinja::context;
use serde::Serialize;

use super::context::OperatorPage;
use super::render::page;
use super::{WebResult, show_time};
use crate::pagination::PageQuery;
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

async fn users_page(
    OperatorPage { mut web, .. }: OperatorPage,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let accounts = web.state.core.accounts();
    let total = accounts.count_users().await?;
    let page_ = accounts.page_users(&q.request()?).await?;
    let (users, pager) = q.rows("/operator/users", page_, |u| {
        let (created, created_iso) = show_time(u.created_at);
        UserRow {
            email: u.email,
            is_operator: u.is_operator,
            created,
            created_iso,
        }
    });
    let layout = web.layout("Operator · Users", "operator");
    Ok(web.finish(page(
        StatusCode::OK,
        "operator_users.html",
        &layout,
        context! { users, total, pager, subnav => "users" },
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

async fn reports_page(
    OperatorPage { mut web, operator }: OperatorPage,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let page_ = web
        .state
        .core
        .reports()
        .page(&operator, &q.request()?)
        .await?;
    let (reports, pager) = q.rows("/operator/reports", page_, |r| {
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
    });
    let layout = web.layout("Operator · Reports", "operator");
    Ok(web.finish(page(
        StatusCode::OK,
        "operator_reports.html",
        &layout,
        context! { reports, pager, subnav => "reports" },
    )))
}
