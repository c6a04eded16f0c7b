//! What the gossip fuzz targets drive: a whole member (the driver as `meshd` runs it, on a
//! loopback socket) handed one datagram, and the seeds that start their corpora. Compiled only
//! with the `fuzzing` feature.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use foca::{AccumulatingRuntime, Member, State};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::driver::{Driver, swim};
use super::identity::NodeIdentity;
use super::membership::{ActiveMembers, MemberDigest, encode_members};
use super::node::{Counters, GossipConfig};
use super::records::{EndpointRecord, IngressPort, RecordKey, RecordTable};
use super::seal::{KeyRing, SEAL_VERSION, SealKey};
use super::wire::{self, RecordBroadcasts, Shared, SyncMessage};

/// The member every input is addressed to.
const SELF_NODE: &str = "fuzz-self";
/// The peer the seeds come from.
const PEER_NODE: &str = "fuzz-peer";
/// Record times: fixed, so that the table's state does not depend on when a seed was made.
const NOW_MS: u64 = 1_700_000_000_000;

fn self_identity() -> NodeIdentity {
    NodeIdentity {
        node_id: SELF_NODE.into(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7946)),
        incarnation: 1,
    }
}

fn peer_identity() -> NodeIdentity {
    NodeIdentity {
        node_id: PEER_NODE.into(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7947)),
        incarnation: 1,
    }
}

/// The cluster key the targets and the seeds share: a fixed test key, never a real one.
pub(crate) fn test_keys() -> KeyRing {
    KeyRing::new(SealKey {
        id: 7,
        secret: [0x5a; 32],
    })
}

fn record(node: &str, task: &str, last: u8) -> EndpointRecord {
    EndpointRecord {
        network_id: "net-1".into(),
        task_id: task.into(),
        service_id: "svc-1".into(),
        addr: Ipv4Addr::new(10, 0, 1, last),
        mac: [2, 0, 0, 0, 0, last],
        node_id: node.into(),
        vtep: Ipv4Addr::new(192, 168, 1, last),
        service_name: "web".into(),
        vip: Some(Ipv4Addr::new(10, 0, 1, 2)),
        ingress_ports: vec![IngressPort {
            udp: false,
            published: 8080,
            target: 80,
        }],
        aliases: Vec::new(),
    }
}

/// The table a fuzzed member starts with: a record of its own and one of the peer's, so that
/// digests, wants and death certificates meet something.
fn table() -> RecordTable {
    let mut table = RecordTable::new(SELF_NODE, 600_000);
    table.upsert_local(record(SELF_NODE, "task-self", 5), NOW_MS);
    table.merge_remote(
        [super::records::VersionedRecord {
            record: record(PEER_NODE, "task-peer", 6),
            version: super::records::Version {
                lamport: NOW_MS,
                origin: PEER_NODE.into(),
            },
            tombstone: false,
        }],
        NOW_MS,
    );
    table
}

/// Hands `datagram`, as received from a peer on 7946/udp, to a fresh member: opened under
/// [`test_keys`], parsed, then merged into its tables or given to SWIM, and whatever it answers
/// sent (to its own loopback socket). Returns whether the datagram opened.
pub(crate) fn receive(datagram: &[u8]) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else {
            return false;
        };
        let Ok(local) = socket.local_addr() else {
            return false;
        };
        let me = self_identity();
        let config = GossipConfig::new(SELF_NODE, me.addr, test_keys());
        let shared = Arc::new(Mutex::new(Shared {
            table: table(),
            members: ActiveMembers::new(me.clone()),
        }));
        let keys = Arc::new(Mutex::new(test_keys()));
        let counters = Arc::new(Counters::default());
        let (changes, _changes) = mpsc::unbounded_channel();
        let mut driver = Driver::new(me, &config, socket, shared, keys, counters.clone(), changes);
        driver.on_datagram(datagram, local).await;
        driver.flush().await;
        let bad = counters
            .dropped_bad_seal
            .load(std::sync::atomic::Ordering::Relaxed)
            + counters
                .dropped_unknown_key
                .load(std::sync::atomic::Ordering::Relaxed);
        bad == 0
    })
}

/// Plaintext frames as a peer sends them: SWIM packets addressed to the fuzzed member (an
/// announce, and a gossip carrying a record), and every anti-entropy message.
pub(crate) fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let me = self_identity();
    let peer = peer_identity();
    let config = GossipConfig::new(PEER_NODE, peer.addr, test_keys());
    let handler = |node: &str| {
        let (changes, _) = mpsc::unbounded_channel();
        RecordBroadcasts {
            shared: Arc::new(Mutex::new(Shared {
                table: RecordTable::new(node, 600_000),
                members: ActiveMembers::new(self_identity()),
            })),
            changes,
        }
    };
    let mut peer_swim = swim(peer.clone(), &config, handler(PEER_NODE));
    let mut self_swim = swim(me.clone(), &config, handler(SELF_NODE));
    let mut to_self = AccumulatingRuntime::new();
    let mut to_peer = AccumulatingRuntime::new();
    if peer_swim.announce(me.clone(), &mut to_self).is_ok()
        && let Some((_, announce)) = to_self.to_send()
    {
        seeds.push(("swim-announce".into(), wire::foca_frame(&announce)));
        // The fuzzed member's answer makes the peer know it, so the peer gossips to it.
        if self_swim.handle_data(&announce, &mut to_peer).is_ok() {
            while let Some((_, feed)) = to_peer.to_send() {
                let _ = peer_swim.handle_data(&feed, &mut to_self);
            }
        }
    }
    let mut published = RecordTable::new(PEER_NODE, 600_000);
    let versioned = published.upsert_local(record(PEER_NODE, "task-new", 9), NOW_MS + 1);
    if let Ok(data) = wire::encode_broadcast(&versioned)
        && peer_swim.add_broadcast(&data).is_ok()
        && peer_swim.broadcast(&mut to_self).is_ok()
    {
        while let Some((dst, packet)) = to_self.to_send() {
            if dst.addr == me.addr {
                seeds.push(("swim-gossip-record".into(), wire::foca_frame(&packet)));
                break;
            }
        }
    }

    let mut table = table();
    table.upsert_local(record(SELF_NODE, "task-other", 7), NOW_MS + 2);
    let tombstone = table.remove_local(
        &RecordKey {
            network_id: "net-1".into(),
            task_id: "task-other".into(),
        },
        NOW_MS + 3,
    );
    let mut messages = vec![
        ("sync-digest", SyncMessage::Digest(table.digest())),
        (
            "sync-records",
            SyncMessage::Records(table.entries().cloned().chain(tombstone).collect()),
        ),
        (
            "sync-want",
            SyncMessage::Want(table.entries().map(|e| e.record.key()).collect()),
        ),
        (
            "sync-member-digest",
            SyncMessage::MemberDigest(MemberDigest::of([&me, &peer])),
        ),
    ];
    // The buckets where a digest of the peer alone and one of both members differ.
    let wanted = MemberDigest::of([&peer]).differing(&MemberDigest::of([&me, &peer]));
    messages.push(("sync-member-want", SyncMessage::MemberWant(wanted)));
    for (name, message) in messages {
        if let Ok(frame) = wire::sync_frame(&message) {
            seeds.push((name.into(), frame));
        }
    }
    let members = [
        Member::alive(peer.clone()),
        Member::new(me, 2, State::Suspect),
        Member::down(NodeIdentity {
            incarnation: 0,
            ..peer
        }),
    ];
    for body in encode_members(&members, 1000) {
        seeds.push(("members".into(), wire::members_frame(&body)));
    }
    seeds
}

/// Sealed datagrams: every frame seed sealed under [`test_keys`], and some that must not open
/// (another key, another seal version, too short).
pub(crate) fn datagram_seeds() -> Vec<(String, Vec<u8>)> {
    let keys = test_keys();
    let mut seeds: Vec<(String, Vec<u8>)> = frame_seeds()
        .into_iter()
        .filter_map(|(name, frame)| Some((format!("sealed-{name}"), keys.seal(&frame).ok()?)))
        .collect();
    let other = KeyRing::new(SealKey {
        id: 8,
        secret: [0x33; 32],
    });
    if let Ok(sealed) = other.seal(&wire::foca_frame(b"")) {
        seeds.push(("unknown-key".into(), sealed));
    }
    if let Some((_, mut sealed)) = seeds.first().cloned() {
        sealed[0] = SEAL_VERSION.wrapping_add(1);
        seeds.push(("bad-version".into(), sealed.clone()));
        sealed[0] = SEAL_VERSION;
        if let Some(last) = sealed.last_mut() {
            *last ^= 1;
        }
        seeds.push(("bad-tag".into(), sealed.clone()));
        sealed.truncate(10);
        seeds.push(("too-short".into(), sealed));
    }
    seeds
}
