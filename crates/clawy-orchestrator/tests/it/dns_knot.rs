//! The RFC 2136 + TSIG publisher against a real knot (Debian's knotd 3.2) started
//! on a loopback port by the test. Promise: ACCESS-1 (DNS records are published
//! and read back to be shown to the owner); the TSIG key is the secret DATA-4
//! seals.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use clawy_orchestrator::dns::{
    DnsError, DnsName, DnsPublisher, DnsServer, NameRecords, TsigSecret,
};
use clawy_testkit::knot::Knot;

fn name(s: &str) -> DnsName {
    DnsName::parse(s, "name", 1).unwrap()
}

fn publisher(knot: &Knot, secret: Vec<u8>) -> DnsPublisher {
    DnsPublisher::new(DnsServer {
        addr: knot.addr(),
        zone: name(knot.zone()),
        key_name: name(knot.key_name()),
        secret: TsigSecret::new(secret),
        timeout: Duration::from_secs(2),
        ttl: 60,
    })
    .unwrap()
}

#[tokio::test]
async fn access_1_dns_records_created_updated_deleted_and_read_back() {
    let knot = Knot::start("claws.test").await.unwrap();
    let p = publisher(&knot, knot.secret());
    let host = name("my-claw-1a2b.claws.test");
    let v1 = NameRecords {
        a: vec![Ipv4Addr::new(192, 0, 2, 10)],
        aaaa: vec![],
    };
    p.upsert(&host, &v1).await.unwrap();
    assert_eq!(
        knot.kdig("my-claw-1a2b.claws.test", "A").unwrap(),
        ["192.0.2.10"],
        "{}",
        knot.log()
    );
    assert_eq!(p.query(&host).await.unwrap(), v1);
    assert!(p.matches(&host, &v1).await.unwrap());

    // Update: A replaced (not added to), AAAA added; idempotent when repeated.
    let v2 = NameRecords {
        a: vec![Ipv4Addr::new(192, 0, 2, 11)],
        aaaa: vec!["2001:db8::11".parse::<Ipv6Addr>().unwrap()],
    };
    p.upsert(&host, &v2).await.unwrap();
    p.upsert(&host, &v2).await.unwrap();
    assert_eq!(
        knot.kdig("my-claw-1a2b.claws.test", "A").unwrap(),
        ["192.0.2.11"]
    );
    assert_eq!(
        knot.kdig("my-claw-1a2b.claws.test", "AAAA").unwrap(),
        ["2001:db8::11"]
    );
    assert_eq!(p.query(&host).await.unwrap(), v2);
    assert!(!p.matches(&host, &v1).await.unwrap(), "drift is visible");

    // Another name is untouched by a delete; a delete is idempotent.
    let other = name("other-9f8e.claws.test");
    p.upsert(&other, &v1).await.unwrap();
    p.delete(&host).await.unwrap();
    p.delete(&host).await.unwrap();
    assert!(
        knot.kdig("my-claw-1a2b.claws.test", "A")
            .unwrap()
            .is_empty()
    );
    assert!(p.query(&host).await.unwrap().is_empty());
    assert_eq!(p.query(&other).await.unwrap(), v1);

    // Updates survive a server restart (zonefile-sync: 0).
    let mut knot = knot;
    knot.restart().await.unwrap();
    assert_eq!(p.query(&other).await.unwrap(), v1);
    assert!(knot.zone_file().contains("other-9f8e"));

    // A name outside the zone never leaves the process.
    assert!(matches!(
        p.upsert(&name("x.example.org"), &v1).await,
        Err(DnsError::OutsideZone { .. })
    ));
}

#[tokio::test]
async fn wrong_tsig_secret_is_a_clear_error_and_changes_nothing() {
    let knot = Knot::start("claws.test").await.unwrap();
    let mut wrong = knot.secret();
    wrong[0] ^= 0xff;
    let p = publisher(&knot, wrong);
    let host = name("w-1.claws.test");
    let started = Instant::now();
    let err = p
        .upsert(
            &host,
            &NameRecords {
                a: vec![Ipv4Addr::new(192, 0, 2, 1)],
                aaaa: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "DNS server refused the TSIG key 'clawy-test-key' (wrong secret or algorithm?)",
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(knot.kdig("w-1.claws.test", "A").unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_or_silent_server_errors_within_the_timeout() {
    // Nothing listens: the kernel answers "port unreachable" at once.
    let knot = Knot::start("claws.test").await.unwrap();
    let mut down = knot;
    down.stop();
    let p = publisher(&down, down.secret());
    let started = Instant::now();
    let err = p
        .upsert(
            &name("u-1.claws.test"),
            &NameRecords {
                a: vec![Ipv4Addr::new(192, 0, 2, 1)],
                aaaa: vec![],
            },
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{err:?} after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, DnsError::Unreachable { .. } | DnsError::Timeout { .. }),
        "{err:?}"
    );

    // A socket that swallows every packet: only the timeout ends the call.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = DnsPublisher::new(DnsServer {
        addr: sink.local_addr().unwrap(),
        zone: name("claws.test"),
        key_name: name("k"),
        secret: TsigSecret::new(vec![7; 32]),
        timeout: Duration::from_secs(1),
        ttl: 60,
    })
    .unwrap();
    let started = Instant::now();
    let err = p.query(&name("u-1.claws.test")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, DnsError::Timeout { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let err = p.delete(&name("u-1.claws.test")).await.unwrap_err();
    assert!(matches!(err, DnsError::Timeout { .. }), "{err:?}");
}
