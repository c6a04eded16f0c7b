//! A three-member group over real gRPC: snapshot transfer to joining members, replication, a
//! follower's refusal naming the leader, and a new leader after the leader stops.

use std::time::Duration;

use mesh_proto::Node;

use super::{TestNode, eventually, node_object};
use crate::store::{Read, Store, StoreError};

const WAIT: Duration = Duration::from_secs(15);

async fn create(store: &Store, id: &str) -> Result<(), StoreError> {
    store.update(|tx| tx.create(node_object(id))).await
}

fn has(node: &TestNode, id: &str) -> bool {
    node.memory.view(|tx| tx.get::<Node>(id).is_some())
}

async fn replicated(nodes: &[&TestNode], id: &str) -> anyhow::Result<()> {
    for node in nodes {
        eventually(WAIT, id, || async { has(node, id) }).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_replicate_and_fail_over() -> anyhow::Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let n1 = TestNode::start(dirs[0].path(), 1).await?;
    n1.node.initialize().await?;

    // History the others can only get by snapshot: the log before it is purged.
    for i in 0..10 {
        create(&n1.store, &format!("early{i}")).await?;
    }
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

    let n2 = TestNode::start(dirs[1].path(), 2).await?;
    let n3 = TestNode::start(dirs[2].path(), 3).await?;
    n1.node.add_voter(2, n2.addr.clone()).await?;
    n1.node.add_voter(3, n3.addr.clone()).await?;
    let voters: Vec<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
    replicated(&[&n2, &n3], "early9").await?;

    create(&n1.store, "a").await?;
    replicated(&[&n2, &n3], "a").await?;
    let mut leadership = n2.node.leadership();
    tokio::time::timeout(WAIT, leadership.wait_for(|l| l.leader_id == Some(1))).await??;
    match create(&n2.store, "b").await {
        Err(StoreError::NotLeader { leader }) => assert_eq!(leader, Some(n1.addr.clone())),
        other => anyhow::bail!("a follower accepted a write: {other:?}"),
    }

    n1.stop().await?;
    drop(raft);
    tokio::time::timeout(
        WAIT,
        leadership.wait_for(|l| matches!(l.leader_id, Some(2 | 3))),
    )
    .await??;
    let leader_id = leadership.borrow().leader_id;
    let (leader, follower) = if leader_id == Some(2) {
        (&n2, &n3)
    } else {
        (&n3, &n2)
    };
    create(&leader.store, "c").await?;
    replicated(&[follower], "c").await?;

    leader.node.remove_voter(1).await?;
    let voters: Vec<u64> = leader
        .node
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .voter_ids()
        .collect();
    assert!(!voters.contains(&1), "{voters:?}");
    create(&leader.store, "d").await?;
    replicated(&[follower], "d").await?;

    n2.stop().await?;
    n3.stop().await?;
    Ok(())
}

/// A Vote for term `term` from candidate `candidate`, as a peer would send it.
fn vote_payload(term: u64, candidate: u64) -> Vec<u8> {
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(term, candidate),
        last_log_id: None,
    };
    serde_json::to_vec(&vote).expect("vote encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_from_anyone_but_the_member_it_names_changes_nothing() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let n1 = TestNode::start(dirs[0].path(), 1).await?;
    n1.node.initialize().await?;
    let n2 = TestNode::start(dirs[1].path(), 2).await?;
    n1.node.add_voter(2, n2.addr.clone()).await?;
    create(&n1.store, "a").await?;
    replicated(&[&n2], "a").await?;
    let term = |n: &TestNode| n.node.raft().metrics().borrow().current_term;
    let before = (term(&n1), term(&n2));

    // (whose certificate, naming which raft id, claiming to be which candidate)
    let attempts = [
        ("a stranger's raft id", 9, 9, 9),
        ("another member's raft id", 2, 2, 1),
        ("a certificate without a raft id", 2, 0, 2),
    ];
    for (what, node, raft_id, candidate) in attempts {
        let identity = if raft_id == 0 {
            super::worker_identity(node)
        } else {
            super::manager_identity(node, raft_id)
        };
        for target in [&n1, &n2] {
            let channel = crate::ca::connect(&target.addr, &identity).await?;
            let refused = mesh_proto::raft_client::RaftClient::new(channel)
                .vote(mesh_proto::RaftPayload {
                    data: vote_payload(before.0 + 100, candidate),
                })
                .await
                .expect_err(what);
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}");
        }
    }
    // A member speaking for itself is heard (and refused a vote for a stale term only by Raft).
    let channel = crate::ca::connect(&n2.addr, &super::manager_identity(1, 1)).await?;
    mesh_proto::raft_client::RaftClient::new(channel)
        .vote(mesh_proto::RaftPayload {
            data: vote_payload(0, 1),
        })
        .await?;

    assert_eq!(
        (term(&n1), term(&n2)),
        before,
        "no refused message moved a term"
    );
    let leader = n2.node.raft().metrics().borrow().current_leader;
    assert_eq!(leader, Some(1));
    create(&n1.store, "b").await?;
    replicated(&[&n2], "b").await?;
    n1.stop().await?;
    n2.stop().await?;
    Ok(())
}
