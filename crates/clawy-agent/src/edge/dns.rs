//! The agent's loopback DNS responder, Caddy's per-request upstream lookup
//! (`transport.resolver.addresses`). It answers exactly one question shape:
//! `A <label>.<internal zone>` → the private IPv4 of the running VM whose public
//! hostname starts with `<label>`; NXDOMAIN for any other label of the zone (so
//! Caddy's proxy fails fast and the error route shows the right page), REFUSED
//! for names outside the zone. Nothing is cached by Caddy's (Go's) resolver, so a
//! VM that starts, stops or goes away is routed correctly on the next request
//! without touching Caddy's config.
//!
//! Built on `hickory-proto`'s message codec only (no `hickory-server`): one
//! question shape over UDP on loopback does not need a zone authority, and it
//! keeps the agent's build small.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType, rdata::A};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::index::EdgeIndex;
use clawy_proto::names::DnsName;

/// Answers' TTL: 0, nobody may cache a VM's address.
const TTL: u32 = 0;

/// A bound responder; [`DnsResponder::run`] serves until shutdown.
#[derive(Debug)]
pub struct DnsResponder {
    socket: UdpSocket,
    zone: DnsName,
    index: Arc<EdgeIndex>,
}

impl DnsResponder {
    /// Binds `addr` (a loopback address; settings validation refuses others).
    pub async fn bind(
        addr: SocketAddr,
        zone: DnsName,
        index: Arc<EdgeIndex>,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(DnsResponder {
            socket,
            zone,
            index,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` turns true. Each packet is answered inline: an
    /// answer is one hash lookup, far cheaper than spawning a task.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, peer) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "edge dns: receive failed");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            if let Some(reply) = answer(&buf[..len], &self.zone, &self.index) {
                if let Err(e) = self.socket.send_to(&reply, peer).await {
                    tracing::debug!(error = %e, %peer, "edge dns: send failed");
                }
            }
        }
    }
}

/// The reply to one packet, or `None` for something that is not a parseable
/// query (dropped, as a resolver would time out on it anyway).
pub fn answer(packet: &[u8], zone: &DnsName, index: &EdgeIndex) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::new(request.id, MessageType::Response, request.op_code);
    reply.metadata.recursion_desired = request.recursion_desired;
    reply.metadata.authoritative = true;
    let query = match (request.op_code, request.queries.as_slice()) {
        (OpCode::Query, [q]) => q.clone(),
        _ => {
            reply.metadata.response_code = ResponseCode::FormErr;
            return reply.to_vec().ok();
        }
    };
    reply.add_query(query.clone());
    let name = query.name().to_ascii().to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let label = name
        .strip_suffix(zone.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|l| !l.is_empty() && !l.contains('.'));
    let Some(label) = label else {
        reply.metadata.response_code = ResponseCode::Refused;
        reply.metadata.authoritative = false;
        return reply.to_vec().ok();
    };
    match index.resolve_label(label) {
        Some(ip) if query.query_class() == DNSClass::IN => {
            if query.query_type() == RecordType::A {
                reply.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::A(A(ip)),
                ));
            }
            // Any other type of an existing name: NOERROR with no answer
            // (NODATA), so a resolver asking A and AAAA together keeps the A.
            reply.metadata.response_code = ResponseCode::NoError;
        }
        _ => {
            reply.metadata.response_code = ResponseCode::NXDomain;
        }
    }
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::edge::index::EdgeState;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::net::Ipv4Addr;

    fn n(s: &str) -> DnsName {
        DnsName::parse(s, "t", 1).unwrap()
    }

    fn setup() -> (DnsName, EdgeIndex) {
        let i = EdgeIndex::new(n("claws.example.com"));
        i.upsert(
            &n("run-1.claws.example.com"),
            EdgeState::Running(Ipv4Addr::new(10, 0, 0, 7)),
        )
        .unwrap();
        i.upsert(&n("stop-2.claws.example.com"), EdgeState::Stopped)
            .unwrap();
        (n("vm.clawy.internal"), i)
    }

    fn ask(name: &str, rtype: RecordType) -> Message {
        let (zone, index) = setup();
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        Message::from_vec(&answer(&m.to_vec().unwrap(), &zone, &index).unwrap()).unwrap()
    }

    #[test]
    fn running_label_resolves_to_its_private_ip() {
        let r = ask("run-1.vm.clawy.internal.", RecordType::A);
        assert_eq!(r.id, 4242);
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(&r.answers[0].data, &RData::A(A(Ipv4Addr::new(10, 0, 0, 7))));
        // case-insensitive like any DNS server
        let r = ask("RUN-1.VM.clawy.internal.", RecordType::A);
        assert_eq!(r.answers.len(), 1);
        let r = ask("run-1.vm.clawy.internal.", RecordType::AAAA);
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
    }

    #[test]
    fn stopped_unknown_and_foreign_names() {
        assert_eq!(
            ask("stop-2.vm.clawy.internal.", RecordType::A).response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("nope.vm.clawy.internal.", RecordType::A).response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("a.run-1.vm.clawy.internal.", RecordType::A).response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            ask("run-1.claws.example.com.", RecordType::A).response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            ask("vm.clawy.internal.", RecordType::A).response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn garbage_is_dropped() {
        let (zone, index) = setup();
        assert!(answer(b"", &zone, &index).is_none());
        assert!(answer(&[0xff; 7], &zone, &index).is_none());
    }
}
