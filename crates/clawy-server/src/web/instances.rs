//! `/instances`: the signed-in person's VMs — list with live state badges, create form,
//! detail page (connection, health, SVG charts, events) and lifecycle buttons.
//!
//! The pages call the same operations as the REST API (`ops::instances`), so a state,
//! an SSH command or an error message reads the same in the browser, the CLI and JSON.
//! Lifecycle buttons are POST forms with the session's CSRF token (AUTH-3); deleting
//! needs a confirmation page where the name is typed. Pages showing a state that is
//! still changing refresh themselves with `<meta http-equiv="refresh">` (no script).

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use clawy_core::instances::{Instance, InstanceError};
use clawy_core::lifecycle::LifecycleAction;
use clawy_core::page::{Page, PageRequest};
use clawy_core::placement::PlacementError;
use clawy_proto::api as wire;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::charts::{self, Series, Unit};
use super::context::{SignedIn, Web};
use super::error::on_form;
use super::render::page;
use super::{FieldErrors, WebError, WebResult, show_time};
use crate::ops::instances::{RANGES, many_to_wire, one_to_wire, parse_range, request};
use crate::pagination::PageQuery;
use crate::state::AppState;

/// Seconds between self-refreshes while a state is changing.
pub const REFRESH_SECS: u32 = 4;
/// Events shown on the instance page.
const RECENT_EVENTS: u32 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/instances", get(list_page).post(create))
        .route("/instances/new", get(new_page))
        .route("/instances/{id}", get(show_page))
        .route("/instances/{id}/start", post(start))
        .route("/instances/{id}/stop", post(stop))
        .route("/instances/{id}/reboot", post(reboot))
        .route("/instances/{id}/retry", post(retry))
        .route(
            "/instances/{id}/delete",
            get(delete_page).post(delete_instance),
        )
}

/// An instance as the templates show it (built from the API's wire form).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub transitional: bool,
    pub desired_power: String,
    pub plan: String,
    pub region: String,
    pub host_location: Option<String>,
    pub private_ip: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_command: Option<String>,
    pub gateway: String,
    pub http_status: Option<u16>,
    pub services: Vec<ServiceView>,
    pub checked: Option<String>,
    pub checked_iso: Option<String>,
    pub last_contact: Option<String>,
    pub last_contact_iso: Option<String>,
    pub uptime: Option<String>,
    pub error_reason: Option<String>,
    pub created: String,
    pub created_iso: String,
    pub owner_email: Option<String>,
    pub hostname: Option<String>,
    pub https_url: Option<String>,
    pub dns_records: Vec<wire::DnsRecord>,
    /// The last DNS publication failure: set on operator pages only.
    pub dns_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub state: String,
    /// `12 s ago` from the heartbeat that reported it.
    pub age: Option<String>,
}

/// `3 d 4 h`, `2 h 5 min`, `42 s`.
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

fn split_time(t: Option<DateTime<Utc>>) -> (Option<String>, Option<String>) {
    match t.map(show_time) {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    }
}

impl InstanceView {
    pub fn from_wire(i: wire::Instance) -> InstanceView {
        let (checked, checked_iso) = split_time(i.health.checked_at);
        let (last_contact, last_contact_iso) = split_time(i.last_contact_at);
        let (created, created_iso) = show_time(i.created_at);
        InstanceView {
            state: i.state.as_str(),
            transitional: i.state.is_transitional(),
            id: i.id,
            name: i.name,
            desired_power: i.desired_power,
            plan: i.plan,
            region: i.region,
            host_location: i.host_location,
            private_ip: i.private_ip,
            ssh_port: i.ssh_port,
            ssh_command: i.ssh_command,
            hostname: i.hostname,
            https_url: i.https_url,
            dns_records: i.dns_records,
            dns_error: None,
            gateway: i.health.gateway,
            http_status: i.health.http_status,
            services: i
                .health
                .services
                .into_iter()
                .map(|s| ServiceView {
                    name: s.name,
                    state: s.state,
                    age: s.age_secs.map(|a| format!("{} ago", format_uptime(a))),
                })
                .collect(),
            checked,
            checked_iso,
            last_contact,
            last_contact_iso,
            uptime: i.uptime_secs.map(format_uptime),
            error_reason: i.error_reason,
            created,
            created_iso,
            owner_email: None,
        }
    }

    /// A page showing this instance should refresh itself until the state settles.
    pub fn needs_refresh(&self) -> bool {
        self.transitional || self.state == "unknown"
    }
}

async fn view_one(state: &AppState, inst: &Instance) -> InstanceView {
    InstanceView::from_wire(one_to_wire(&state.core, inst).await)
}

/// A page of the signed-in person's instances as views (one query plus the host
/// labels), and the cursor of the next page.
pub async fn views_for_owner(
    state: &AppState,
    owner_id: &str,
    req: &PageRequest,
) -> Result<Page<InstanceView>, WebError> {
    let page = state.core.instances().page_for_owner(owner_id, req).await?;
    let views = many_to_wire(&state.core, &page.items).await?;
    Ok(Page {
        items: views.into_iter().map(InstanceView::from_wire).collect(),
        next_after: page.next_after,
    })
}

async fn list_page(
    SignedIn { mut web, session }: SignedIn,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let listed = views_for_owner(&web.state, &session.user.id, &q.request()?).await?;
    let (instances, pager) = q.rows("/instances", listed, |v| v);
    let refresh = instances
        .iter()
        .any(InstanceView::needs_refresh)
        .then_some(REFRESH_SECS);
    let layout = web.layout("Instances", "instances");
    let resp = page(
        StatusCode::OK,
        "instances.html",
        &layout,
        context! { instances, pager, refresh },
    );
    Ok(web.finish(resp))
}

// ----- create -------------------------------------------------------------------------

#[derive(Debug, Default, Serialize)]
struct CreateForm {
    name: String,
    plan: String,
    region: String,
    #[serde(skip)]
    ssh_key_ids: Vec<String>,
    #[serde(skip)]
    csrf_token: String,
    /// DATA-5: never serialized, so a form shown again never echoes a secret.
    #[serde(skip)]
    telegram_bot_token: String,
    #[serde(skip)]
    model_key: String,
    model_provider: String,
}

impl CreateForm {
    /// `ssh_key_ids` repeats (one per ticked checkbox), which serde's form parser
    /// does not collect, so the body is parsed by hand.
    fn parse(body: &[u8]) -> CreateForm {
        let mut f = CreateForm::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            match k.as_ref() {
                "name" => f.name = v.into_owned(),
                "plan" => f.plan = v.into_owned(),
                "region" => f.region = v.into_owned(),
                "ssh_key_ids" => f.ssh_key_ids.push(v.into_owned()),
                "csrf_token" => f.csrf_token = v.into_owned(),
                "telegram_bot_token" => f.telegram_bot_token = v.into_owned(),
                "model_provider" => f.model_provider = v.into_owned(),
                "model_key" => f.model_key = v.into_owned(),
                _ => {}
            }
        }
        f
    }
}

#[derive(Serialize)]
struct PlanOption {
    name: String,
    vcpus: u32,
    memory: String,
    disk_gib: u64,
}

#[derive(Serialize)]
struct RegionOption {
    code: String,
    has_hosts: bool,
}

#[derive(Serialize)]
struct KeyOption {
    id: String,
    name: String,
    fingerprint: String,
    checked: bool,
}

fn memory_label(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB RAM", mib / 1024)
    } else {
        format!("{mib} MiB RAM")
    }
}

async fn render_new(
    web: &mut Web,
    user_id: &str,
    status: StatusCode,
    form: &CreateForm,
    checked: Option<&[String]>,
    errors: FieldErrors,
) -> WebResult {
    let core = web.state.core.clone();
    let plans: Vec<PlanOption> = core
        .plans()
        .list()
        .await?
        .into_iter()
        .map(|p| PlanOption {
            memory: memory_label(p.memory_mib),
            name: p.name,
            vcpus: p.vcpus,
            disk_gib: p.disk_gib,
        })
        .collect();
    let mut regions: Vec<RegionOption> = core
        .regions()
        .list()
        .await?
        .into_iter()
        .map(|r| RegionOption {
            code: r.code,
            has_hosts: r.hosts > 0,
        })
        .collect();
    // DATA-2: only allowed countries; without any host yet, still show the default so
    // the form explains itself (create then answers "no capacity").
    if regions.is_empty() {
        regions.push(RegionOption {
            code: core.config().default_region.clone(),
            has_hosts: false,
        });
    }
    let keys: Vec<KeyOption> = core
        .ssh_keys()
        .list(user_id)
        .await?
        .into_iter()
        .map(|k| KeyOption {
            checked: checked.is_none_or(|c| c.contains(&k.id)),
            id: k.id,
            name: k.name,
            fingerprint: k.fingerprint,
        })
        .collect();
    let layout = web.layout("Create instance", "instances");
    let resp = page(
        status,
        "instances_new.html",
        &layout,
        context! { form, plans, regions, keys, errors },
    );
    Ok(web.finish(resp))
}

async fn new_page(SignedIn { mut web, session }: SignedIn) -> WebResult {
    let cfg = web.state.core.config();
    let form = CreateForm {
        plan: cfg.default_plan.clone(),
        region: cfg.default_region.clone(),
        ..CreateForm::default()
    };
    render_new(
        &mut web,
        &session.user.id,
        StatusCode::OK,
        &form,
        None,
        FieldErrors::new(),
    )
    .await
}

/// Puts an instance error next to the field it is about ([`on_form`] decides what a
/// form shows and with which status).
fn create_error(e: InstanceError, errors: &mut FieldErrors) -> Result<StatusCode, WebError> {
    let field = match &e {
        InstanceError::InvalidName | InstanceError::NameTaken(_) => "name",
        InstanceError::PlanNotFound(_) => "plan",
        InstanceError::SshKeyNotFound(_) => "ssh_key_ids",
        InstanceError::Placement(PlacementError::RegionNotAllowed { .. }) => "region",
        InstanceError::InvalidSecret { field, .. } => field,
        _ => "_form",
    };
    let message = match &e {
        // The domain text is lower-case for the API; a sentence reads better here.
        InstanceError::Placement(PlacementError::NoCapacity { region, plan }) => format!(
            "There is no capacity in region {region} for plan {plan} right now. Try a smaller plan or another region, or ask the operator to add a host."
        ),
        other => other.to_string(),
    };
    on_form(e, field, message, errors)
}

async fn create(SignedIn { mut web, session }: SignedIn, body: Bytes) -> WebResult {
    let session_user = session.user;
    let form = CreateForm::parse(&body);
    web.check_form(&form.csrf_token)?;
    let caller = web.actor();
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.trim().is_empty());
    let result = match crate::api::instances::owner_secrets(
        some(&form.telegram_bot_token),
        // The provider select always sends a value; it counts only with a key.
        some(&form.model_key).and(some(&form.model_provider)),
        some(&form.model_key),
    ) {
        Ok(secrets) => {
            web.state
                .core
                .instances()
                .create_with_token(
                    &caller,
                    &session_user.id,
                    clawy_core::instances::CreateInstance {
                        name: form.name.clone(),
                        plan: Some(form.plan.clone()).filter(|p| !p.is_empty()),
                        region: Some(form.region.clone()).filter(|r| !r.is_empty()),
                        ssh_key_ids: form.ssh_key_ids.clone(),
                        secrets,
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((inst, gateway_token)) => {
            // DATA-5: the gateway token, shown on the answer to this POST only
            // (no-store), never again.
            let layout = web.layout("Instance created", "instances");
            let resp = page(
                StatusCode::OK,
                "instance_created.html",
                &layout,
                context! {
                    id => inst.id.clone(),
                    name => inst.name.clone(),
                    secret => gateway_token.expose(),
                },
            );
            Ok(web.finish(resp))
        }
        Err(e) => {
            let mut errors = FieldErrors::new();
            let status = create_error(e, &mut errors)?;
            let checked = form.ssh_key_ids.clone();
            render_new(
                &mut web,
                &session_user.id,
                status,
                &form,
                Some(&checked),
                errors,
            )
            .await
        }
    }
}

// ----- detail -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub(super) struct RangeQuery {
    pub(super) range: Option<String>,
}

#[derive(Serialize)]
struct LegendItem {
    label: &'static str,
    class: &'static str,
}

#[derive(Serialize)]
struct EventView {
    at: String,
    at_iso: String,
    event: String,
    actor: String,
    detail: String,
}

/// The four charts of the instance page, as template values (the SVG is markup we
/// generated, so it is passed as a safe string; every label inside is escaped).
async fn charts_for(
    state: &AppState,
    inst: &Instance,
    range: &str,
) -> Result<Vec<Value>, WebError> {
    let span = parse_range(Some(range))
        .map(|r| r.1)
        .map_err(|_| WebError::NotFound)?;
    let now = state.core.now();
    let from = now - span;
    let series = state.core.metrics().series(&inst.id, from, now).await?;
    let pts = &series.points;
    let pick = |f: &dyn Fn(&clawy_core::metrics::SeriesPoint) -> Option<f64>| -> Vec<(DateTime<Utc>, f64)> {
        pts.iter().filter_map(|p| f(p).map(|v| (p.at, v))).collect()
    };
    let cpu = pick(&|p| p.cpu_percent);
    let mem = pick(&|p| p.memory_used_bytes.map(|v| v as f64));
    let disk = pick(&|p| p.disk_used_bytes.map(|v| v as f64));
    let counter = |f: &dyn Fn(&clawy_core::metrics::SeriesPoint) -> Option<u64>| -> Vec<(DateTime<Utc>, u64)> {
        pts.iter().filter_map(|p| f(p).map(|v| (p.at, v))).collect()
    };
    let rx = charts::rates(&counter(&|p| p.net_rx_bytes));
    let tx = charts::rates(&counter(&|p| p.net_tx_bytes));
    let latest = |s: &[(DateTime<Utc>, f64)], unit: Unit| {
        s.last().map(|(_, v)| charts::format_value(*v, unit))
    };
    let mut out = Vec::new();
    let mut chart =
        |title: &'static str, unit: Unit, series: Vec<Series>, latest: Option<String>| {
            let legend: Vec<LegendItem> = if series.len() > 1 {
                series
                    .iter()
                    .map(|s| LegendItem {
                        label: s.label,
                        class: s.class,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let svg = charts::line_chart(title, unit, &series, from, now);
            out.push(context! {
                title => title,
                latest => latest,
                legend => legend,
                svg => Value::from_safe_string(svg),
            });
        };
    let cpu_latest = latest(&cpu, Unit::Percent);
    chart(
        "CPU",
        Unit::Percent,
        vec![Series {
            label: "CPU",
            class: "series-a",
            points: cpu,
        }],
        cpu_latest,
    );
    let mem_latest = latest(&mem, Unit::Bytes);
    chart(
        "Memory",
        Unit::Bytes,
        vec![Series {
            label: "Memory",
            class: "series-a",
            points: mem,
        }],
        mem_latest,
    );
    let disk_latest = latest(&disk, Unit::Bytes);
    chart(
        "Disk",
        Unit::Bytes,
        vec![Series {
            label: "Disk",
            class: "series-a",
            points: disk,
        }],
        disk_latest,
    );
    chart(
        "Network",
        Unit::BytesPerSec,
        vec![
            Series {
                label: "received",
                class: "series-a",
                points: rx,
            },
            Series {
                label: "sent",
                class: "series-b",
                points: tx,
            },
        ],
        None,
    );
    Ok(out)
}

/// The instance's newest events (a first page of [`RECENT_EVENTS`]) and whether
/// older ones exist.
async fn events_for(
    state: &AppState,
    instance_id: &str,
) -> Result<(Vec<EventView>, bool), WebError> {
    let scope = clawy_core::audit::Scope::Instance(instance_id);
    let first = PageRequest::first(RECENT_EVENTS);
    let page = state.core.audit().page(scope, &first).await?;
    let more = page.next_after.is_some();
    let events = page.map(|e| {
        let (at, at_iso) = show_time(e.at);
        EventView {
            at,
            at_iso,
            event: e.label().to_string(),
            actor: e.actor,
            detail: e.detail,
        }
    });
    Ok((events.items, more))
}

/// Renders the detail page; `can_act` shows the lifecycle buttons (owner only).
pub async fn render_detail(
    web: &mut Web,
    inst: &Instance,
    range: Option<&str>,
    can_act: bool,
    back: (&str, &str),
) -> WebResult {
    let range = parse_range(range).map(|r| r.0).unwrap_or("1h");
    let mut i = view_one(&web.state, inst).await;
    // Only the operator pages render without actions; only they show the failed
    // attempts' detail (an agent's message can name another tenant's VM or the agent's
    // URL). Owners keep the generic reason in `error_reason`.
    let operator_view = !can_act;
    let job_errors = if operator_view {
        job_errors_for(&web.state, &inst.id).await?
    } else {
        Vec::new()
    };
    if !can_act {
        i.owner_email = web
            .state
            .core
            .accounts()
            .get_user(&inst.owner_id)
            .await
            .ok()
            .map(|u| u.email);
    }
    let charts = charts_for(&web.state, inst, range).await?;
    let (events, more_events) = events_for(&web.state, &inst.id).await?;
    let refresh = i.needs_refresh().then_some(REFRESH_SECS);
    // Nothing more to do on an instance that is going away.
    let can_act = can_act && !matches!(i.state, "deleted" | "deleting");
    let layout = web.layout(&i.name, if can_act { "instances" } else { "operator" });
    let resp = page(
        StatusCode::OK,
        "instances_show.html",
        &layout,
        context! {
            i, charts, events, more_events, refresh, can_act, range, ranges => RANGES,
            back_href => back.0, back_label => back.1, operator_view, job_errors,
        },
    );
    Ok(web.finish(resp))
}

/// A failed attempt of one of the instance's jobs, for the operator's view.
#[derive(Debug, Serialize)]
struct JobErrorRow {
    kind: String,
    attempt: u32,
    when: String,
    when_iso: String,
    error: String,
}

/// Every failed attempt with its error, newest first (at most 20).
async fn job_errors_for(state: &AppState, instance_id: &str) -> Result<Vec<JobErrorRow>, WebError> {
    let history = state.core.jobs().history(instance_id).await?;
    let mut rows: Vec<(DateTime<Utc>, JobErrorRow)> = history
        .iter()
        .flat_map(|h| {
            h.attempt_log.iter().filter_map(move |a| {
                let error = a.error.clone()?;
                let at = a.finished_at.unwrap_or(a.started_at);
                let (when, when_iso) = show_time(at);
                Some((
                    at,
                    JobErrorRow {
                        kind: h.job.kind.as_str().to_owned(),
                        attempt: a.attempt,
                        when,
                        when_iso,
                        error,
                    },
                ))
            })
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(rows.into_iter().take(20).map(|(_, r)| r).collect())
}

async fn show_page(
    SignedIn { mut web, session }: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> WebResult {
    // Scoped by owner: another person's instance is the ordinary 404.
    let inst = web
        .state
        .core
        .instances()
        .get(&session.user.id, &id)
        .await?;
    render_detail(
        &mut web,
        &inst,
        q.range.as_deref(),
        true,
        ("/instances", "Instances"),
    )
    .await
}

// ----- lifecycle ----------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfOnly {
    csrf_token: String,
}

async fn act(page_: SignedIn, id: String, body: &[u8], action: LifecycleAction) -> WebResult {
    let SignedIn { web, session } = page_;
    let f: CsrfOnly = serde_urlencoded_form(body);
    web.check_form(&f.csrf_token)?;
    request(&web.state.core, &web.actor(), &session.user.id, &id, action).await?;
    let to = if action == LifecycleAction::Delete {
        "/instances".to_string()
    } else {
        format!("/instances/{id}")
    };
    Ok(web.finish(Redirect::to(&to).into_response()))
}

fn serde_urlencoded_form(body: &[u8]) -> CsrfOnly {
    let mut f = CsrfOnly::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        if k == "csrf_token" {
            f.csrf_token = v.into_owned();
        }
    }
    f
}

async fn start(page_: SignedIn, Path(id): Path<String>, body: Bytes) -> WebResult {
    act(page_, id, &body, LifecycleAction::Start).await
}
async fn stop(page_: SignedIn, Path(id): Path<String>, body: Bytes) -> WebResult {
    act(page_, id, &body, LifecycleAction::Stop).await
}
async fn reboot(page_: SignedIn, Path(id): Path<String>, body: Bytes) -> WebResult {
    act(page_, id, &body, LifecycleAction::Reboot).await
}
async fn retry(page_: SignedIn, Path(id): Path<String>, body: Bytes) -> WebResult {
    act(page_, id, &body, LifecycleAction::Retry).await
}

async fn render_delete(
    web: &mut Web,
    inst: &Instance,
    status: StatusCode,
    errors: FieldErrors,
) -> WebResult {
    let i = view_one(&web.state, inst).await;
    let layout = web.layout(&format!("Delete {}", i.name), "instances");
    let resp = page(
        status,
        "instances_delete.html",
        &layout,
        context! { i, errors },
    );
    Ok(web.finish(resp))
}

async fn delete_page(SignedIn { mut web, session }: SignedIn, Path(id): Path<String>) -> WebResult {
    let inst = web
        .state
        .core
        .instances()
        .get(&session.user.id, &id)
        .await?;
    render_delete(&mut web, &inst, StatusCode::OK, FieldErrors::new()).await
}

async fn delete_instance(mut page_: SignedIn, Path(id): Path<String>, body: Bytes) -> WebResult {
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let web = &mut page_.web;
    web.check_form(fields.get("csrf_token").map(String::as_str).unwrap_or(""))?;
    let inst = web
        .state
        .core
        .instances()
        .get(&page_.session.user.id, &id)
        .await?;
    // The confirmation step: the name must be typed, so a stray click deletes nothing.
    if fields.get("confirm_name").map(|s| s.trim()) != Some(inst.name.as_str()) {
        let mut errors = FieldErrors::new();
        errors.insert(
            "confirm_name",
            format!("Type {} exactly to confirm.", inst.name),
        );
        return render_delete(
            &mut page_.web,
            &inst,
            StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        )
        .await;
    }
    act(page_, id, &body, LifecycleAction::Delete).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn uptime_reads_naturally() {
        assert_eq!(format_uptime(42), "42 s");
        assert_eq!(format_uptime(5 * 60), "5 min");
        assert_eq!(format_uptime(2 * 3600 + 5 * 60), "2 h 5 min");
        assert_eq!(format_uptime(3 * 86_400 + 4 * 3600), "3 d 4 h");
    }

    #[test]
    fn create_form_collects_every_ticked_key() {
        let f = CreateForm::parse(
            b"csrf_token=t&name=web&plan=small&region=DE&ssh_key_ids=a&ssh_key_ids=b",
        );
        assert_eq!(f.ssh_key_ids, vec!["a", "b"]);
        assert_eq!(f.name, "web");
        assert_eq!(f.csrf_token, "t");
    }

    #[test]
    fn capacity_error_is_a_sentence_on_the_form() {
        let mut errors = FieldErrors::new();
        let status = create_error(
            InstanceError::Placement(PlacementError::NoCapacity {
                region: "DE".into(),
                plan: "small".into(),
            }),
            &mut errors,
        )
        .unwrap();
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(errors["_form"].contains("no capacity in region DE for plan small"));
    }
}
