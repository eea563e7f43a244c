//! Instance hostnames and their DNS records through the real jobs, against
//! a real knot (started unprivileged on a loopback port) and the fake agent.
//! Promises: ACCESS-1 (the records are published, stored with the instance and
//! shown), DATA-4 (the TSIG key is stored sealed).

use std::time::{Duration, Instant};

use clawy_core::Actor;
use clawy_core::SecretString;
use clawy_core::config::{DnsName, DnsSettings, ServerConfig};
use clawy_core::instances::InstanceState;
use clawy_core::lifecycle::LifecycleAction;
use clawy_orchestrator::dns_sync::DnsSync;
use clawy_testkit::db::TestDatabase;
use clawy_testkit::knot::Knot;

use crate::common::{Fixture, fake};

async fn fixture(knot: &Knot) -> Fixture {
    let db = TestDatabase::new().await.unwrap();
    let mut config = ServerConfig::for_tests(&db.data_dir(), db.url());
    config.instances_domain = Some(DnsName::parse("claws.test", "t", 2).unwrap());
    config.dns = Some(DnsSettings {
        server: knot.addr(),
        zone: DnsName::parse(knot.zone(), "t", 1).unwrap(),
        ttl_secs: 60,
        timeout_secs: 2,
    });
    Fixture::with_config(db, config).await
}

fn a_of(knot: &Knot, name: &str) -> Vec<String> {
    knot.kdig(name, "A").unwrap()
}

#[tokio::test]
async fn access_1_create_publishes_delete_removes_and_hostnames_are_never_reused() {
    let knot = Knot::start("claws.test").await.unwrap();
    let f = fixture(&knot).await;
    let _agent = fake("DE-fra1", "10.91.1").await;
    f.host("fra1", &_agent, "DE").await;
    f.core
        .dns_records()
        .set_tsig_key(
            knot.key_name(),
            &SecretString::from(knot.secret_b64().to_string()),
        )
        .await
        .unwrap();
    // DATA-4: only the sealed form is stored.
    let stored: String = {
        use sqlx::Row;
        sqlx::query("SELECT value_sealed FROM sealed_settings")
            .fetch_one(f.core.store().pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    };
    assert!(!stored.contains(knot.secret_b64()), "sealed at rest");
    assert_eq!(
        f.core
            .dns_records()
            .tsig_key()
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_slice(),
        knot.secret().as_slice()
    );
    f.core
        .dns_records()
        .set_host_addresses("fra1", Some("192.0.2.10".parse().unwrap()), None)
        .await
        .unwrap();

    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    let host = inst.hostname.clone().unwrap();
    let short: String = inst.id.chars().take(8).collect();
    assert_eq!(host, format!("alpha-{short}.claws.test"));
    assert_eq!(inst.dns.state.as_deref(), Some("pending"));

    let runner = f.runner("t");
    f.drain(&runner).await;
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running);
    assert_eq!(a_of(&knot, &host), ["192.0.2.10"], "{}", knot.log());
    assert_eq!(got.dns.state.as_deref(), Some("published"));
    assert_eq!(got.dns.a.as_deref(), Some("192.0.2.10"));
    assert_eq!(got.dns.error, None);
    // The agent learns the hostname its edge serves with the VM spec.
    assert_eq!(
        _agent.vm(&inst.id).unwrap().spec.public_hostname.as_deref(),
        Some(host.as_str())
    );

    // Delete: the record goes once the VM is gone.
    f.core
        .instances()
        .request(
            &Actor::system(),
            &user.id,
            &inst.id,
            LifecycleAction::Delete,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    let gone = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(gone.state, InstanceState::Deleted);
    assert!(a_of(&knot, &host).is_empty(), "record removed");
    assert_eq!(gone.dns.state.as_deref(), Some("removed"));
    // The hostname stays reserved: the same owner and name get a new one, and the
    // unique index refuses the old one for anybody.
    let again = f.create(&user, "alpha").await;
    assert_ne!(again.hostname.as_deref(), Some(host.as_str()));
    let clash = sqlx::query("UPDATE instances SET hostname = $1 WHERE id = $2")
        .bind(&host)
        .bind(&again.id)
        .execute(f.core.store().pool())
        .await;
    assert!(
        clash.is_err(),
        "a deleted instance's hostname is never reused"
    );
}

#[tokio::test]
async fn access_1_dns_down_never_blocks_and_the_pass_converges_and_repairs_drift() {
    let mut knot = Knot::start("claws.test").await.unwrap();
    let f = fixture(&knot).await;
    let _agent = fake("DE-fra1", "10.91.2").await;
    f.host("fra1", &_agent, "DE").await;
    f.core
        .dns_records()
        .set_tsig_key(
            knot.key_name(),
            &SecretString::from(knot.secret_b64().to_string()),
        )
        .await
        .unwrap();
    f.core
        .dns_records()
        .set_host_addresses(
            "fra1",
            Some("192.0.2.20".parse().unwrap()),
            Some("2001:db8::20".parse().unwrap()),
        )
        .await
        .unwrap();
    let user = f.user("owner@example.com").await;
    let runner = f.runner("t");
    let sync = DnsSync::new(f.core.clone());

    // The DNS server is down: the instance still becomes running; the failure is
    // on the instance for operators, and nothing is published.
    knot.stop();
    let inst = f.create(&user, "beta").await;
    let host = inst.hostname.clone().unwrap();
    let started = Instant::now();
    f.drain(&runner).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running, "DNS never blocks");
    assert_eq!(got.dns.state.as_deref(), Some("pending"));
    let err = got.dns.error.clone().unwrap();
    assert!(
        err.contains("did not answer") || err.contains("unreachable"),
        "{err}"
    );

    // Back up: the next pass publishes (the same state a crash between "VM running"
    // and "DNS published" leaves behind).
    knot.restart().await.unwrap();
    let r = sync.pass(false).await;
    assert_eq!(r.published, 1, "{r:?}");
    assert_eq!(a_of(&knot, &host), ["192.0.2.20"]);
    assert_eq!(knot.kdig(&host, "AAAA").unwrap(), ["2001:db8::20"]);
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.dns.state.as_deref(), Some("published"));
    assert_eq!(got.dns.error, None);
    assert_eq!(got.dns.aaaa.as_deref(), Some("2001:db8::20"));

    // Drift: the record removed behind our back is rewritten by a checking pass;
    // a pass without the read-back does nothing.
    let p = clawy_orchestrator::dns::DnsPublisher::new(clawy_orchestrator::dns::DnsServer {
        addr: knot.addr(),
        zone: DnsName::parse("claws.test", "t", 1).unwrap(),
        key_name: DnsName::parse(knot.key_name(), "t", 1).unwrap(),
        secret: clawy_orchestrator::dns::TsigSecret::new(knot.secret()),
        timeout: Duration::from_secs(2),
        ttl: 60,
    })
    .unwrap();
    let dn = DnsName::parse(&host, "t", 2).unwrap();
    p.delete(&dn).await.unwrap();
    assert_eq!(sync.pass(false).await.repaired, 0);
    assert!(a_of(&knot, &host).is_empty());
    assert_eq!(sync.pass(true).await.repaired, 1);
    assert_eq!(a_of(&knot, &host), ["192.0.2.20"]);
    // A wrong value is rewritten too.
    p.upsert(
        &dn,
        &clawy_orchestrator::dns::NameRecords {
            a: vec!["198.51.100.66".parse().unwrap()],
            aaaa: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(sync.pass(true).await.repaired, 1);
    assert_eq!(a_of(&knot, &host), ["192.0.2.20"]);

    // Deleted while the server is down: the instance is deleted at once, the stale
    // record is removed by the pass once the server answers.
    knot.stop();
    f.core
        .instances()
        .request(
            &Actor::system(),
            &user.id,
            &inst.id,
            LifecycleAction::Delete,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    let gone = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(gone.state, InstanceState::Deleted);
    assert_eq!(gone.dns.state.as_deref(), Some("removing"));
    knot.restart().await.unwrap();
    assert_eq!(
        a_of(&knot, &host),
        ["192.0.2.20"],
        "still there: knot was down"
    );
    let r = sync.pass(false).await;
    assert_eq!(r.removed, 1, "{r:?}");
    assert!(a_of(&knot, &host).is_empty());
    assert!(knot.kdig(&host, "AAAA").unwrap().is_empty());
    assert_eq!(
        sync.pass(true).await,
        Default::default(),
        "nothing left to do"
    );
}

#[tokio::test]
async fn data_4_wrong_tsig_key_is_a_clear_operator_visible_error_not_a_hang() {
    let knot = Knot::start("claws.test").await.unwrap();
    let f = fixture(&knot).await;
    let _agent = fake("DE-fra1", "10.91.3").await;
    f.host("fra1", &_agent, "DE").await;
    let mut wrong = knot.secret();
    wrong[0] ^= 0xff;
    use base64::Engine as _;
    let wrong_b64 = base64::engine::general_purpose::STANDARD.encode(&wrong);
    f.core
        .dns_records()
        .set_tsig_key(knot.key_name(), &SecretString::from(wrong_b64.clone()))
        .await
        .unwrap();
    f.core
        .dns_records()
        .set_host_addresses("fra1", Some("192.0.2.30".parse().unwrap()), None)
        .await
        .unwrap();
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "gamma").await;
    let runner = f.runner("t");
    let started = Instant::now();
    f.drain(&runner).await;
    let sync = DnsSync::new(f.core.clone());
    let r = sync.pass(false).await;
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running);
    let expected = "DNS server refused the TSIG key 'clawy-test-key' (wrong secret or algorithm?)";
    assert_eq!(got.dns.error.as_deref(), Some(expected));
    assert_eq!(r.blocked.as_deref(), Some(expected), "{r:?}");
    assert!(!expected.contains(&wrong_b64));
    assert!(a_of(&knot, got.hostname.as_deref().unwrap()).is_empty());
    // Without any key: the error says what to run.
    sqlx::query("DELETE FROM sealed_settings")
        .execute(f.core.store().pool())
        .await
        .unwrap();
    let r = sync.pass(false).await;
    assert!(
        r.blocked
            .as_deref()
            .unwrap()
            .contains("clawy admin dns-set-key"),
        "{r:?}"
    );
}
