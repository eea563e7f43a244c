//! Shared helpers for the instance, host and job storage tests: hosts with a reported capacity and
//! network, plans, and quick instance creation.

use crate::common::*;
use clawy_core::hosts::{Host, RegisterHost};
use clawy_core::instances::{CreateInstance, Instance};
use clawy_core::jobs::Job;
use clawy_core::{Actor, SecretString, User};
use clawy_proto::agent::{HostInfo, HostNetwork, Resources};
use std::time::Duration;

pub const FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";
pub const LEASE: Duration = Duration::from_secs(60);

pub fn operator() -> Actor {
    Actor::system()
}

/// What an agent with this capacity and network would report.
pub fn host_info(cap: (u64, u64, u64), subnet: &str, ports: [u16; 2]) -> HostInfo {
    let [a, b, c, _] = subnet
        .split('/')
        .next()
        .unwrap()
        .parse::<std::net::Ipv4Addr>()
        .unwrap()
        .octets();
    HostInfo {
        hostname: "agent".into(),
        location: "DE-test".into(),
        driver: "qemu".into(),
        accelerator: "tcg".into(),
        cpu_cores: cap.0,
        memory_mib: cap.1,
        disk_gib: cap.2,
        capacity: Resources {
            vcpus: cap.0,
            memory_mib: cap.1,
            disk_gib: cap.2,
        },
        allocated: Resources {
            vcpus: 0,
            memory_mib: 0,
            disk_gib: 0,
        },
        vm_count: 0,
        agent_version: "0.1.0".into(),
        network: Some(HostNetwork {
            subnet: subnet.to_string(),
            gateway: format!("{a}.{b}.{c}.1"),
            ssh_port_range: ports,
        }),
        edge: None,
        heartbeat_refusals: Default::default(),
    }
}

/// Registers a host and feeds it the agent's HostInfo (as the host refresher does).
pub async fn add_host(
    tc: &TestCore,
    name: &str,
    region: &str,
    cap: (u64, u64, u64),
    subnet: &str,
    ports: [u16; 2],
) -> Host {
    let h = tc
        .core
        .hosts()
        .register(
            &operator(),
            RegisterHost {
                name: name.into(),
                url: format!("https://127.0.0.1:{}", 8443),
                fingerprint: FP.into(),
                token: SecretString::from(format!("agent-token-{name}-0123456789abcdef")),
                region: region.into(),
                site: "t1".into(),
                enabled: true,
            },
        )
        .await
        .unwrap();
    tc.core
        .hosts()
        .update_info(&h.id, &host_info(cap, subnet, ports))
        .await
        .unwrap()
}

/// A standard DE host: 8 vCPU, 16 GiB, 100 GiB, 10.77.<n>.0/24, ports 22000-22999.
pub async fn de_host(tc: &TestCore, name: &str, n: u8) -> Host {
    add_host(
        tc,
        name,
        "DE",
        (8, 16384, 100),
        &format!("10.77.{n}.0/24"),
        [22000, 22999],
    )
    .await
}

pub fn req(name: &str) -> CreateInstance {
    CreateInstance {
        name: name.into(),
        ..Default::default()
    }
}

pub async fn create(tc: &TestCore, user: &User, name: &str) -> Instance {
    tc.core
        .instances()
        .create(&caller_for(user), &user.id, req(name))
        .await
        .unwrap()
}

/// Claims the next job as `worker`, asserting there is one.
pub async fn claim(tc: &TestCore, worker: &str) -> Job {
    tc.core
        .jobs()
        .claim(worker, LEASE)
        .await
        .unwrap()
        .expect("a claimable job")
}

/// Runs every claimable job to success (what a healthy runner would do).
pub async fn drain_jobs(tc: &TestCore) {
    while let Some(job) = tc.core.jobs().claim("drain", LEASE).await.unwrap() {
        tc.core.jobs().complete(&job, "drain").await.unwrap();
    }
}

pub async fn quota(n: u32) -> TestCore {
    TestCore::with(|c| c.instance_quota = n).await
}
