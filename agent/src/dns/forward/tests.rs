//! The forwarder against a fake upstream on loopback: spoofed replies ignored, concurrency and
//! per-source rates bounded, refusals counted.

use std::sync::RwLock;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;
use crate::dns::Directory;
use crate::dns::server::Server;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.queries.push(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    message.to_vec().expect("encode")
}

/// A response to `request` with `id`, asking `name`, answering 192.0.2.1; `response: false` makes
/// it a query instead.
fn reply(request: &Message, id: u16, name: &str, response: bool) -> Vec<u8> {
    let mut message = Message::response(id, OpCode::Query);
    if !response {
        message.metadata.message_type = MessageType::Query;
    }
    let asked = request.queries.first().expect("a question");
    let name = Name::from_ascii(name).expect("name");
    message
        .queries
        .push(Query::query(name.clone(), asked.query_type));
    message.answers.push(Record::from_rdata(
        name,
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    message.to_vec().expect("encode")
}

fn limits() -> ForwardLimits {
    ForwardLimits {
        timeout: Duration::from_secs(5),
        ..ForwardLimits::default()
    }
}

async fn loopback(ip: [u8; 4]) -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::from(ip), 0))
        .await
        .expect("bind loopback")
}

#[tokio::test]
async fn only_the_upstreams_own_answer_is_accepted() {
    let upstream = loopback([127, 0, 0, 1]).await;
    let upstream_addr = upstream.local_addr().expect("addr");
    let forwarder = Arc::new(Forwarder::new(vec![upstream_addr], limits()));
    let asked = {
        let forwarder = forwarder.clone();
        tokio::spawn(async move { forwarder.forward(&query(4242, "example.com.")).await })
    };

    let mut buf = vec![0u8; 4096];
    let (len, from) = upstream.recv_from(&mut buf).await.expect("the query");
    let sent = Message::from_vec(&buf[..len]).expect("a query");
    assert_eq!(
        sent.queries,
        Message::from_vec(&query(1, "example.com."))
            .unwrap()
            .queries
    );
    let id = sent.metadata.id;

    // The right answer from another port: the connected socket never sees it.
    let stranger = loopback([127, 0, 0, 1]).await;
    stranger
        .send_to(&reply(&sent, id, "example.com.", true), from)
        .await
        .expect("send");
    // From the upstream's own address: wrong id, wrong question, not a response, not DNS.
    let spoofs = [
        reply(&sent, id.wrapping_add(1), "example.com.", true),
        reply(&sent, id, "evil.example.", true),
        reply(&sent, id, "example.com.", false),
        b"not dns at all".to_vec(),
    ];
    for spoof in &spoofs {
        upstream.send_to(spoof, from).await.expect("send");
    }
    // The real one, its name in another case (as 0x20 randomisation would have it).
    upstream
        .send_to(&reply(&sent, id, "EXAMPLE.com.", true), from)
        .await
        .expect("send");

    let relayed = asked.await.expect("join").expect("an answer");
    let relayed = Message::from_vec(&relayed).expect("parses");
    assert_eq!(relayed.metadata.id, 4242, "the asker's id is put back");
    assert_eq!(
        relayed.answers.first().map(|r| r.data.clone()),
        Some(RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))
    );
    let stats = forwarder.stats();
    assert_eq!(stats.discarded_replies, spoofs.len() as u64, "{stats:?}");
    assert_eq!(stats.unanswered, 0);
}

#[tokio::test]
async fn an_upstream_that_never_answers_rightly_times_out() {
    let upstream = loopback([127, 0, 0, 1]).await;
    let limits = ForwardLimits {
        timeout: Duration::from_millis(300),
        ..ForwardLimits::default()
    };
    let forwarder = Forwarder::new(vec![upstream.local_addr().expect("addr")], limits);
    let spoofing = async {
        let mut buf = vec![0u8; 4096];
        let (len, from) = upstream.recv_from(&mut buf).await.expect("the query");
        let sent = Message::from_vec(&buf[..len]).expect("a query");
        let wrong = reply(
            &sent,
            sent.metadata.id.wrapping_add(7),
            "example.com.",
            true,
        );
        upstream.send_to(&wrong, from).await.expect("send");
    };
    let asked = query(1, "example.com.");
    let (answer, ()) = tokio::join!(forwarder.forward(&asked), spoofing);
    assert_eq!(answer, None);
    let stats = forwarder.stats();
    assert_eq!((stats.discarded_replies, stats.unanswered), (1, 1));
}

#[test]
fn concurrency_is_bounded_by_permits() {
    let limits = ForwardLimits {
        max_in_flight: 4,
        ..ForwardLimits::default()
    };
    let forwarder = Forwarder::new(Vec::new(), limits);
    let sandbox: Arc<str> = Arc::from("t1");
    let asker = IpAddr::from([127, 0, 0, 1]);
    let mut held: Vec<_> = (0..4)
        .map(|_| forwarder.admit(&sandbox, asker).expect("a permit"))
        .collect();
    for _ in 0..10 {
        assert_eq!(forwarder.admit(&sandbox, asker).err(), Some(Refusal::Busy));
    }
    held.pop();
    assert!(
        forwarder.admit(&sandbox, asker).is_ok(),
        "a permit returned"
    );
    assert_eq!(forwarder.stats().busy, 10);
}

/// A fake upstream answering every query rightly, until dropped.
async fn answering_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = loopback([127, 0, 0, 1]).await;
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let name = request.queries[0].name.to_ascii();
            let answer = reply(&request, request.metadata.id, &name, true);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    (addr, task)
}

/// Sends `count` queries from `client` to `server`, then collects the response codes.
async fn ask(client: &UdpSocket, server: SocketAddr, count: u16) -> Vec<ResponseCode> {
    for id in 0..count {
        client
            .send_to(&query(id, "flood.example."), server)
            .await
            .expect("send");
    }
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 4096];
    while codes.len() < usize::from(count) {
        let received = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await;
        let len = received.expect("every query answered").expect("recv");
        let message = Message::from_vec(&buf[..len]).expect("a reply");
        codes.push(message.metadata.response_code);
    }
    codes
}

#[tokio::test]
async fn a_flood_from_one_source_is_refused_while_another_is_served() {
    let (upstream, _upstream_task) = answering_upstream().await;
    let limits = ForwardLimits {
        rate: Rate {
            per_second: 1.0,
            burst: 5.0,
        },
        ..limits()
    };
    let forwarder = Arc::new(Forwarder::new(vec![upstream], limits));
    let socket = loopback([127, 0, 0, 11]).await;
    let server_addr = socket.local_addr().expect("addr");
    let server = Server {
        socket,
        sandbox: Arc::from("t1"),
        networks: Vec::new(),
        directory: Arc::new(RwLock::new(Directory::default())),
        forwarder: forwarder.clone(),
    };
    let server = tokio::spawn(server.run());

    let flooder = loopback([127, 0, 0, 2]).await;
    let codes = ask(&flooder, server_addr, 50).await;
    let answered = codes
        .iter()
        .filter(|c| **c == ResponseCode::NoError)
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == ResponseCode::Refused)
        .count();
    // The burst, and at most a token or two more if this took a second or two.
    assert!((5..=7).contains(&answered), "{codes:?}");
    assert_eq!(answered + refused, 50, "{codes:?}");

    let neighbour = loopback([127, 0, 0, 3]).await;
    assert_eq!(
        ask(&neighbour, server_addr, 1).await,
        vec![ResponseCode::NoError],
        "another source is served"
    );
    assert_eq!(forwarder.stats().rate_limited, refused as u64);
    server.abort();
}
