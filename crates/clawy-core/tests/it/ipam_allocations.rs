//! IPAM in the database: lowest free address/port, exhaustion, release only after the
//! delete job confirmed the VM is gone, never reused while in use.

use crate::common::*;
use crate::instances_support::*;
use clawy_core::ipam;

#[tokio::test]
async fn allocations_are_lowest_free_and_released_only_when_delete_completes() {
    let tc = quota(10).await;
    let h = de_host(&tc, "a", 5).await;
    let alice = tc.user("alice@example.com").await;
    let c = caller_for(&alice);
    let a = create(&tc, &alice, "a").await;
    let b = create(&tc, &alice, "b").await;
    assert_eq!(
        (a.private_ip.as_deref(), a.ssh_port),
        (Some("10.77.5.2"), Some(22000))
    );
    assert_eq!(
        (b.private_ip.as_deref(), b.ssh_port),
        (Some("10.77.5.3"), Some(22001))
    );
    drain_jobs(&tc).await;
    tc.core
        .instances()
        .request(
            &c,
            &alice.id,
            &a.id,
            clawy_core::lifecycle::LifecycleAction::Delete,
        )
        .await
        .unwrap();
    // The delete job is running (VM maybe still there): a's address stays held.
    let job = claim(&tc, "w1").await;
    tc.core
        .jobs()
        .progress(&job, "w1", clawy_core::instances::InstanceState::Deleting)
        .await
        .unwrap();
    let x = create(&tc, &alice, "x").await;
    assert_eq!(
        (x.private_ip.as_deref(), x.ssh_port),
        (Some("10.77.5.4"), Some(22002)),
        "a's allocation is not reused while in use"
    );
    let held = ipam::held_on_host(tc.core.store().pool(), &h.id)
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    // A failed attempt does not release anything either.
    tc.core
        .jobs()
        .fail_with_jitter(&job, "w1", "agent timeout", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        ipam::held_on_host(tc.core.store().pool(), &h.id)
            .await
            .unwrap()
            .len(),
        3
    );
    tc.clock.advance(std::time::Duration::from_secs(10));
    let job = claim(&tc, "w1").await;
    tc.core.jobs().complete(&job, "w1").await.unwrap();
    let a = tc.core.instances().get(&alice.id, &a.id).await.unwrap();
    assert_eq!((a.private_ip, a.ssh_port, a.mac), (None, None, None));
    assert_eq!(
        ipam::held_on_host(tc.core.store().pool(), &h.id)
            .await
            .unwrap()
            .len(),
        2
    );
    // Now the lowest free address and port are a's old ones.
    let y = create(&tc, &alice, "y").await;
    assert_eq!(
        (y.private_ip.as_deref(), y.ssh_port),
        (Some("10.77.5.2"), Some(22000))
    );
}

#[tokio::test]
async fn exhausted_port_range_means_no_capacity_on_that_host() {
    let tc = quota(10).await;
    // Plenty of CPU/RAM but only two SSH ports.
    add_host(
        &tc,
        "a",
        "DE",
        (16, 65536, 500),
        "10.6.1.0/24",
        [23000, 23001],
    )
    .await;
    let alice = tc.user("alice@example.com").await;
    create(&tc, &alice, "a").await;
    create(&tc, &alice, "b").await;
    let e = tc
        .core
        .instances()
        .create(&caller_for(&alice), &alice.id, req("c"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "no capacity in region DE for plan small");
    // A second host with free ports takes it.
    add_host(&tc, "b", "DE", (2, 2048, 20), "10.6.2.0/24", [23000, 23001]).await;
    let c = create(&tc, &alice, "c").await;
    assert_eq!(c.host_name, "b");
    assert_eq!(c.ssh_port, Some(23000), "port ranges are per host");
}
