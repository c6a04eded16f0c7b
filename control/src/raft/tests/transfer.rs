//! What travels between members stays within the message limits: a snapshot goes in chunks a
//! follower accepts (one of several MiB reaches a member that joins after the log was purged),
//! and the largest entry a leader can send fits the receiving service's decoding limit.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mesh_proto::{
    Annotations, Config, ConfigSpec, Node, NodeSpec, Proposal, StoreAction, Transaction,
    store_action,
};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
};
use prost::Message;

use super::{TestNode, eventually};
use crate::limits::MAX_TX_BYTES;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::raft::node::SNAPSHOT_CHUNK_BYTES;
use crate::raft::proposer::MAX_BATCH_BYTES;
use crate::raft::server::MAX_REQUEST_BYTES;
use crate::store::Read;

const WAIT: Duration = Duration::from_secs(60);
const NODES: usize = 4000;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(7, 1), index)
}

#[test]
fn a_snapshot_chunk_encodes_under_the_message_limit() {
    // Bytes of 255 are the longest in JSON ("255,"): the worst a chunk can be.
    let chunk = InstallSnapshotRequest::<super::TypeConfig> {
        vote: Vote::new_committed(7, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(123_456)),
            last_membership: StoredMembership::default(),
            snapshot_id: "7-1-123456-0".into(),
        },
        offset: 3 * SNAPSHOT_CHUNK_BYTES,
        data: vec![255; SNAPSHOT_CHUNK_BYTES as usize],
        done: false,
    };
    let bytes = serde_json::to_vec(&chunk).expect("encodes").len();
    assert!(bytes <= MAX_MESSAGE_BYTES, "a chunk is {bytes} bytes");
}

/// A config whose name and data are `bytes` long, of the characters JSON spells longest.
fn bulky_config(id: &str, bytes: usize) -> StoreAction {
    StoreAction {
        kind: 0,
        target: Some(store_action::Target::Config(Config {
            id: id.into(),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "\u{1}".repeat(bytes / 2),
                    labels: HashMap::new(),
                }),
                data: vec![255; bytes / 2],
            }),
            ..Default::default()
        })),
    }
}

#[test]
fn the_largest_entry_fits_the_receivers_limit() {
    // An entry holds the transactions queued up to the batch size, plus one more of up to the
    // transaction limit.
    let batch = Transaction {
        actions: vec![bulky_config("batched", MAX_BATCH_BYTES)],
    };
    let last = Transaction {
        actions: vec![bulky_config("last", MAX_TX_BYTES - 64)],
    };
    assert!(last.encoded_len() <= MAX_TX_BYTES);
    let proposal = Proposal {
        transactions: vec![batch, last],
    };
    let request = AppendEntriesRequest::<super::TypeConfig> {
        vote: Vote::new_committed(7, 1),
        prev_log_id: Some(log_id(41)),
        entries: vec![Entry {
            log_id: log_id(42),
            payload: EntryPayload::Normal(proposal),
        }],
        leader_commit: Some(log_id(41)),
    };
    let bytes = serde_json::to_vec(&request).expect("encodes").len();
    assert!(
        bytes > MAX_MESSAGE_BYTES,
        "the test entry is above the split size"
    );
    assert!(bytes <= MAX_REQUEST_BYTES, "the entry is {bytes} bytes");
}

/// A node whose label holds 1 KiB that does not compress: a snapshot of these is as large as it
/// looks.
fn bulky_node(i: usize) -> Node {
    let value: String = (0..128)
        .map(|k| format!("{:08x}", (i * 131 + k).wrapping_mul(2_654_435_761) as u32))
        .collect();
    Node {
        id: format!("bulk{i:05}"),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: format!("bulk{i}"),
                labels: HashMap::from([("bulk".to_string(), value)]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_catches_up_from_a_snapshot_of_many_chunks() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let n1 = TestNode::start(dirs[0].path(), 1).await?;
    n1.node.initialize().await?;
    for batch in (0..NODES).collect::<Vec<_>>().chunks(200) {
        n1.store
            .update(|tx| batch.iter().try_for_each(|i| tx.create(bulky_node(*i))))
            .await?;
    }
    let size = n1.memory.snapshot().encoded_len();
    let chunks = size.div_ceil(SNAPSHOT_CHUNK_BYTES as usize);
    assert!(chunks >= 8, "the snapshot is {size} bytes: {chunks} chunks");

    let raft = n1.node.raft().clone();
    let index = raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
        .unwrap_or_default();
    raft.trigger().snapshot().await?;
    eventually(WAIT, "snapshot", || {
        let snapshot = raft.metrics().borrow().snapshot;
        async move { snapshot.is_some_and(|s| s.index >= index) }
    })
    .await?;
    raft.trigger().purge_log(index).await?;
    eventually(WAIT, "purge", || {
        let purged = raft.metrics().borrow().purged;
        async move { purged.is_some_and(|p| p.index >= index) }
    })
    .await?;

    // The log before the snapshot is gone: the new member can only get it in chunks.
    let n2 = TestNode::start(dirs[1].path(), 2).await?;
    n1.node.add_voter(2, n2.addr.clone()).await?;
    eventually(WAIT, "every node on the new member", || async {
        n2.memory.view(|tx| tx.iter::<Node>().count()) == NODES
    })
    .await?;
    let on = |n: &TestNode| {
        n.memory
            .view(|tx| tx.list::<Node>().into_iter().map(|n| (n.id.clone(), n)))
            .collect::<BTreeMap<_, _>>()
    };
    assert!(
        on(&n1) == on(&n2),
        "the new member holds what the leader holds"
    );
    let installed = n2.node.raft().metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index >= index),
        "it came as a snapshot: {installed:?}"
    );
    n2.stop().await?;
    n1.stop().await?;
    Ok(())
}
