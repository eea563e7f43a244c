//! Instances as both surfaces show them: the wire form (`clawy_proto::api::Instance`,
//! which the dashboard also renders, so a state, an SSH command or an error reads the
//! same in the browser, the CLI and JSON), lifecycle requests, metric ranges and
//! events.

use std::collections::HashMap;

use chrono::Duration;
use clawy_core::audit::AuditEvent;
use clawy_core::error::{DomainError, ErrorKind};
use clawy_core::hosts::HostError;
use clawy_core::instances::{Instance, InstanceError};
use clawy_core::lifecycle::LifecycleAction;
use clawy_core::metrics::Series;
use clawy_core::{Actor, Core};
use clawy_proto::api::{self as wire, InstanceMetrics, MetricPoint};

/// The user the guest's SSH server accepts the instance's keys for: the owner's user
/// cloud-init creates (root cannot log in, AUTH-4).
pub const SSH_USER: &str = clawy_proto::agent::GUEST_USER;

/// Metric ranges the API and the page offer.
pub const RANGES: [&str; 3] = ["1h", "24h", "30d"];

/// A metric range nobody offers.
#[derive(Debug, thiserror::Error)]
#[error("Unknown range `{0}`: use 1h, 24h or 30d.")]
pub struct RangeError(pub String);

impl DomainError for RangeError {
    fn code(&self) -> &'static str {
        "invalid_range"
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid { field: "range" }
    }
}

/// `1h` → one hour, …; anything else is refused by name.
pub fn parse_range(range: Option<&str>) -> Result<(&'static str, Duration), RangeError> {
    match range.unwrap_or("1h") {
        "1h" => Ok(("1h", Duration::hours(1))),
        "24h" => Ok(("24h", Duration::hours(24))),
        "30d" => Ok(("30d", Duration::days(30))),
        other => Err(RangeError(other.to_string())),
    }
}

/// Where people SSH to: the control plane's public host name (from `base_url`).
pub fn public_host(core: &Core) -> String {
    core.config()
        .base_url
        .host_str()
        .unwrap_or("localhost")
        .to_string()
}

/// The health block: `ok`/`down` from the host-side gateway probe, `unknown` before
/// the first probe; then each service of the guest's heartbeat with its age, all
/// `unknown` when the heartbeat is stale at `now` (ACCESS-1).
fn health_to_wire(inst: &Instance, now: chrono::DateTime<chrono::Utc>) -> wire::InstanceHealth {
    let unreachable = inst.reported_state() == "unknown";
    let gateway = match inst.health.as_ref().and_then(|h| h.tcp_ok) {
        _ if inst.reported_state() == "unknown" => "unknown",
        Some(true) => "ok",
        Some(false) => "down",
        None => "unknown",
    };
    wire::InstanceHealth {
        gateway: gateway.to_string(),
        http_status: inst.health.as_ref().and_then(|h| h.http_status),
        checked_at: inst.health.as_ref().map(|h| h.checked_at),
        services: std::iter::once(wire::ServiceHealth {
            name: "gateway".to_string(),
            state: gateway.to_string(),
            age_secs: None,
        })
        .chain(
            inst.health
                .as_ref()
                .map(|h| h.services(now))
                .unwrap_or_else(clawy_core::instances::InstanceHealth::no_heartbeat_services)
                .into_iter()
                .map(|s| wire::ServiceHealth {
                    name: s.name.to_string(),
                    state: if unreachable { "unknown" } else { s.state }.to_string(),
                    age_secs: s.age_secs,
                }),
        )
        .collect(),
    }
}

/// The instance as both surfaces show it; `unknown` when its host is unreachable.
pub fn to_wire(
    inst: &Instance,
    public_host: &str,
    host_location: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> wire::Instance {
    let state =
        wire::InstanceState::parse(inst.reported_state()).unwrap_or(wire::InstanceState::Unknown);
    let live = !matches!(
        state,
        wire::InstanceState::Deleted | wire::InstanceState::Deleting
    );
    let ssh_port = inst.ssh_port.filter(|_| live);
    wire::Instance {
        id: inst.id.clone(),
        name: inst.name.clone(),
        state,
        desired_power: inst.desired_power.as_str().to_string(),
        private_ip: inst.private_ip.clone(),
        ssh_port,
        ssh_command: ssh_port.map(|p| format!("ssh -p {p} {SSH_USER}@{public_host}")),
        gateway_token: None,
        plan: inst.plan.clone(),
        region: inst.region.clone(),
        host_location,
        health: health_to_wire(inst, now),
        last_contact_at: inst.host_last_contact_at,
        uptime_secs: inst
            .health
            .as_ref()
            .and_then(|h| h.uptime_secs)
            .filter(|_| state == wire::InstanceState::Running),
        error_reason: inst.error_reason.clone(),
        created_at: inst.created_at,
        updated_at: inst.updated_at,
        https_url: inst
            .hostname
            .as_ref()
            .filter(|_| state != wire::InstanceState::Deleted)
            .map(|h| format!("https://{h}/")),
        dns_records: dns_records(inst),
        hostname: inst.hostname.clone(),
    }
}

/// ACCESS-1: the records that resolve the hostname. With RFC 2136 they are the ones
/// the control plane published (or is publishing); without it the operator's
/// wildcard record does the job and nothing is listed.
fn dns_records(inst: &Instance) -> Vec<wire::DnsRecord> {
    let (Some(host), Some(state)) = (&inst.hostname, &inst.dns.state) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (ty, value) in [("A", &inst.dns.a), ("AAAA", &inst.dns.aaaa)] {
        if let Some(v) = value {
            out.push(wire::DnsRecord {
                name: host.clone(),
                record_type: ty.to_string(),
                value: v.clone(),
                status: state.clone(),
            });
        }
    }
    out
}

/// Several instances in wire form, with one look-up of the host labels.
pub async fn many_to_wire(
    core: &Core,
    items: &[Instance],
) -> Result<Vec<wire::Instance>, HostError> {
    let locations: HashMap<String, String> = if items.is_empty() {
        HashMap::new()
    } else {
        core.hosts()
            .list()
            .await?
            .into_iter()
            .map(|h| (h.id.clone(), h.location_label()))
            .collect()
    };
    let host = public_host(core);
    let now = core.now();
    Ok(items
        .iter()
        .map(|i| to_wire(i, &host, locations.get(&i.host_id).cloned(), now))
        .collect())
}

/// One instance in wire form (its host's label looked up; a vanished host shows none).
pub async fn one_to_wire(core: &Core, inst: &Instance) -> wire::Instance {
    let location = core
        .hosts()
        .get(&inst.host_id)
        .await
        .ok()
        .map(|h| h.location_label());
    to_wire(inst, &public_host(core), location, core.now())
}

/// Runs a lifecycle request on the owner's instance (only inserts a job: the job
/// runner changes the state); `actor` is who the instance event names (ACCESS-3).
pub async fn request(
    core: &Core,
    actor: &Actor,
    owner_id: &str,
    id: &str,
    action: LifecycleAction,
) -> Result<wire::Instance, InstanceError> {
    let accepted = core
        .instances()
        .request(actor, owner_id, id, action)
        .await?;
    Ok(one_to_wire(core, &accepted.instance).await)
}

/// The metric series in wire form.
pub fn series_to_wire(series: Series, range: &str) -> InstanceMetrics {
    InstanceMetrics {
        instance_id: series.instance_id,
        range: range.to_string(),
        points: series
            .points
            .into_iter()
            .map(|p| MetricPoint {
                at: p.at,
                cpu_percent: p.cpu_percent,
                memory_used_bytes: p.memory_used_bytes,
                disk_used_bytes: p.disk_used_bytes,
                net_rx_bytes: p.net_rx_bytes,
                net_tx_bytes: p.net_tx_bytes,
                uptime_secs: p.uptime_secs,
            })
            .collect(),
    }
}

/// An audit event in wire form (the account log and instance events alike).
pub fn event_to_wire(e: AuditEvent) -> wire::AuditEvent {
    wire::AuditEvent {
        id: e.id,
        at: e.at,
        kind: e.action,
        actor: e.actor,
        client_addr: e.client_addr,
        detail: (!e.detail.is_empty()).then_some(e.detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_named_or_refused() {
        assert_eq!(parse_range(None).ok().map(|r| r.0), Some("1h"));
        assert_eq!(
            parse_range(Some("30d")).ok().map(|r| r.1),
            Some(Duration::days(30))
        );
        let err = parse_range(Some("7d"))
            .err()
            .map(|e| crate::error::ApiError::from(e).status());
        assert_eq!(err, Some(axum::http::StatusCode::UNPROCESSABLE_ENTITY));
    }
}
