//! Metrics and health (ACCESS-1 metadata only): raw 24 h, hourly rollups 30 days,
//! bounded rows per instance.

use crate::common::*;
use crate::instances_support::*;
use chrono::{DateTime, Utc};
use clawy_core::Clock;
use clawy_core::metrics::{HealthUpdate, MetricSample, Resolution};
use std::time::Duration;

fn sample(id: &str, at: DateTime<Utc>, cpu: f64, mem: u64) -> MetricSample {
    MetricSample {
        instance_id: id.into(),
        at,
        cpu_percent: Some(cpu),
        memory_used_bytes: Some(mem),
        disk_used_bytes: Some(1 << 30),
        net_rx_bytes: Some(1000),
        net_tx_bytes: Some(2000),
        uptime_secs: Some(60),
    }
}

#[tokio::test]
async fn access_1_retention_keeps_rows_per_instance_bounded() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    let m = tc.core.metrics();
    // 40 hours of a 60 s poll interval; one purge per simulated hour.
    for _hour in 0..40 {
        let batch: Vec<_> = (0..60)
            .map(|k| {
                tc.clock.advance(Duration::from_secs(60));
                sample(
                    &i.id,
                    tc.clock.now(),
                    f64::from(k % 10) * 10.0,
                    100 + k as u64,
                )
            })
            .collect();
        m.insert_samples(&batch).await.unwrap();
        m.downsample_and_purge(tc.clock.now()).await.unwrap();
        let (raw, roll) = m.row_counts(&i.id).await.unwrap();
        assert!(raw <= 24 * 60 + 1, "raw samples bounded by 24 h: {raw}");
        assert!(roll <= 30 * 24 + 1, "rollups bounded: {roll}");
    }
    let (raw, roll) = m.row_counts(&i.id).await.unwrap();
    assert!(raw >= 23 * 60, "{raw}");
    assert!((39..=41).contains(&roll), "one rollup per hour: {roll}");
    // Inserting the same sample twice is harmless.
    m.insert_samples(&[sample(&i.id, tc.clock.now(), 1.0, 1)])
        .await
        .unwrap();
    // Raw series for the last hour; hourly beyond 24 h.
    let now = tc.clock.now();
    let s = m
        .series(&i.id, now - chrono::Duration::hours(1), now)
        .await
        .unwrap();
    assert_eq!(s.resolution, Resolution::Raw);
    assert!((60..=61).contains(&s.points.len()), "{}", s.points.len());
    let s = m
        .series(&i.id, now - chrono::Duration::days(3), now)
        .await
        .unwrap();
    assert_eq!(s.resolution, Resolution::Hourly);
    assert!(s.points.len() >= 39);
    let p = &s.points[5];
    assert_eq!(p.cpu_percent_max, Some(90.0));
    assert!(
        (p.cpu_percent.unwrap() - 45.0).abs() < 0.01,
        "avg {:?}",
        p.cpu_percent
    );
    assert!(p.memory_used_bytes_max.unwrap() >= 150);
    assert!(m.series(&i.id, now, now).await.is_err(), "empty range");
    // 31 days later with no new samples, everything has aged out.
    tc.clock.advance(Duration::from_secs(31 * 24 * 3600));
    m.downsample_and_purge(tc.clock.now()).await.unwrap();
    assert_eq!(m.row_counts(&i.id).await.unwrap(), (0, 0));
}

#[tokio::test]
async fn latest_health_is_kept_per_instance_and_shown_on_it() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    assert!(
        tc.core
            .instances()
            .get(&alice.id, &i.id)
            .await
            .unwrap()
            .health
            .is_none()
    );
    let m = tc.core.metrics();
    let mut h = HealthUpdate {
        instance_id: i.id.clone(),
        checked_at: tc.clock.now(),
        vm_state: Some("running".into()),
        tcp_ok: Some(false),
        http_status: None,
        latency_ms: Some(3),
        uptime_secs: Some(5),
        heartbeat: None,
    };
    m.record_health(&h).await.unwrap();
    tc.clock.advance(Duration::from_secs(30));
    h.checked_at = tc.clock.now();
    h.tcp_ok = Some(true);
    h.http_status = Some(200);
    m.record_health(&h).await.unwrap();
    let got = m.latest_health(&i.id).await.unwrap().unwrap();
    assert!(got.gateway_ok());
    assert_eq!(got.http_status, Some(200));
    assert_eq!(got.checked_at, tc.clock.now());
    let inst = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(inst.health, Some(got));
    assert_eq!(tc.count("SELECT COUNT(*) FROM instance_health").await, 1);
    // Batched: one row per instance, latest wins.
    let j = create(&tc, &alice, "db").await;
    tc.clock.advance(Duration::from_secs(30));
    let batch = vec![
        HealthUpdate {
            checked_at: tc.clock.now(),
            tcp_ok: Some(false),
            ..h.clone()
        },
        HealthUpdate {
            instance_id: j.id.clone(),
            checked_at: tc.clock.now(),
            ..h.clone()
        },
    ];
    m.record_health_many(&batch).await.unwrap();
    assert_eq!(tc.count("SELECT COUNT(*) FROM instance_health").await, 2);
    assert!(!m.latest_health(&i.id).await.unwrap().unwrap().gateway_ok());
    assert!(m.latest_health(&j.id).await.unwrap().unwrap().gateway_ok());
}
