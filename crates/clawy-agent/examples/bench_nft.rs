//! nftables scale benchmark: through the real `network` module, in a
//! throwaway network namespace, time adding the 10th and the 1000th port forward
//! and compare the ruleset's rule count at both points. Run by scripts/bench-nft.sh.
//!
//! Each point is measured `REPS` times (add the Nth forward, timed; take it away,
//! untimed) and the median is reported, so one scheduler hiccup does not decide it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clawy_agent::network::{Network, NetworkConfig, PortRange};
use clawy_proto::agent::{PortForward, Protocol};
use clawy_testkit::netns::Netns;

const FORWARDS_PER_VM: usize = 4;
const FIRST_PORT: u16 = 20000;
const REPS: usize = 21;

fn vm_of(n: usize) -> (String, Ipv4Addr) {
    let k = n / FORWARDS_PER_VM;
    (format!("bench-{k}"), Ipv4Addr::new(10, 99, 0, 2 + k as u8))
}

/// The forwards VM `k` has when the first `count` forwards exist.
fn forwards_of(vm_index: usize, count: usize) -> Vec<PortForward> {
    let first = vm_index * FORWARDS_PER_VM;
    (first..count.min(first + FORWARDS_PER_VM))
        .map(|n| PortForward {
            protocol: Protocol::Tcp,
            host_port: FIRST_PORT + n as u16,
            guest_port: 22,
        })
        .collect()
}

/// Brings the forward count from `have` to `want` (one forward per call).
async fn grow(net: &Network, have: usize, want: usize) -> anyhow::Result<()> {
    for n in have..want {
        let (id, ip) = vm_of(n);
        net.set_port_forwards(&id, ip, &forwards_of(n / FORWARDS_PER_VM, n + 1))
            .await?;
    }
    Ok(())
}

/// Median time of adding forward number `nth` (1-based) on top of `nth - 1`.
async fn time_nth(net: &Network, nth: usize) -> anyhow::Result<Duration> {
    let n = nth - 1;
    let (id, ip) = vm_of(n);
    let vm_index = n / FORWARDS_PER_VM;
    let mut samples = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let with = forwards_of(vm_index, n + 1);
        let start = Instant::now();
        net.set_port_forwards(&id, ip, &with).await?;
        samples.push(start.elapsed());
        net.set_port_forwards(&id, ip, &forwards_of(vm_index, n))
            .await?;
    }
    net.set_port_forwards(&id, ip, &forwards_of(vm_index, n + 1))
        .await?;
    samples.sort();
    Ok(samples[REPS / 2])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ns = Netns::new("bench")?;
    let mut cfg = NetworkConfig::new("10.99.0.0/24".parse()?, "up0");
    cfg.ssh_port_range = PortRange {
        start: FIRST_PORT,
        end: FIRST_PORT + 1999,
    };
    let net = Network::in_netns(cfg, ns.name())?;
    net.ensure_host().await.context("ensure_host")?;

    grow(&net, 0, 9).await?;
    let t10 = time_nth(&net, 10).await?;
    let rules10 = net.rule_count().await?;
    let count10 = net.forwards().await?.len();

    grow(&net, 10, 999).await?;
    let t1000 = time_nth(&net, 1000).await?;
    let rules1000 = net.rule_count().await?;
    let count1000 = net.forwards().await?.len();

    net.teardown().await?;
    let ratio = t1000.as_secs_f64() / t10.as_secs_f64();
    println!("forwards present: {count10} / {count1000}");
    println!(
        "add 10th forward:   {:.2} ms (median of {REPS}), rules {rules10}",
        t10.as_secs_f64() * 1e3
    );
    println!(
        "add 1000th forward: {:.2} ms (median of {REPS}), rules {rules1000}",
        t1000.as_secs_f64() * 1e3
    );
    println!("ratio 1000th/10th: {ratio:.2} (target <= 2.00)");
    println!(
        "rule count equal: {}",
        if rules10 == rules1000 { "yes" } else { "NO" }
    );
    anyhow::ensure!(count10 == 10 && count1000 == 1000, "forward counts off");
    anyhow::ensure!(rules10 == rules1000, "rule count grew with forwards");
    anyhow::ensure!(ratio <= 2.0, "1000th forward costs more than 2x the 10th");
    Ok(())
}
