//! Placement against the database (ISO-2, DATA-2), plans and regions.

use crate::common::*;
use crate::instances_support::*;
use clawy_core::instances::CreateInstance;
use clawy_core::plans::{PlanError, PlanSpec};
use clawy_core::{DomainError, ErrorKind};
use std::collections::{HashMap, HashSet};

async fn assert_no_overcommit(tc: &TestCore) {
    for l in tc.core.hosts().list_with_load().await.unwrap() {
        assert!(
            l.allocated.vcpus <= l.host.capacity.vcpus,
            "{}: vcpus {:?}",
            l.host.name,
            l.allocated
        );
        assert!(
            l.allocated.memory_mib <= l.host.capacity.memory_mib,
            "{}: memory",
            l.host.name
        );
        assert!(
            l.allocated.disk_gib <= l.host.capacity.disk_gib,
            "{}: disk",
            l.host.name
        );
    }
}

#[tokio::test]
async fn iso_2_fill_until_full_never_overcommits_and_says_no_capacity() {
    let tc = quota(1000).await;
    add_host(&tc, "a", "DE", (6, 6000, 60), "10.1.1.0/24", [22000, 22999]).await;
    add_host(&tc, "b", "DE", (3, 9000, 25), "10.1.2.0/24", [22000, 22999]).await;
    let alice = tc.user("alice@example.com").await;
    let plans = ["stand-in", "medium", "large", "stand-in", "medium"];
    let mut created = 0;
    let mut refusals = 0;
    for n in 0..60 {
        let plan = plans[n % plans.len()];
        let r = tc
            .core
            .instances()
            .create(
                &caller_for(&alice),
                &alice.id,
                CreateInstance {
                    plan: Some(plan.into()),
                    ..req(&format!("i{n}"))
                },
            )
            .await;
        match r {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.code(), "no_capacity");
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert_eq!(
                    e.to_string(),
                    format!("no capacity in region DE for plan {plan}")
                );
                refusals += 1;
            }
        }
        assert_no_overcommit(&tc).await;
    }
    assert!(
        created >= 5 && refusals > 0,
        "created {created}, refused {refusals}"
    );
    // Full for small now: 9 vCPUs in total, each instance ≥ 1.
    let e = tc
        .core
        .instances()
        .create(&caller_for(&alice), &alice.id, req("last"))
        .await;
    let e = e.expect_err("the hosts are full: even the smallest plan is refused");
    assert_eq!(e.code(), "no_capacity");
    assert_eq!(e.to_string(), "no capacity in region DE for plan small");
    assert_no_overcommit(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iso_2_concurrent_creates_never_overcommit_or_share_addresses() {
    let tc = quota(1000).await;
    // Room for exactly 5 small instances (5 vCPUs) on each of two hosts.
    add_host(
        &tc,
        "a",
        "DE",
        (5, 100_000, 1000),
        "10.2.1.0/24",
        [22000, 22999],
    )
    .await;
    add_host(
        &tc,
        "b",
        "DE",
        (5, 100_000, 1000),
        "10.2.2.0/24",
        [22000, 22999],
    )
    .await;
    let mut users = Vec::new();
    for n in 0..4 {
        users.push(tc.user(&format!("u{n}@example.com")).await);
    }
    let mut tasks = Vec::new();
    for n in 0..24 {
        let core = tc.core.clone();
        let u = users[n % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            core.instances()
                .create(&caller_for(&u), &u.id, req(&format!("c{n}")))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), "no_capacity", "{e:?}"),
        }
    }
    assert_eq!(ok, 10, "exactly the capacity was handed out");
    assert_no_overcommit(&tc).await;
    let all = tc
        .core
        .instances()
        .list_all(&Default::default(), 500, None)
        .await
        .unwrap()
        .items;
    let mut per_host: HashMap<String, (HashSet<String>, HashSet<u16>)> = HashMap::new();
    let mut macs = HashSet::new();
    for i in &all {
        let e = per_host.entry(i.host_id.clone()).or_default();
        assert!(e.0.insert(i.private_ip.clone().unwrap()), "duplicate IP");
        assert!(e.1.insert(i.ssh_port.unwrap()), "duplicate port");
        assert!(macs.insert(i.mac.clone().unwrap()), "duplicate MAC");
    }
    assert_eq!(
        tc.count("SELECT COUNT(*) FROM jobs WHERE kind = 'provision'")
            .await,
        10
    );
}

#[tokio::test]
async fn data_2_only_allowed_countries_and_the_requested_region() {
    let tc = TestCore::with(|c| c.allowed_countries = vec!["DE".into(), "FR".into()]).await;
    add_host(
        &tc,
        "us",
        "US",
        (64, 65536, 1000),
        "10.3.1.0/24",
        [22000, 22999],
    )
    .await;
    add_host(
        &tc,
        "fr",
        "FR",
        (4, 4096, 40),
        "10.3.2.0/24",
        [22000, 22999],
    )
    .await;
    let alice = tc.user("alice@example.com").await;
    let c = caller_for(&alice);
    // Default region DE has no host: the big US host is never used.
    let e = tc
        .core
        .instances()
        .create(&c, &alice.id, req("a"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "no capacity in region DE for plan small");
    let e = tc
        .core
        .instances()
        .create(
            &c,
            &alice.id,
            CreateInstance {
                region: Some("US".into()),
                ..req("a")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "region_not_allowed");
    let i = tc
        .core
        .instances()
        .create(
            &c,
            &alice.id,
            CreateInstance {
                region: Some("FR".into()),
                ..req("a")
            },
        )
        .await
        .unwrap();
    assert_eq!(i.region, "FR");
    assert_eq!(i.host_name, "fr");
    // Regions: allowed countries with an enabled host only.
    let regions = tc.core.regions().list().await.unwrap();
    assert_eq!(
        regions.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
        vec!["FR"]
    );
    assert!(regions[0].has_capacity);
    assert!(!regions[0].is_default);
}

#[tokio::test]
async fn regions_mark_default_and_capacity() {
    let tc = TestCore::new().await;
    add_host(
        &tc,
        "stand-in",
        "DE",
        (1, 2048, 10),
        "10.4.1.0/24",
        [22000, 22999],
    )
    .await;
    let r = tc.core.regions().list().await.unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].is_default && r[0].has_capacity);
    let alice = tc.user("alice@example.com").await;
    create(&tc, &alice, "only").await;
    let r = tc.core.regions().list().await.unwrap();
    assert!(
        !r[0].has_capacity,
        "the one slot of the default plan is taken"
    );
}

#[tokio::test]
async fn plans_are_seeded_and_operators_edit_them_without_touching_instances() {
    let tc = TestCore::new().await;
    let plans = tc.core.plans();
    let names: Vec<_> = plans
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.vcpus, p.memory_mib, p.disk_gib))
        .collect();
    assert_eq!(
        names,
        vec![
            ("stand-in".into(), 1, 512, 2),
            ("small".into(), 1, 2048, 10),
            ("medium".into(), 2, 2048, 10),
            ("large".into(), 4, 8192, 40)
        ]
    );
    let op = operator();
    let p = plans
        .create(
            &op,
            PlanSpec {
                name: "xl".into(),
                vcpus: 8,
                memory_mib: 16384,
                disk_gib: 80,
            },
        )
        .await
        .unwrap();
    assert_eq!(plans.get("xl").await.unwrap().id, p.id);
    assert!(matches!(
        plans
            .create(
                &op,
                PlanSpec {
                    name: "xl".into(),
                    vcpus: 1,
                    memory_mib: 512,
                    disk_gib: 1
                }
            )
            .await
            .unwrap_err(),
        PlanError::Duplicate
    ));
    for (spec, field) in [
        (
            PlanSpec {
                name: "Bad".into(),
                vcpus: 1,
                memory_mib: 512,
                disk_gib: 1,
            },
            "name",
        ),
        (
            PlanSpec {
                name: "z".into(),
                vcpus: 0,
                memory_mib: 512,
                disk_gib: 1,
            },
            "vcpus",
        ),
        (
            PlanSpec {
                name: "z".into(),
                vcpus: 1,
                memory_mib: 64,
                disk_gib: 1,
            },
            "memory_mib",
        ),
        (
            PlanSpec {
                name: "z".into(),
                vcpus: 1,
                memory_mib: 512,
                disk_gib: 0,
            },
            "disk_gib",
        ),
    ] {
        assert_eq!(
            plans.create(&op, spec).await.unwrap_err().kind(),
            ErrorKind::Invalid { field }
        );
    }
    // An instance keeps the numbers it was created with.
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    plans
        .update(
            &op,
            "small",
            PlanSpec {
                name: "small".into(),
                vcpus: 2,
                memory_mib: 1024,
                disk_gib: 4,
            },
        )
        .await
        .unwrap();
    let i = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!((i.vcpus, i.memory_mib, i.disk_gib), (1, 2048, 10));
    plans.delete(&op, "xl").await.unwrap();
    assert!(matches!(
        plans.get("xl").await.unwrap_err(),
        PlanError::NotFound(_)
    ));
}

#[test]
fn config_keys_from_env_and_validation() {
    use clawy_core::config::ServerConfig;
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "CLAWY_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    );
    let c = ServerConfig::from_toml_and_env("", None, &env).unwrap();
    assert_eq!(c.allowed_countries, vec!["DE"]);
    assert_eq!(
        (c.default_plan.as_str(), c.default_region.as_str()),
        ("small", "DE")
    );
    assert_eq!(
        (
            c.instance_quota,
            c.reconcile_interval_secs,
            c.metrics_interval_secs
        ),
        (3, 30, 30)
    );
    assert_eq!(c.base_image, "clawy-test-guest.qcow2");
    env.insert("CLAWY_ALLOWED_COUNTRIES".into(), "de, fr".into());
    env.insert("CLAWY_DEFAULT_REGION".into(), "fr".into());
    env.insert("CLAWY_INSTANCE_QUOTA".into(), "7".into());
    env.insert("CLAWY_JOB_WORKERS".into(), "2".into());
    let c = ServerConfig::from_toml_and_env("", None, &env).unwrap();
    assert_eq!(c.allowed_countries, vec!["DE", "FR"]);
    assert_eq!(
        (c.default_region.as_str(), c.instance_quota, c.job_workers),
        ("FR", 7, 2)
    );
    for (toml, key) in [
        ("allowed_countries = []", "allowed_countries"),
        ("allowed_countries = [\"Germany\"]", "allowed_countries"),
        ("default_region = \"US\"", "default_region"),
        ("job_workers = 0", "job_workers"),
        ("base_image = \"../etc/passwd\"", "base_image"),
        ("reconcile_interval_secs = 0", "reconcile_interval_secs"),
    ] {
        let mut env = BTreeMap::new();
        env.insert(
            "CLAWY_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        );
        let e = ServerConfig::from_toml_and_env(toml, None, &env).unwrap_err();
        assert!(e.to_string().contains(&format!("`{key}`")), "{toml}: {e}");
    }
}
