//! The store's read merging, its batch measure and its transaction size backstop.

use mesh_proto::{ContainerSpec, Node, Task, TaskSpec};
use prost::Message;

use super::*;
use crate::limits::{BATCH_WRITES, MAX_TX_BYTES};

fn node(id: &str, hostname: &str) -> Node {
    Node {
        id: id.into(),
        description: Some(mesh_proto::NodeDescription {
            hostname: hostname.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hostnames<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<(String, String)> {
    nodes
        .map(|n| {
            let host = n.description.as_ref().map(|d| d.hostname.clone());
            (n.id.clone(), host.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn a_write_reads_the_store_merged_with_its_changes_in_id_order() {
    let store = direct_store();
    store
        .update(|tx| {
            for id in ["a", "c", "e"] {
                tx.create(node(id, "old"))?;
            }
            Ok(())
        })
        .await
        .expect("create");
    let pair = |id: &str, host: &str| (id.to_string(), host.to_string());
    store
        .memory()
        .write_tx(|tx| {
            tx.create(node("b", "new"))?;
            tx.delete::<Node>("c")?;
            let e = tx.get::<Node>("e").expect("e");
            tx.update(Node {
                description: node("e", "changed").description,
                ..e
            })?;
            tx.create(node("f", "new"))?;
            tx.create(node("0", "new"))?;
            let want = vec![
                pair("0", "new"),
                pair("a", "old"),
                pair("b", "new"),
                pair("e", "changed"),
                pair("f", "new"),
            ];
            assert_eq!(hostnames(tx.iter::<Node>()), want);
            assert_eq!(hostnames(tx.list::<Node>().iter()), want);
            assert!(tx.peek::<Node>("c").is_none());
            assert_eq!(tx.iter::<Task>().count(), 0, "other tables are apart");
            Ok(())
        })
        .expect("write");
    let read = store.view(|tx| hostnames(tx.iter::<Node>()));
    assert_eq!(
        read,
        vec![pair("a", "old"), pair("c", "old"), pair("e", "old")]
    );
}

#[tokio::test]
async fn a_write_is_full_after_a_batch_of_objects_or_bytes() {
    let store = direct_store();
    store
        .memory()
        .write_tx(|tx| {
            for i in 0..BATCH_WRITES {
                assert!(!tx.is_full(), "after {i} writes");
                tx.create(node(&format!("n{i}"), "h"))?;
            }
            assert!(tx.is_full());
            Ok(())
        })
        .expect("count");
    store
        .memory()
        .write_tx(|tx| {
            let big = node("big", &"x".repeat(crate::limits::BATCH_BYTES));
            tx.create(big)?;
            assert!(tx.is_full(), "one object of a batch's bytes");
            Ok(())
        })
        .expect("bytes");
}

fn task_of(id: usize, env_bytes: usize) -> Task {
    Task {
        id: format!("t{id}"),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                env: vec![format!("A={}", "x".repeat(env_bytes))],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_transaction_above_the_limit_is_refused_and_changes_nothing() {
    let store = direct_store();
    store
        .update(|tx| tx.create(task_of(0, 10)))
        .await
        .expect("a small write");
    let before = store.memory().snapshot().encode_to_vec();
    let count = 9;
    let each = MAX_TX_BYTES / 8;
    let err = store
        .update(|tx| {
            for i in 1..=count {
                tx.create(task_of(i, each))?;
            }
            Ok(())
        })
        .await
        .expect_err("refused");
    let StoreError::Limit(LimitError::Transaction { bytes }) = &err else {
        panic!("not the size limit: {err}");
    };
    assert!(
        *bytes > MAX_TX_BYTES && *bytes < count * (each + 100),
        "{bytes}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the change would write {bytes} bytes in one transaction, above the limit of {MAX_TX_BYTES}"
        )
    );
    assert_eq!(
        store.memory().snapshot().encode_to_vec(),
        before,
        "nothing applied"
    );
    // Just under the limit goes through.
    store
        .update(|tx| {
            for i in 1..=count - 2 {
                tx.create(task_of(i, each))?;
            }
            Ok(())
        })
        .await
        .expect("under the limit");
}
