//! What the DNS fuzz target drives: one datagram as a task's query to the embedded resolver
//! (answered from a directory, or refused), and the same bytes as an upstream's reply to a
//! forwarded query. Compiled only with the `fuzzing` feature.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::directory::Directory;
use super::forward::is_answer;
use super::server::{Answer, answer, error_reply};
use crate::gossip::{Change, EndpointRecord};

/// The id of the query the forwarder sent upstream.
const UPSTREAM_ID: u16 = 0x4d45;

/// The directory the resolver answers from: a VIP service and a dnsrr one on `net-1`, and a
/// service on a network the asking task is not on.
fn directory() -> Directory {
    let mut directory = Directory::default();
    let services = [
        ("net-1", "web", "t1", 5, Some(2)),
        ("net-1", "web", "t2", 6, Some(2)),
        ("net-1", "rr", "t3", 7, None),
        ("net-2", "db", "t4", 8, Some(3)),
    ];
    for (network, service, task, last, vip) in services {
        directory.apply(&Change::Upsert(EndpointRecord {
            network_id: network.into(),
            task_id: task.into(),
            service_id: format!("{service}-id"),
            addr: Ipv4Addr::new(10, 0, 1, last),
            mac: [2, 0, 0, 0, 0, last],
            node_id: "node-1".into(),
            vtep: Ipv4Addr::new(192, 168, 1, 1),
            service_name: service.into(),
            vip: vip.map(|v| Ipv4Addr::new(10, 0, 1, v)),
            ingress_ports: Vec::new(),
            aliases: Vec::new(),
        }));
    }
    directory
}

/// The questions of the query the forwarder sent upstream.
fn forwarded_questions() -> Vec<Query> {
    Name::from_ascii("example.com.")
        .map(|name| vec![Query::query(name, RecordType::A)])
        .unwrap_or_default()
}

/// Answers `datagram` as the resolver of a task on `net-1` does, then judges it as an
/// upstream's reply to a forwarded query. Returns whether the resolver answered it itself.
pub(crate) fn query(datagram: &[u8]) -> bool {
    let networks = vec!["net-1".to_owned()];
    let decision = answer(&directory(), &networks, datagram);
    if decision == Answer::Forward {
        // What the resolver answers when it cannot forward, or no upstream answered.
        let _ = error_reply(datagram, ResponseCode::Refused);
        let _ = error_reply(datagram, ResponseCode::ServFail);
    }
    let _ = is_answer(datagram, UPSTREAM_ID, &forwarded_questions());
    matches!(decision, Answer::Reply(_))
}

/// Queries as tasks send them (service names, `tasks.` names, names to forward, other types)
/// and an upstream's reply.
pub(crate) fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let asked = [
        ("web", RecordType::A),
        ("tasks.web", RecordType::A),
        ("RR.", RecordType::ANY),
        ("web", RecordType::AAAA),
        ("db", RecordType::A),
        ("example.com.", RecordType::A),
        ("example.com.", RecordType::MX),
    ];
    for (i, (name, kind)) in asked.into_iter().enumerate() {
        let Ok(name) = Name::from_ascii(name) else {
            continue;
        };
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.queries.push(Query::query(name, kind));
        if let Ok(bytes) = message.to_vec() {
            seeds.push((format!("query-{i}"), bytes));
        }
    }
    let mut reply = Message::response(UPSTREAM_ID, hickory_proto::op::OpCode::Query);
    reply.queries = forwarded_questions();
    reply.answers.push(hickory_proto::rr::Record::from_rdata(
        Name::from_ascii("example.com.").unwrap_or_default(),
        60,
        hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    if let Ok(bytes) = reply.to_vec() {
        seeds.push(("upstream-reply".into(), bytes));
    }
    seeds
}
