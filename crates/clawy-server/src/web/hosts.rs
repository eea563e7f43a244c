//! Operator pages for the fleet: `/operator/hosts` (hosts with load bars, reachability,
//! enable/disable, the registration form) and `/operator/instances` (every user's
//! instances, paginated). Everyone else gets the ordinary 404.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use clawy_core::SecretString;
use clawy_core::audit::AuditAction;
use clawy_core::error::{DomainError, ErrorKind};
use clawy_core::hosts::RegisterHost;
use clawy_core::instances::ListFilter;

use clawy_core::accounts::AccountError;
use clawy_orchestrator::registration::{register_host, rotate_host_credentials};
use minijinja::context;
use serde::Serialize;
use std::collections::HashMap;

use super::charts::format_bytes;
use super::context::{OperatorPage, Web};
use super::error::on_form;
use super::instances::{InstanceView, RangeQuery, render_detail};
use super::render::page;
use super::{FieldErrors, INVALID_FORM, WebError, WebResult, show_time};
use crate::ops::instances::many_to_wire;
use crate::pagination::PageQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/hosts", get(hosts_page).post(register))
        .route("/operator/hosts/{id}/enable", post(enable))
        .route("/operator/hosts/{id}/disable", post(disable))
        .route(
            "/operator/hosts/{id}/credentials",
            get(credentials_page).post(rotate_credentials),
        )
        .route("/operator/instances", get(instances_page))
        .route("/operator/instances/{id}", get(instance_page))
}

#[derive(Serialize)]
struct HostRow {
    id: String,
    name: String,
    url: String,
    location: String,
    enabled: bool,
    reachable: bool,
    last_contact: Option<String>,
    last_contact_iso: Option<String>,
    instance_count: u64,
    cap_vcpus: u64,
    alloc_vcpus: u64,
    vcpus_text: String,
    cap_memory: u64,
    alloc_memory: u64,
    memory_text: String,
    cap_disk: u64,
    alloc_disk: u64,
    disk_text: String,
}

#[derive(Debug, Default, Serialize)]
struct RegisterForm {
    name: String,
    url: String,
    fingerprint: String,
    location: String,
    site: String,
}

async fn render_hosts(
    web: &mut Web,
    q: &PageQuery,
    status: StatusCode,
    form: &RegisterForm,
    errors: FieldErrors,
) -> WebResult {
    let all = web.state.core.hosts().list_with_load().await?;
    let (hosts, pager) = q.rows_of(
        "/operator/hosts",
        all,
        |h| h.host.id.clone(),
        |h| {
            let (last_contact, last_contact_iso) = match h.host.last_contact_at.map(show_time) {
                Some((a, b)) => (Some(a), Some(b)),
                None => (None, None),
            };
            let mib = |v: u64| format_bytes(v as f64 * 1024.0 * 1024.0);
            HostRow {
                id: h.host.id.clone(),
                name: h.host.name.clone(),
                url: h.host.url.clone(),
                location: h.host.location_label(),
                enabled: h.host.enabled,
                reachable: h.host.reachable,
                last_contact,
                last_contact_iso,
                instance_count: h.instance_count,
                cap_vcpus: h.host.capacity.vcpus,
                alloc_vcpus: h.allocated.vcpus,
                vcpus_text: format!("{} / {} vCPU", h.allocated.vcpus, h.host.capacity.vcpus),
                cap_memory: h.host.capacity.memory_mib,
                alloc_memory: h.allocated.memory_mib,
                memory_text: format!(
                    "{} / {}",
                    mib(h.allocated.memory_mib),
                    mib(h.host.capacity.memory_mib)
                ),
                cap_disk: h.host.capacity.disk_gib,
                alloc_disk: h.allocated.disk_gib,
                disk_text: format!(
                    "{} / {} GiB",
                    h.allocated.disk_gib, h.host.capacity.disk_gib
                ),
            }
        },
    )?;
    let allowed_countries = web.state.core.config().allowed_countries.join(", ");
    let layout = web.layout("Operator · Hosts", "operator");
    let resp = page(
        status,
        "hosts.html",
        &layout,
        context! { hosts, pager, form, errors, allowed_countries, subnav => "hosts" },
    );
    Ok(web.finish(resp))
}

async fn hosts_page(
    OperatorPage { mut web, .. }: OperatorPage,
    Query(q): Query<PageQuery>,
) -> WebResult {
    render_hosts(
        &mut web,
        &q,
        StatusCode::OK,
        &RegisterForm::default(),
        FieldErrors::new(),
    )
    .await
}

async fn register(op: OperatorPage, body: Bytes) -> WebResult {
    let actor = op.actor();
    let mut web = op.web;
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    web.check_form(&field("csrf_token"))?;
    let form = RegisterForm {
        name: field("name"),
        url: field("url"),
        fingerprint: field("fingerprint"),
        location: field("location"),
        site: field("site"),
    };
    let result = register_host(
        &web.state.core,
        &actor,
        RegisterHost {
            name: form.name.clone(),
            url: form.url.clone(),
            fingerprint: form.fingerprint.clone(),
            // DATA-3: the token is never echoed back into the form.
            token: SecretString::from(field("token")),
            region: form.location.clone(),
            site: form.site.clone(),
            enabled: true,
        },
    )
    .await;
    match result {
        Ok(_) => Ok(web.finish(Redirect::to("/operator/hosts").into_response())),
        Err(e) => {
            let key = match e.kind() {
                ErrorKind::Invalid { field: "url" } => "url",
                ErrorKind::Invalid {
                    field: "fingerprint",
                } => "fingerprint",
                ErrorKind::Invalid { field: "token" } => "token",
                ErrorKind::Invalid { field: "region" } => "location",
                ErrorKind::Invalid { field: "site" } => "site",
                ErrorKind::Invalid { field: "name" } => "name",
                ErrorKind::Conflict => "name",
                _ => "_form",
            };
            let mut errors = FieldErrors::new();
            let message = e.to_string();
            let status = on_form(e, key, message, &mut errors)?;
            render_hosts(&mut web, &PageQuery::default(), status, &form, errors).await
        }
    }
}

async fn set_enabled(op: OperatorPage, id: String, body: &[u8], enabled: bool) -> WebResult {
    let actor = op.actor();
    let web = op.web;
    let token = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    web.check_form(&token)?;
    web.state
        .core
        .hosts()
        .set_enabled(&actor, &id, enabled)
        .await?;
    Ok(web.finish(Redirect::to("/operator/hosts").into_response()))
}

async fn enable(op: OperatorPage, Path(id): Path<String>, body: Bytes) -> WebResult {
    set_enabled(op, id, &body, true).await
}

async fn disable(op: OperatorPage, Path(id): Path<String>, body: Bytes) -> WebResult {
    set_enabled(op, id, &body, false).await
}

/// What the rotation form keeps between attempts (never the token or the password).
#[derive(Debug, Default, Serialize)]
struct RotateForm {
    fingerprint: String,
}

async fn render_credentials(
    web: &mut Web,
    id: &str,
    status: StatusCode,
    form: &RotateForm,
    errors: FieldErrors,
) -> WebResult {
    let host = web.state.core.hosts().get(id).await?;
    let host = context! { id => host.id, name => host.name, url => host.url, fingerprint => host.fingerprint };
    let layout = web.layout("Operator · Rotate host credentials", "operator");
    let resp = page(
        status,
        "host_credentials.html",
        &layout,
        context! { host, form, errors, subnav => "hosts" },
    );
    Ok(web.finish(resp))
}

async fn credentials_page(
    OperatorPage { mut web, .. }: OperatorPage,
    Path(id): Path<String>,
) -> WebResult {
    render_credentials(
        &mut web,
        &id,
        StatusCode::OK,
        &RotateForm::default(),
        FieldErrors::new(),
    )
    .await
}

/// DATA-3: the dashboard's rotate action, as `POST /api/v1/admin/hosts/{id}/credentials`
/// and `clawy admin rotate-host`: a new agent token and/or the fingerprint after a
/// certificate change; the agent must accept them before anything is stored. A
/// browser session alone cannot redirect a host's credentials: the operator enters
/// their password again (AUTH-3), as for minting an admin key.
async fn rotate_credentials(op: OperatorPage, Path(id): Path<String>, body: Bytes) -> WebResult {
    let actor = op.actor();
    let operator_id = op.operator.id.clone();
    let mut web = op.web;
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    web.check_form(&field("csrf_token"))?;
    // The host must exist before anything else is said about the form.
    web.state.core.hosts().get(&id).await?;
    let form = RotateForm {
        fingerprint: field("fingerprint").trim().to_owned(),
    };
    let token = field("token");
    let mut errors = FieldErrors::new();
    if token.trim().is_empty() && form.fingerprint.is_empty() {
        errors.insert(
            "_form",
            "Enter a new agent token, a new fingerprint, or both.".to_owned(),
        );
    }
    if errors.is_empty() {
        let confirmed = web
            .state
            .core
            .accounts()
            .confirm_password(
                &operator_id,
                &SecretString::from(field("password")),
                &web.actor(),
            )
            .await;
        match confirmed {
            Ok(()) => {}
            Err(AccountError::WrongCurrentPassword) => {
                errors.insert(
                    "password",
                    "Enter your current password to rotate a host's credentials.".to_owned(),
                );
            }
            Err(AccountError::Throttled { retry_after }) => {
                return Err(WebError::Throttled { retry_after });
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() {
        return render_credentials(&mut web, &id, INVALID_FORM, &form, errors).await;
    }
    let token = (!token.trim().is_empty()).then(|| SecretString::from(token));
    let fingerprint = (!form.fingerprint.is_empty()).then_some(form.fingerprint.as_str());
    let result =
        rotate_host_credentials(&web.state.core, &actor, &id, token.as_ref(), fingerprint).await;
    match result {
        Ok(_) => Ok(web.finish(Redirect::to("/operator/hosts").into_response())),
        Err(e) => {
            let key = match e.kind() {
                ErrorKind::Invalid {
                    field: "fingerprint",
                } => "fingerprint",
                ErrorKind::Invalid { field: "token" } => "token",
                _ => "_form",
            };
            let message = e.to_string();
            let status = on_form(e, key, message, &mut errors)?;
            render_credentials(&mut web, &id, status, &form, errors).await
        }
    }
}

async fn instances_page(
    OperatorPage { mut web, .. }: OperatorPage,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let state = web.state.clone();
    let req = q.request()?;
    let page_ = state
        .core
        .instances()
        .page_all(&ListFilter::default(), &req)
        .await?;
    let wired = many_to_wire(&state.core, &page_.items).await?;
    let owners: Vec<&str> = page_.items.iter().map(|i| i.owner_id.as_str()).collect();
    let emails = state.core.accounts().emails_by_ids(&owners).await?;
    let mut instances = Vec::with_capacity(page_.items.len());
    for (i, w) in page_.items.iter().zip(wired) {
        let mut v = InstanceView::from_wire(w);
        v.owner_email = emails.get(&i.owner_id).cloned();
        // DNS publication failures are operator-visible, here and in the API.
        v.dns_error = i.dns.error.clone();
        instances.push(v);
    }
    let pager = q.pager("/operator/instances", page_.next_after.as_deref());
    let layout = web.layout("Operator · Instances", "operator");
    let resp = page(
        StatusCode::OK,
        "instances_operator.html",
        &layout,
        context! { instances, pager, subnav => "instances" },
    );
    Ok(web.finish(resp))
}

async fn instance_page(
    op: OperatorPage,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> WebResult {
    let actor = op.actor();
    let OperatorPage {
        mut web, operator, ..
    } = op;
    let inst = web.state.core.instances().get_any(&id).await?;
    // ACCESS-3: an operator looking at someone's instance is an event its owner reads.
    if inst.owner_id != operator.id {
        web.state
            .core
            .audit()
            .record_instance(
                &inst.owner_id,
                &inst.id,
                &actor,
                AuditAction::InstanceViewedByOperator,
                "",
            )
            .await?;
    }
    render_detail(
        &mut web,
        &inst,
        q.range.as_deref(),
        false,
        ("/operator/instances", "All instances"),
    )
    .await
}
