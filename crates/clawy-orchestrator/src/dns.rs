//! Publishing instance records to the operator's authoritative DNS server with
//! RFC 2136 dynamic updates signed with TSIG (hmac-sha256), and reading them
//! back for drift checks (ACCESS-1: the records are shown to the owner).
//!
//! Every call is bounded: an unreachable or silent server is an error after
//! [`DnsServer::timeout`], never a hang. A wrong TSIG secret is reported as
//! such (hickory surfaces it as a protocol error about truncated HMACs, which
//! says nothing useful to an operator).
//!
//! Lives in the orchestrator: it is the control-plane part that talks to
//! external systems, and hickory's client is only compiled here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

pub use clawy_proto::names::DnsName;

/// A TSIG secret: never printed, wiped from memory when dropped.
#[derive(Clone)]
pub struct TsigSecret(Vec<u8>);

impl TsigSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        TsigSecret(bytes)
    }
}

impl fmt::Debug for TsigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for TsigSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The operator's authoritative server for the instances' zone.
#[derive(Debug, Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    /// The zone the updates go to (its SOA owner), e.g. `claws.example.com`.
    pub zone: DnsName,
    /// TSIG key name as configured on the server.
    pub key_name: DnsName,
    pub secret: TsigSecret,
    /// Bound of every call (each update or query).
    pub timeout: Duration,
    /// TTL of published records.
    pub ttl: u32,
}

/// The addresses published for one name (what the owner sees as "DNS records").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
}

impl NameRecords {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty()
    }

    fn sorted(mut self) -> Self {
        self.a.sort();
        self.a.dedup();
        self.aaaa.sort();
        self.aaaa.dedup();
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{name} is not inside the DNS zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("DNS server {server} did not answer within {secs} s")]
    Timeout { server: SocketAddr, secs: u64 },
    #[error("DNS server {server} is unreachable: {detail}")]
    Unreachable { server: SocketAddr, detail: String },
    #[error("DNS server refused the TSIG key '{key}' (wrong secret or algorithm?)")]
    TsigRejected { key: String },
    #[error(
        "DNS server {server} refused the update of zone {zone} ({rcode}): is the key allowed to update this zone?"
    )]
    UpdateRefused {
        server: SocketAddr,
        zone: String,
        rcode: String,
    },
    #[error("DNS server {server} answered {rcode} for {what}")]
    Failed {
        server: SocketAddr,
        what: String,
        rcode: String,
    },
    #[error("DNS protocol error with {server}: {detail}")]
    Protocol { server: SocketAddr, detail: String },
    #[error("the TSIG key is not usable: {0}")]
    BadKey(String),
}

/// RFC 2136 client for one server and zone.
#[derive(Debug, Clone)]
pub struct DnsPublisher {
    server: DnsServer,
    zone: Name,
}

fn to_name(n: &DnsName) -> Result<Name, DnsError> {
    // A validated LDH name always parses; keep the error path anyway.
    Name::from_ascii(format!("{n}.")).map_err(|e| DnsError::BadKey(e.to_string()))
}

impl DnsPublisher {
    pub fn new(server: DnsServer) -> Result<Self, DnsError> {
        let zone = to_name(&server.zone)?;
        Ok(DnsPublisher { server, zone })
    }

    pub fn server(&self) -> &DnsServer {
        &self.server
    }

    fn fqdn(&self, name: &DnsName) -> Result<Name, DnsError> {
        let inside = name.as_str() == self.server.zone.as_str()
            || name
                .as_str()
                .strip_suffix(self.server.zone.as_str())
                .is_some_and(|rest| rest.ends_with('.'));
        if !inside {
            return Err(DnsError::OutsideZone {
                name: name.to_string(),
                zone: self.server.zone.to_string(),
            });
        }
        to_name(name)
    }

    async fn client(&self, signed: bool) -> Result<Client<TokioRuntimeProvider>, DnsError> {
        let signer = if signed {
            let key_name = to_name(&self.server.key_name)?;
            // 300 s fudge: the RFC 8945 recommendation for clock skew.
            let s = TSigner::new(
                self.server.secret.0.clone(),
                TsigAlgorithm::HmacSha256,
                key_name,
                300,
            )
            .map_err(|e| DnsError::BadKey(e.to_string()))?;
            Some(s)
        } else {
            None
        };
        let stream = UdpClientStream::builder(self.server.addr, TokioRuntimeProvider::default())
            .with_timeout(Some(self.server.timeout))
            .with_signer(signer)
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        Ok(client)
    }

    fn map_proto(&self, detail: String) -> DnsError {
        let lower = detail.to_ascii_lowercase();
        if lower.contains("hmac") || lower.contains("tsig") {
            DnsError::TsigRejected {
                key: self.server.key_name.to_string(),
            }
        } else if lower.contains("timed out") || lower.contains("timeout") {
            DnsError::Timeout {
                server: self.server.addr,
                secs: self.server.timeout.as_secs().max(1),
            }
        } else if lower.contains("refused")
            || lower.contains("unreachable")
            || lower.contains("io error")
        {
            DnsError::Unreachable {
                server: self.server.addr,
                detail,
            }
        } else {
            DnsError::Protocol {
                server: self.server.addr,
                detail,
            }
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DnsError>>,
    ) -> Result<T, DnsError> {
        // The client has its own timeout per exchange; this one also bounds
        // socket setup and anything else, with a little slack.
        match tokio::time::timeout(self.server.timeout + Duration::from_millis(500), fut).await {
            Ok(r) => r,
            Err(_) => Err(DnsError::Timeout {
                server: self.server.addr,
                secs: self.server.timeout.as_secs().max(1),
            }),
        }
    }

    async fn send_update(&self, message: Message, what: String) -> Result<(), DnsError> {
        self.bounded(async {
            let started = std::time::Instant::now();
            let client = self.client(true).await?;
            let mut responses = client.send(hickory_proto::op::DnsRequest::from(message));
            let resp = match responses.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(self.map_proto(e.to_string())),
                // The exchange ended without an answer: hickory ends the stream
                // both when its timeout fires and when the port is refused
                // (ICMP unreachable); the elapsed time tells them apart.
                None if started.elapsed() >= self.server.timeout => {
                    return Err(DnsError::Timeout {
                        server: self.server.addr,
                        secs: self.server.timeout.as_secs().max(1),
                    });
                }
                None => {
                    return Err(DnsError::Unreachable {
                        server: self.server.addr,
                        detail: "no response (nothing listening?)".into(),
                    });
                }
            };
            match resp.response_code {
                ResponseCode::NoError => Ok(()),
                // knot answers NOTAUTH both for a bad signature and for a key
                // without an update ACL; a bad signature's reply is unsigned and
                // fails verification above, so NOTAUTH here is the ACL.
                rc @ (ResponseCode::NotAuth | ResponseCode::Refused) => {
                    Err(DnsError::UpdateRefused {
                        server: self.server.addr,
                        zone: self.server.zone.to_string(),
                        rcode: rc.to_string(),
                    })
                }
                rc => Err(DnsError::Failed {
                    server: self.server.addr,
                    what,
                    rcode: rc.to_string(),
                }),
            }
        })
        .await
    }

    fn update_message(&self) -> Message {
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Update);
        m.metadata.recursion_desired = false;
        m.add_zone(zone);
        m
    }

    fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
        let mut r = Record::update0(name.clone(), 0, rtype);
        r.dns_class = DNSClass::ANY;
        r
    }

    /// Makes `name`'s A and AAAA records exactly `records`, in one atomic update
    /// (delete both RRsets, add the new ones). Idempotent.
    pub async fn upsert(&self, name: &DnsName, records: &NameRecords) -> Result<(), DnsError> {
        let fqdn = self.fqdn(name)?;
        let mut m = self.update_message();
        m.add_update(Self::delete_rrset(&fqdn, RecordType::A));
        m.add_update(Self::delete_rrset(&fqdn, RecordType::AAAA));
        for ip in &records.a {
            m.add_update(Record::from_rdata(
                fqdn.clone(),
                self.server.ttl,
                RData::A(A(*ip)),
            ));
        }
        for ip in &records.aaaa {
            m.add_update(Record::from_rdata(
                fqdn.clone(),
                self.server.ttl,
                RData::AAAA(AAAA(*ip)),
            ));
        }
        self.send_update(m, format!("the update of {name}")).await
    }

    /// Removes `name`'s A and AAAA records (only what Clawy publishes; other
    /// types the operator put there stay). Idempotent.
    pub async fn delete(&self, name: &DnsName) -> Result<(), DnsError> {
        let fqdn = self.fqdn(name)?;
        let mut m = self.update_message();
        m.add_update(Self::delete_rrset(&fqdn, RecordType::A));
        m.add_update(Self::delete_rrset(&fqdn, RecordType::AAAA));
        self.send_update(m, format!("the removal of {name}")).await
    }

    /// What the server publishes for `name` now (drift checks).
    pub async fn query(&self, name: &DnsName) -> Result<NameRecords, DnsError> {
        let fqdn = self.fqdn(name)?;
        self.bounded(async {
            let mut client = self.client(false).await?;
            let mut out = NameRecords::default();
            for rtype in [RecordType::A, RecordType::AAAA] {
                let resp = client
                    .query(fqdn.clone(), DNSClass::IN, rtype)
                    .await
                    .map_err(|e| self.map_proto(e.to_string()))?;
                match resp.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => {}
                    rc => {
                        return Err(DnsError::Failed {
                            server: self.server.addr,
                            what: format!("the query of {name} {rtype}"),
                            rcode: rc.to_string(),
                        });
                    }
                }
                for r in &resp.answers {
                    if r.name != fqdn {
                        continue;
                    }
                    match &r.data {
                        RData::A(a) => out.a.push(a.0),
                        RData::AAAA(a) => out.aaaa.push(a.0),
                        _ => {}
                    }
                }
            }
            Ok(out.sorted())
        })
        .await
    }

    /// Whether `name` publishes exactly `want` (order-insensitive).
    pub async fn matches(&self, name: &DnsName, want: &NameRecords) -> Result<bool, DnsError> {
        Ok(self.query(name).await? == want.clone().sorted())
    }
}

/// Splits addresses into what [`DnsPublisher::upsert`] takes.
pub fn records_for(addrs: &[IpAddr]) -> NameRecords {
    let mut r = NameRecords::default();
    for a in addrs {
        match a {
            IpAddr::V4(v4) => r.a.push(*v4),
            IpAddr::V6(v6) => r.aaaa.push(*v6),
        }
    }
    r.sorted()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn server() -> DnsServer {
        DnsServer {
            addr: "127.0.0.1:53".parse().unwrap(),
            zone: DnsName::parse("claws.example.com", "zone", 2).unwrap(),
            key_name: DnsName::parse("clawy", "key", 1).unwrap(),
            secret: TsigSecret::new(vec![1; 32]),
            timeout: Duration::from_secs(2),
            ttl: 60,
        }
    }

    #[test]
    fn secret_is_redacted() {
        assert!(format!("{:?}", server()).contains("[redacted]"));
        assert!(!format!("{:?}", server()).contains("[1, 1"));
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        let p = DnsPublisher::new(server()).unwrap();
        let n = |s| DnsName::parse(s, "n", 1).unwrap();
        assert!(p.fqdn(&n("a.claws.example.com")).is_ok());
        assert!(p.fqdn(&n("claws.example.com")).is_ok());
        assert!(matches!(
            p.fqdn(&n("a.xclaws.example.com")),
            Err(DnsError::OutsideZone { .. })
        ));
        assert!(matches!(
            p.fqdn(&n("example.com")),
            Err(DnsError::OutsideZone { .. })
        ));
    }

    #[test]
    fn wrong_key_message_is_clear() {
        let p = DnsPublisher::new(server()).unwrap();
        let e = p.map_proto(
            "tsig validation error: Please file an issue ... truncated HMACs with TSIG".into(),
        );
        assert_eq!(
            e.to_string(),
            "DNS server refused the TSIG key 'clawy' (wrong secret or algorithm?)"
        );
    }
}
