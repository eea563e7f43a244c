//! Instances: validation, quota, scoping, one-transaction create, lifecycle requests.

use crate::common::*;
use crate::instances_support::*;
use clawy_core::instances::{CreateInstance, InstanceError, InstanceState, ListFilter};
use clawy_core::jobs::{JobKind, JobState};
use clawy_core::{DomainError, ErrorKind};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/it/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn create_validates_names_and_keeps_them_unique_per_owner() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let bob = tc.user("bob@example.com").await;
    for bad in ["", "-web", "web-", "Web", "w_b", "w.b", &"a".repeat(64)] {
        let e = tc
            .core
            .instances()
            .create(&caller_for(&alice), &alice.id, req(bad))
            .await
            .unwrap_err();
        assert!(matches!(e, InstanceError::InvalidName), "{bad}: {e:?}");
        assert_eq!(e.kind(), ErrorKind::Invalid { field: "name" });
    }
    create(&tc, &alice, "web").await;
    let e = tc
        .core
        .instances()
        .create(&caller_for(&alice), &alice.id, req("web"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "name_taken");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // Another owner may use the same name.
    create(&tc, &bob, "web").await;
}

#[tokio::test]
async fn create_places_allocates_and_queues_provision_in_one_go() {
    let tc = TestCore::new().await;
    let h = de_host(&tc, "a", 7).await;
    let alice = tc.user("alice@example.com").await;
    let key = tc
        .core
        .ssh_keys()
        .add(
            &alice.id,
            "laptop",
            &fixture("ed25519.pub"),
            &caller_for(&alice),
        )
        .await
        .unwrap();
    let i = tc
        .core
        .instances()
        .create(
            &caller_for(&alice),
            &alice.id,
            CreateInstance {
                name: "web".into(),
                plan: None,
                region: None,
                ssh_key_ids: vec![key.id.clone()],
                secrets: Default::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(i.state, InstanceState::Pending);
    assert_eq!(i.reported_state(), "pending");
    assert_eq!(
        (i.plan.as_str(), i.region.as_str()),
        ("small", "DE"),
        "operator defaults"
    );
    assert_eq!((i.vcpus, i.memory_mib, i.disk_gib), (1, 2048, 10));
    assert_eq!(i.host_id, h.id);
    assert_eq!(i.private_ip.as_deref(), Some("10.77.7.2"));
    assert_eq!(i.ssh_port, Some(22000));
    assert!(i.mac.as_deref().unwrap().starts_with("52:54:00:"));
    let hist = tc.core.jobs().history(&i.id).await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(
        (hist[0].job.kind, hist[0].job.state),
        (JobKind::Provision, JobState::Queued)
    );
    assert_eq!(hist[0].job.created_by, "user:alice@example.com");
    // The agent spec: VM id = instance id, hostname = name, keys copied, SSH forward.
    let spec = tc.core.instances().vm_spec(&i.id).await.unwrap();
    assert_eq!(spec.hostname, "web");
    assert_eq!(spec.private_ip, "10.77.7.2");
    assert_eq!(spec.ssh_authorized_keys, vec![key.public_key.clone()]);
    assert_eq!(
        (
            spec.port_forwards[0].host_port,
            spec.port_forwards[0].guest_port
        ),
        (22000, 22)
    );
    assert_eq!(spec.base_image, "clawy-test-guest.qcow2");
    // Removing the key from the account later does not change what the VM trusts.
    tc.core
        .ssh_keys()
        .delete(&alice.id, &key.id, &caller_for(&alice))
        .await
        .unwrap();
    assert_eq!(tc.core.instances().ssh_keys(&i.id).await.unwrap().len(), 1);
    // ACCESS-3: the owner reads the creation event on the instance.
    let ev = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 50, None)
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].action, "instance_created");
    assert_eq!(ev[0].actor, "user:alice@example.com");
    assert_eq!(ev[0].user_id.as_deref(), Some(alice.id.as_str()));
    assert!(ev[0].detail.contains("10.77.7.2"));
}

#[tokio::test]
async fn create_refuses_other_users_keys_unknown_plans_and_disallowed_regions() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let bob = tc.user("bob@example.com").await;
    let bobs = tc
        .core
        .ssh_keys()
        .add(&bob.id, "b", &fixture("ed25519.pub"), &caller_for(&bob))
        .await
        .unwrap();
    let c = caller_for(&alice);
    let e = tc
        .core
        .instances()
        .create(
            &c,
            &alice.id,
            CreateInstance {
                ssh_key_ids: vec![bobs.id.clone()],
                ..req("web")
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, InstanceError::SshKeyNotFound(id) if *id == bobs.id),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string().contains(&bobs.id),
        "the message names the key"
    );
    let e = tc
        .core
        .instances()
        .create(
            &c,
            &alice.id,
            CreateInstance {
                plan: Some("huge".into()),
                ..req("web")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, InstanceError::PlanNotFound(ref p) if p == "huge"));
    // DATA-2: outside allowed_countries.
    let e = tc
        .core
        .instances()
        .create(
            &c,
            &alice.id,
            CreateInstance {
                region: Some("us".into()),
                ..req("web")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "region_not_allowed");
    assert_eq!(e.kind(), ErrorKind::Invalid { field: "region" });
    // Nothing was written by the refused requests.
    assert_eq!(tc.count("SELECT COUNT(*) FROM instances").await, 0);
    assert_eq!(tc.count("SELECT COUNT(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn quota_counts_live_instances_only() {
    let tc = quota(2).await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let a = create(&tc, &alice, "a").await;
    create(&tc, &alice, "b").await;
    let e = tc
        .core
        .instances()
        .create(&caller_for(&alice), &alice.id, req("c"))
        .await
        .unwrap_err();
    assert!(matches!(e, InstanceError::QuotaExceeded { quota: 2 }));
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    // A deleted instance frees its quota slot (and its name) once the delete completed.
    tc.core
        .instances()
        .request(
            &caller_for(&alice),
            &alice.id,
            &a.id,
            clawy_core::lifecycle::LifecycleAction::Delete,
        )
        .await
        .unwrap();
    assert!(
        tc.core
            .instances()
            .create(&caller_for(&alice), &alice.id, req("c"))
            .await
            .is_err(),
        "still deleting"
    );
    drain_jobs(&tc).await;
    create(&tc, &alice, "a").await;
    assert_eq!(
        tc.core
            .instances()
            .count_for_owner(&alice.id)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn another_users_instance_is_not_found_for_every_call() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let bob = tc.user("bob@example.com").await;
    let i = create(&tc, &alice, "web").await;
    let inst = tc.core.instances();
    let cb = caller_for(&bob);
    assert!(matches!(
        inst.get(&bob.id, &i.id).await.unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(matches!(
        inst.request(
            &cb,
            &bob.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Start
        )
        .await
        .unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(matches!(
        inst.request(
            &cb,
            &bob.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Stop
        )
        .await
        .unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(matches!(
        inst.request(
            &cb,
            &bob.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Reboot
        )
        .await
        .unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(matches!(
        inst.request(
            &cb,
            &bob.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Delete
        )
        .await
        .unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(matches!(
        inst.request(
            &cb,
            &bob.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Retry
        )
        .await
        .unwrap_err(),
        InstanceError::NotFound
    ));
    assert!(
        inst.list_for_owner(&bob.id, 50, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Bob's attempts changed nothing.
    assert_eq!(tc.count("SELECT COUNT(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn access_3_lifecycle_requests_queue_jobs_idempotently_and_are_events() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let c = caller_for(&alice);
    let inst = tc.core.instances();
    let i = create(&tc, &alice, "web").await;
    // Start while provisioning is queued: nothing to do.
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Start
        )
        .await
        .unwrap()
        .job_id
        .is_none()
    );
    // Reboot needs a running instance.
    let e = inst
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Reboot,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_state");
    drain_jobs(&tc).await;
    assert_eq!(
        inst.get(&alice.id, &i.id).await.unwrap().state,
        InstanceState::Running
    );
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Start
        )
        .await
        .unwrap()
        .job_id
        .is_none(),
        "start on running is a no-op"
    );
    let stop = inst
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Stop,
        )
        .await
        .unwrap();
    assert!(stop.job_id.is_some());
    assert_eq!(stop.instance.desired_power.as_str(), "stopped");
    assert_eq!(
        stop.instance.state,
        InstanceState::Running,
        "only the runner changes state"
    );
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Stop
        )
        .await
        .unwrap()
        .job_id
        .is_none(),
        "second stop joins the first"
    );
    drain_jobs(&tc).await;
    assert_eq!(
        inst.get(&alice.id, &i.id).await.unwrap().state,
        InstanceState::Stopped
    );
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Reboot
        )
        .await
        .is_err()
    );
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Start
        )
        .await
        .unwrap()
        .job_id
        .is_some()
    );
    drain_jobs(&tc).await;
    let r = inst
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Reboot,
        )
        .await
        .unwrap();
    assert!(r.job_id.is_some());
    // Delete cancels queued work and is idempotent; other actions are refused after.
    let d = inst
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Delete,
        )
        .await
        .unwrap();
    assert!(d.job_id.is_some());
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Delete
        )
        .await
        .unwrap()
        .job_id
        .is_none()
    );
    let e = inst
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Start,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("being deleted"), "{e}");
    let hist = tc.core.jobs().history(&i.id).await.unwrap();
    let reboot = hist.iter().find(|h| h.job.kind == JobKind::Reboot).unwrap();
    assert_eq!(reboot.job.state, JobState::Cancelled);
    drain_jobs(&tc).await;
    let gone = inst.get(&alice.id, &i.id).await.unwrap();
    assert_eq!(gone.state, InstanceState::Deleted);
    assert!(gone.deleted_at.is_some());
    assert!(
        inst.request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Delete
        )
        .await
        .unwrap()
        .job_id
        .is_none()
    );
    assert!(
        inst.list_for_owner(&alice.id, 50, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // ACCESS-3: every request and every state change is an instance event.
    let actions: Vec<String> = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 100, None)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.action)
        .collect();
    for want in [
        "instance_created",
        "instance_start_requested",
        "instance_stop_requested",
        "instance_reboot_requested",
        "instance_delete_requested",
        "instance_state_changed",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn owner_list_is_paginated_and_operator_list_filters() {
    let tc = quota(20).await;
    let h1 = de_host(&tc, "a", 1).await;
    let h2 = de_host(&tc, "b", 2).await;
    let alice = tc.user("alice@example.com").await;
    let bob = tc.user("bob@example.com").await;
    for n in 0..7 {
        create(&tc, &alice, &format!("a{n}")).await;
        tc.clock.advance(std::time::Duration::from_millis(1));
    }
    create(&tc, &bob, "b0").await;
    let inst = tc.core.instances();
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let p = inst
            .list_for_owner(&alice.id, 3, after.as_deref())
            .await
            .unwrap();
        assert!(p.items.len() <= 3);
        names.extend(p.items.iter().map(|i| i.name.clone()));
        match p.next_after {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|n| format!("a{n}")).collect::<Vec<_>>());
    let all = inst
        .list_all(&ListFilter::default(), 100, None)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 8);
    let on1 = inst
        .list_all(
            &ListFilter {
                host_id: Some(h1.id.clone()),
                ..Default::default()
            },
            100,
            None,
        )
        .await
        .unwrap();
    let on2 = inst
        .list_all(
            &ListFilter {
                host_id: Some(h2.id.clone()),
                ..Default::default()
            },
            100,
            None,
        )
        .await
        .unwrap();
    assert_eq!(on1.items.len() + on2.items.len(), 8);
    assert!(on1.items.iter().all(|i| i.host_id == h1.id));
    let bobs = inst
        .list_all(
            &ListFilter {
                owner_id: Some(bob.id.clone()),
                ..Default::default()
            },
            100,
            None,
        )
        .await
        .unwrap();
    assert_eq!(bobs.items.len(), 1);
    let running = inst
        .list_all(
            &ListFilter {
                state: Some(InstanceState::Running),
                ..Default::default()
            },
            100,
            None,
        )
        .await
        .unwrap();
    assert!(running.items.is_empty());
    assert_eq!(
        inst.list_by_host(&h1.id).await.unwrap().len(),
        on1.items.len()
    );
}
