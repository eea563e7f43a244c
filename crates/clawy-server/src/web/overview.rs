//! `/`: the product landing for visitors, the overview for signed-in people.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clawy_core::page::PageRequest;
use minijinja::context;

use super::context::Web;
use super::render::page;
use super::{WebError, WebResult};
use crate::state::AppState;
use clawy_core::installation::{InstallationFacts, status_of};

/// The landing page's short claims, each tied to the promise that backs it.
const LANDING_CLAIMS: &[(&str, &str)] = &[
    ("DATA-1", "TLS everywhere"),
    ("NET-1", "default-deny firewalls"),
    ("AUTH-4", "key-only SSH"),
    ("NET-2", "fail2ban"),
    ("NET-3", "no public IPv4 on the VM"),
];

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

async fn home(mut web: Web) -> WebResult {
    let Some(session) = web.session.clone() else {
        // The landing page claims only what this installation keeps (same rules as
        // /security).
        let facts = InstallationFacts::gather(&web.state.core)
            .await
            .map_err(|e| WebError::Internal(format!("installation facts: {e:?}")))?;
        let (mut kept, mut not_kept) = (Vec::new(), Vec::new());
        for (id, claim) in LANDING_CLAIMS {
            if status_of(id, &facts).is_active() {
                kept.push(*claim);
            } else {
                not_kept.push(*claim);
            }
        }
        let layout = web.layout("Your own OpenClaw gateway", "");
        return Ok(web.finish(page(
            StatusCode::OK,
            "landing.html",
            &layout,
            context! { kept, not_kept },
        )));
    };
    let core = &web.state.core;
    let user_id = &session.user.id;
    let ssh_key_count = core.ssh_keys().list(user_id).await?.len();
    let api_key_count = core.api_keys().list(user_id).await?.len();
    let event_count = core
        .audit()
        .count(clawy_core::audit::Scope::User(user_id))
        .await?;
    // The person's instances (the first page) replace the empty state once there are
    // some; the instances page has the rest.
    let first = PageRequest::new(None, None)?;
    let listed = super::instances::views_for_owner(&web.state, user_id, &first).await?;
    let (instances, more_instances) = (listed.items, listed.next_after.is_some());
    let refresh = instances
        .iter()
        .any(super::instances::InstanceView::needs_refresh)
        .then_some(super::instances::REFRESH_SECS);
    let email_unverified = !core.accounts().is_email_verified(user_id).await?;
    let layout = web.layout("Overview", "overview");
    let resp = page(
        StatusCode::OK,
        "overview.html",
        &layout,
        context! { ssh_key_count, api_key_count, event_count, instances, more_instances, refresh, email_unverified },
    );
    Ok(web.finish(resp))
}
