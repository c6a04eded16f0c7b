//! Queries as a client sends them, answered from a directory.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::server::{Answer, answer};
use super::*;
use crate::gossip::{Change, EndpointRecord};

fn directory() -> Directory {
    let mut d = Directory::default();
    for (task, last) in [("t1", 5), ("t2", 6)] {
        d.apply(&Change::Upsert(EndpointRecord {
            network_id: "n1".into(),
            task_id: task.into(),
            service_id: "s1".into(),
            addr: Ipv4Addr::new(10, 0, 1, last),
            mac: [2, 0, 0, 0, 0, last],
            node_id: "node".into(),
            vtep: Ipv4Addr::new(192, 168, 1, 1),
            service_name: "web".into(),
            vip: Some(Ipv4Addr::new(10, 0, 1, 2)),
            ingress_ports: Vec::new(),
            aliases: Vec::new(),
        }));
    }
    d
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message
        .queries
        .push(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

fn addresses(reply: &Answer) -> (u16, Vec<Ipv4Addr>) {
    let Answer::Reply(bytes) = reply else {
        panic!("expected a reply, got {reply:?}");
    };
    let message = Message::from_vec(bytes).unwrap();
    let addrs = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (message.metadata.id, addrs)
}

#[test]
fn a_service_name_answers_its_vip_and_tasks_name_its_tasks() {
    let d = directory();
    let nets = vec!["n1".to_owned()];
    let (id, vip) = addresses(&answer(&d, &nets, &query("web.", RecordType::A)));
    assert_eq!(id, 4242);
    assert_eq!(vip, [Ipv4Addr::new(10, 0, 1, 2)]);
    let (_, tasks) = addresses(&answer(&d, &nets, &query("tasks.web", RecordType::A)));
    assert_eq!(
        tasks,
        [Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 1, 6)]
    );
    // No IPv6 for services: an empty answer, not a forward that could leak elsewhere.
    let (_, none) = addresses(&answer(&d, &nets, &query("web", RecordType::AAAA)));
    assert!(none.is_empty());
}

#[test]
fn other_names_and_other_networks_are_forwarded_and_garbage_dropped() {
    let d = directory();
    let nets = vec!["n1".to_owned()];
    assert_eq!(
        answer(&d, &nets, &query("example.com", RecordType::A)),
        Answer::Forward
    );
    let elsewhere = vec!["n2".to_owned()];
    assert_eq!(
        answer(&d, &elsewhere, &query("web", RecordType::A)),
        Answer::Forward
    );
    assert_eq!(answer(&d, &nets, b"\x01\x02garbage"), Answer::Drop);
    assert_eq!(answer(&d, &nets, &[]), Answer::Drop);
}

#[test]
fn upstreams_come_from_resolv_conf_without_loopback() {
    let conf = "# generated\nsearch lan\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver ::1\noptions ndots:0\n";
    let found = upstreams(conf);
    assert_eq!(found, ["10.255.255.53:53".parse().unwrap()]);
}
