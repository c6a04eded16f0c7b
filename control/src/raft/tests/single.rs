//! A one-member group: batching, conflicts, and the state rebuilt from disk after a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mesh_proto::Node;

use super::{config, eventually, node_object};
use crate::raft::RaftNode;
use crate::store::{MemoryStore, Read, Store, StoreError};

const ADDR: &str = "127.0.0.1:1";
const WAIT: Duration = Duration::from_secs(10);

async fn open(dir: &Path) -> anyhow::Result<(RaftNode, Arc<MemoryStore>, Store)> {
    let memory = Arc::new(MemoryStore::new());
    let node = RaftNode::open(config(dir, 1, ADDR), memory.clone()).await?;
    let store = Store::new(memory.clone(), node.proposer());
    Ok((node, memory, store))
}

async fn create_nodes(store: &Store, ids: impl Iterator<Item = usize>) -> anyhow::Result<()> {
    let writes = ids.map(|i| {
        let store = store.clone();
        async move {
            store
                .update(|tx| tx.create(node_object(&format!("n{i}"))))
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result?;
    }
    Ok(())
}

fn count(memory: &MemoryStore) -> usize {
    memory.view(|tx| tx.list::<Node>().len())
}

fn last_index(node: &RaftNode) -> u64 {
    node.raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_refuses_conflicts_and_recovers_from_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, memory, store) = open(dir.path()).await?;
    assert!(!node.is_initialized().await?);
    node.initialize().await?;
    node.initialize().await.context("initialize twice")?;
    let mut leadership = node.leadership();
    tokio::time::timeout(
        WAIT,
        leadership.wait_for(|l| l.is_leader && l.leader_id == Some(1)),
    )
    .await??;

    let before = last_index(&node);
    create_nodes(&store, 0..100).await?;
    let entries = last_index(&node) - before;
    assert_eq!(count(&memory), 100);
    assert!(
        entries < 100,
        "100 concurrent transactions took {entries} entries"
    );

    let n0: Node = store.view(|tx| tx.get("n0")).context("n0 missing")?;
    let (first, second) = tokio::join!(
        store.update(|tx| tx.update(n0.clone())),
        store.update(|tx| tx.update(n0.clone())),
    );
    first?;
    assert!(
        matches!(second, Err(StoreError::Conflict { .. })),
        "{second:?}"
    );
    let version = store
        .view(|tx| tx.get::<Node>("n0"))
        .and_then(|n| n.meta)
        .and_then(|m| m.version);

    node.shutdown().await?;
    assert!(matches!(
        store.update(|tx| tx.create(node_object("late"))).await,
        Err(StoreError::Shutdown)
    ));
    drop((node, store));

    let (node, memory, store) = open(dir.path()).await?;
    assert_eq!(count(&memory), 100, "committed entries re-applied on open");
    let n0 = memory.view(|tx| tx.get::<Node>("n0")).context("n0 lost")?;
    assert_eq!(n0.meta.and_then(|m| m.version), version);
    assert!(node.is_initialized().await?);
    node.initialize().await?;
    create_nodes(&store, 100..101).await?;
    assert_eq!(count(&memory), 101);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_a_snapshot_and_the_log_after_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, _, store) = open(dir.path()).await?;
    node.initialize().await?;
    create_nodes(&store, 0..20).await?;
    let snapshot_index = last_index(&node);
    node.raft().trigger().snapshot().await?;
    let raft = node.raft().clone();
    eventually(WAIT, "snapshot", || {
        let snapshot = raft.metrics().borrow().snapshot;
        async move { snapshot.is_some_and(|s| s.index >= snapshot_index) }
    })
    .await?;
    node.raft().trigger().purge_log(snapshot_index).await?;
    eventually(WAIT, "purge", || {
        let purged = raft.metrics().borrow().purged;
        async move { purged.is_some_and(|p| p.index >= snapshot_index) }
    })
    .await?;
    create_nodes(&store, 20..30).await?;
    node.shutdown().await?;
    drop((node, store, raft));
    assert!(dir.path().join("snapshot.bin").exists());

    let (node, memory, store) = open(dir.path()).await?;
    assert_eq!(
        count(&memory),
        30,
        "snapshot restored and later entries re-applied"
    );
    node.initialize().await?;
    create_nodes(&store, 30..31).await?;
    assert_eq!(count(&memory), 31);
    node.shutdown().await?;
    Ok(())
}

/// A node whose labels make it about `bytes` long, so that a few writes make a big log.
fn bulky(i: usize, bytes: usize) -> Node {
    Node {
        spec: Some(mesh_proto::NodeSpec {
            annotations: Some(mesh_proto::Annotations {
                name: format!("bulky{i}"),
                labels: [("bulk".to_string(), "x".repeat(bytes))].into(),
            }),
            ..Default::default()
        }),
        ..node_object(&format!("b{i}"))
    }
}

/// Writes of a few large entries (far fewer than the entry-count policy's 10,000) build a
/// snapshot once the log has grown past `snapshot_log_bytes`; with the bound out of reach, the
/// same writes build none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_grown_past_its_byte_bound_is_snapshotted() -> anyhow::Result<()> {
    for (limit, expected) in [(256 * 1024, true), (u64::MAX, false)] {
        let dir = tempfile::tempdir()?;
        let memory = Arc::new(MemoryStore::new());
        let config = crate::raft::RaftConfig {
            snapshot_log_bytes: limit,
            ..config(dir.path(), 1, ADDR)
        };
        let node = RaftNode::open(config, memory.clone()).await?;
        let store = Store::new(memory.clone(), node.proposer());
        node.initialize().await?;
        for i in 0..40 {
            store.update(|tx| tx.create(bulky(i, 16 * 1024))).await?;
        }
        let entries = last_index(&node);
        assert!(
            entries < 100,
            "{entries} entries: far below the entry-count policy"
        );
        let raft = node.raft().clone();
        let built = eventually(Duration::from_secs(4), "a snapshot", || {
            let snapshot = raft.metrics().borrow().snapshot;
            async move { snapshot.is_some() }
        })
        .await;
        assert_eq!(built.is_ok(), expected, "bound {limit}: {built:?}");
        node.shutdown().await?;
        if expected {
            assert!(dir.path().join("snapshot.bin").exists());
        }
    }
    Ok(())
}
