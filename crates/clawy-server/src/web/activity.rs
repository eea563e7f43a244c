//! `/activity`: the signed-in person's audit events, newest first, a page at a time
//! (ACCESS-3).

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use clawy_core::audit::Scope;
use minijinja::context;
use serde::Serialize;

use super::context::SignedIn;
use super::render::page;
use super::{WebResult, show_time};
use crate::pagination::PageQuery;
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

async fn activity_page(
    SignedIn { mut web, session }: SignedIn,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let (user_id, email) = (&session.user.id, &session.user.email);
    let scope = Scope::User(user_id);
    let page_ = web.state.core.audit().page(scope, &q.request()?).await?;
    let (events, pager) = q.rows("/activity", page_, |e| {
        let (at, at_iso) = show_time(e.at);
        EventRow {
            at,
            at_iso,
            event: e.label().to_owned(),
            actor: describe_actor(&e.actor, email),
            client_addr: e.client_addr,
            detail: e.detail,
        }
    });
    let layout = web.layout("Activity", "activity");
    Ok(web.finish(page(
        StatusCode::OK,
        "activity.html",
        &layout,
        context! { events, pager },
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
