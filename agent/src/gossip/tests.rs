//! Loopback tests of whole gossip members on 127.0.0.1 (no root needed); waits are bounded
//! polls, never timing assertions.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

fn ring(id: u32, fill: u8) -> KeyRing {
    KeyRing::new(SealKey {
        id,
        secret: [fill; 32],
    })
}

/// A member's configuration on loopback, with a fast anti-entropy round.
fn config(name: &str, keys: KeyRing, bind: &str) -> GossipConfig {
    let bind: SocketAddr = bind.parse().expect("bind addr");
    let mut config = GossipConfig::new(name, bind, keys);
    config.anti_entropy_interval = Duration::from_millis(300);
    config
}

/// Drops every `drop_every`th datagram sent; a lossy member also gives up piggybacking, so
/// records can only spread by anti-entropy.
fn lossy(config: &mut GossipConfig, drop_every: Option<u32>) {
    config.drop_every_nth_send = drop_every.and_then(NonZeroU32::new);
    config.piggyback_records = drop_every.is_none();
}

async fn member(
    name: &str,
    keys: KeyRing,
    bind: &str,
    drop_every: Option<u32>,
) -> (Gossip, UnboundedReceiver<Change>) {
    let mut config = config(name, keys, bind);
    lossy(&mut config, drop_every);
    Gossip::start(config).await.expect("start gossip")
}

async fn cluster(n: usize, drop_every: Option<u32>) -> Vec<(Gossip, UnboundedReceiver<Change>)> {
    cluster_with(n, |config| lossy(config, drop_every)).await
}

/// `n` members, each configured by `edit`, joined through the first.
async fn cluster_with(
    n: usize,
    edit: impl Fn(&mut GossipConfig),
) -> Vec<(Gossip, UnboundedReceiver<Change>)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut config = config(&format!("node-{i}"), ring(1, 7), "127.0.0.1:0");
        edit(&mut config);
        nodes.push(Gossip::start(config).await.expect("start gossip"));
    }
    let seed = nodes[0].0.identity().addr;
    for (g, _) in &nodes[1..] {
        g.join(vec![seed]).await.expect("join");
    }
    nodes
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn endpoint(task: &str, node: &str, octet: u8) -> EndpointRecord {
    EndpointRecord {
        network_id: "net-1".into(),
        task_id: task.into(),
        service_id: "svc-1".into(),
        addr: Ipv4Addr::new(10, 0, 1, octet),
        mac: [2, 66, 10, 0, 1, octet],
        node_id: node.into(),
        vtep: Ipv4Addr::LOCALHOST,
        service_name: String::new(),
        vip: None,
        ingress_ports: Vec::new(),
        aliases: Vec::new(),
    }
}

async fn next_change(rx: &mut UnboundedReceiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a change within 10 s")
        .expect("change channel open")
}

#[tokio::test]
async fn three_members_share_and_withdraw_records() {
    let mut nodes = cluster(3, None).await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.members().len() == 3)
    })
    .await;

    let rec = endpoint("task-a", "node-0", 2);
    nodes[0].0.publish(rec.clone()).await.expect("publish");
    eventually("record everywhere", || {
        nodes.iter().all(|(g, _)| g.records() == vec![rec.clone()])
    })
    .await;
    assert_eq!(
        next_change(&mut nodes[1].1).await,
        Change::Upsert(rec.clone())
    );

    nodes[0].0.withdraw(rec.key()).await.expect("withdraw");
    eventually("record gone everywhere", || {
        nodes.iter().all(|(g, _)| g.records().is_empty())
    })
    .await;
    assert_eq!(
        next_change(&mut nodes[2].1).await,
        Change::Upsert(rec.clone())
    );
    assert_eq!(next_change(&mut nodes[2].1).await, Change::Remove(rec));
    assert!(nodes.iter().all(|(g, _)| g.stats().dropped_bad_seal == 0));
    // Bytes are counted as on the wire: every datagram is sealed, a kind byte inside.
    let least = u64::try_from(seal::SEAL_OVERHEAD + 1).expect("small");
    for (g, _) in &nodes {
        let s = g.stats();
        assert!(s.sent > 0 && s.received > 0, "{s:?}");
        assert!(s.sent_bytes >= s.sent * least, "{s:?}");
        assert!(s.received_bytes >= s.received * least, "{s:?}");
        assert!(s.sent_bytes <= s.sent * 1400, "{s:?}");
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(g, _)| g.identity().addr).collect();
    assert!(addrs.iter().all(|&a| nodes[1].0.has_member(a)));
    assert!(
        !nodes[1]
            .0
            .has_member(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)))
    );
}

#[tokio::test]
async fn members_with_another_key_are_ignored() {
    let nodes = cluster(3, None).await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.members().len() == 3)
    })
    .await;
    let seeds: Vec<SocketAddr> = nodes.iter().map(|(g, _)| g.identity().addr).collect();
    // Unknown key id, and the right key id with the wrong secret.
    let (stranger, _) = member("stranger", ring(2, 7), "127.0.0.1:0", None).await;
    let (forger, _) = member("forger", ring(1, 9), "127.0.0.1:0", None).await;
    stranger.join(seeds.clone()).await.expect("join");
    forger.join(seeds).await.expect("join");
    eventually("drops counted", || {
        let total =
            |f: fn(GossipStats) -> u64| nodes.iter().map(|(g, _)| f(g.stats())).sum::<u64>();
        total(|s| s.dropped_unknown_key) >= 3 && total(|s| s.dropped_bad_seal) >= 3
    })
    .await;
    stranger
        .publish(endpoint("evil", "stranger", 66))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (g, _) in &nodes {
        let names: Vec<String> = g.members().into_iter().map(|m| m.node_id).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!names.iter().any(|n| n == "stranger" || n == "forger"));
        assert!(g.records().is_empty());
    }
    assert_eq!(stranger.members().len(), 1);
}

#[tokio::test]
async fn lost_datagrams_are_repaired_by_anti_entropy() {
    let nodes = cluster(3, Some(3)).await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.members().len() == 3)
    })
    .await;
    for i in 0..30u8 {
        let (g, _) = &nodes[usize::from(i) % 3];
        g.publish(endpoint(&format!("task-{i:02}"), &g.identity().node_id, i))
            .await
            .expect("publish");
    }
    for i in (0..30u8).step_by(4) {
        let (g, _) = &nodes[usize::from(i) % 3];
        g.withdraw(endpoint(&format!("task-{i:02}"), "", i).key())
            .await
            .expect("withdraw");
    }
    eventually("identical tables", || {
        let first = nodes[0].0.records();
        first.len() == 22 && nodes.iter().all(|(g, _)| g.records() == first)
    })
    .await;
    assert!(nodes.iter().any(|(g, _)| g.stats().dropped_injected > 0));
}

#[tokio::test]
async fn a_restarted_member_converges_again() {
    let mut nodes = cluster(3, None).await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.members().len() == 3)
    })
    .await;
    nodes[0]
        .0
        .publish(endpoint("task-0", "node-0", 1))
        .await
        .expect("publish");
    nodes[2]
        .0
        .publish(endpoint("task-2", "node-2", 3))
        .await
        .expect("publish");
    eventually("2 records everywhere", || {
        nodes.iter().all(|(g, _)| g.records().len() == 2)
    })
    .await;

    let (old, _) = nodes.pop().expect("third node");
    let (addr, old_incarnation) = (old.identity().addr, old.identity().incarnation);
    old.shutdown().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let restarted = member("node-2", ring(1, 7), &addr.to_string(), None).await;
    assert!(restarted.0.identity().incarnation > old_incarnation);
    restarted
        .0
        .join(vec![nodes[0].0.identity().addr])
        .await
        .expect("join");
    nodes.push(restarted);

    eventually("restarted member sees the cluster and its table", || {
        let g = &nodes[2].0;
        g.members().len() == 3 && g.records() == nodes[0].0.records()
    })
    .await;
    nodes[2]
        .0
        .publish(endpoint("task-new", "node-2", 9))
        .await
        .expect("publish");
    eventually("its new record everywhere", || {
        nodes.iter().all(|(g, _)| g.records().len() == 3)
    })
    .await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.members().len() == 3)
    })
    .await;
}

#[tokio::test]
async fn membership_sync_alone_makes_every_member_know_every_other() {
    // SWIM is silenced (no probes, no periodic gossip or announces, news sent once): each
    // newcomer learns the members the seed knew when it joined, and the earlier members never
    // hear of the later ones from SWIM. Only the sync of the anti-entropy round closes the gaps.
    let n = 8;
    let nodes = cluster_with(n, |config| {
        config.anti_entropy_interval = Duration::from_millis(200);
        config.swim_spreads_membership = false;
    })
    .await;
    let nodes: Vec<Gossip> = nodes.into_iter().map(|(g, _)| g).collect();
    eventually("every member knows all 8", || {
        nodes.iter().all(|g| g.member_count() == n)
    })
    .await;
    let all: Vec<NodeIdentity> = nodes.iter().map(|g| g.identity().clone()).collect();
    for g in &nodes {
        let mut seen = g.members();
        seen.sort_by_key(|m| m.addr);
        let mut expected = all.clone();
        expected.sort_by_key(|m| m.addr);
        assert_eq!(
            seen,
            expected,
            "{} sees exactly the members",
            g.identity().node_id
        );
    }
}

#[tokio::test]
async fn a_gone_nodes_records_are_withdrawn_after_the_grace() {
    let mut nodes = cluster_with(3, |config| {
        config.anti_entropy_interval = Duration::from_millis(200);
        config.gone_node_grace = Duration::from_millis(300);
    })
    .await;
    eventually("3 members everywhere", || {
        nodes.iter().all(|(g, _)| g.member_count() == 3)
    })
    .await;
    let kept = endpoint("task-0", "node-0", 1);
    let orphan = endpoint("task-2", "node-2", 3);
    nodes[0].0.publish(kept.clone()).await.expect("publish");
    nodes[2].0.publish(orphan.clone()).await.expect("publish");
    eventually("both records everywhere", || {
        nodes.iter().all(|(g, _)| g.records().len() == 2)
    })
    .await;

    // node-2 goes away for good without withdrawing its record (its meshd is not coming back).
    let (gone, _) = nodes.pop().expect("third node");
    gone.shutdown().await;
    eventually("its record withdrawn on the survivors", || {
        nodes.iter().all(|(g, _)| g.records() == vec![kept.clone()])
    })
    .await;
    let (_, changes) = &mut nodes[1];
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change);
    }
    assert_eq!(seen.last(), Some(&Change::Remove(orphan)));
}
