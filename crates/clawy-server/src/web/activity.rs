//! `/activity`: the signed-in person's audit events (ACCESS-3 groundwork).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clawy_core::audit::Scope;
use clawy_core::page::PageRequest;
use minijinja::context;
use serde::Serialize;

use super::context::SignedIn;
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

/// The stored actor (`user:<email>`, `api_key:<prefix>`, `operator:<email>`, `system`,
/// `anonymous`) in words, from the reader's point of view.
fn describe_actor(actor: &str, own_email: &str) -> String {
    match actor.split_once(':') {
        Some(("user", email)) if email == own_email => "You".to_owned(),
        Some(("user", email)) => email.to_owned(),
        Some(("api_key", prefix)) => format!("API key {prefix}…"),
        Some(("operator", email)) => format!("Operator {email}"),
        _ if actor == "system" => "Clawy".to_owned(),
        _ if actor == "anonymous" => "Not signed in".to_owned(),
        _ => actor.to_owned(),
    }
}

async fn activity_page(SignedIn { mut web, session }: SignedIn) -> WebResult {
    let (user_id, email) = (session.user.id.clone(), session.user.email.clone());
    let events: Vec<EventRow> = web
        .state
        .core
        .audit()
        .page(Scope::User(&user_id), &PageRequest::first(PAGE_SIZE))
        .await?
        .items
        .into_iter()
        .map(|e| {
            let (at, at_iso) = show_time(e.at);
            EventRow {
                at,
                at_iso,
                event: e.label().to_owned(),
                actor: describe_actor(&e.actor, &email),
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

#[cfg(test)]
mod tests {
    use super::describe_actor;

    #[test]
    fn actors_in_words() {
        assert_eq!(describe_actor("user:a@x.test", "a@x.test"), "You");
        assert_eq!(
            describe_actor("operator:o@x.test", "a@x.test"),
            "Operator o@x.test"
        );
        assert_eq!(
            describe_actor("api_key:clawy_r_abcd", "a@x.test"),
            "API key clawy_r_abcd…"
        );
        assert_eq!(describe_actor("anonymous", "a@x.test"), "Not signed in");
        assert_eq!(describe_actor("system", "a@x.test"), "Clawy");
    }
}
