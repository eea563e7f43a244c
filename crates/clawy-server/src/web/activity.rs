//! `/activity`: the signed-in person's audit events (ACCESS-3 groundwork).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use minijinja::context;
use serde::Serialize;

use super::context::Web;
use super::render::page;
use super::{WebResult, show_time};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/activity", get(activity_page))
}

#[derive(Serialize)]
struct EventRow {
    at: String,
    at_iso: String,
    event: String,
    actor: String,
    client_addr: Option<String>,
    detail: String,
}

/// How many events the page shows (newest first).
const PAGE_SIZE: u32 = 200;

async fn activity_page(mut web: Web) -> WebResult {
    let user_id = web.require_user()?.user.id.clone();
    let events: Vec<EventRow> = web
        .state
        .core
        .audit()
        .list_for_user(&user_id, PAGE_SIZE, None)
        .await?
        .into_iter()
        .map(|e| {
            let (at, at_iso) = show_time(e.at);
            EventRow {
                at,
                at_iso,
                event: e.label().to_owned(),
                actor: e.actor.clone(),
                client_addr: e.client_addr.clone(),
                detail: e.detail.clone(),
            }
        })
        .collect();
    let layout = web.layout("Activity", "activity");
    Ok(web.finish(page(
        StatusCode::OK,
        "activity.html",
        &layout,
        context! { events },
    )))
}
