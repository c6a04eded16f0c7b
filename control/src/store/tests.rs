//! The store's read merging, its batch measure and its transaction size backstop.

use mesh_proto::{ContainerSpec, Node, Task, TaskSpec, TaskState};
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

/// The batch counts objects, not writes: one written twice counts once, one created and deleted
/// in the same transaction not at all.
#[tokio::test]
async fn a_batch_counts_the_objects_written() {
    let store = direct_store();
    let (tx, ()) = store
        .memory()
        .write_tx(|tx| {
            for i in 0..BATCH_WRITES - 1 {
                tx.create(node(&format!("n{i}"), "h"))?;
            }
            let first = tx.get::<Node>("n0").expect("n0");
            tx.update(Node {
                description: node("n0", "again").description,
                ..first
            })?;
            tx.create(node("gone", "h"))?;
            tx.delete::<Node>("gone")?;
            assert!(!tx.is_full(), "{} objects", BATCH_WRITES - 1);
            tx.create(node("last", "h"))?;
            assert!(tx.is_full());
            Ok(())
        })
        .expect("write");
    assert_eq!(tx.actions.len(), BATCH_WRITES);
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

fn placed(id: &str, service: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        ..Default::default()
    }
}

fn task_ids(tasks: Vec<&Task>) -> Vec<&str> {
    tasks.into_iter().map(|t| t.id.as_str()).collect()
}

#[tokio::test]
async fn tasks_are_read_by_service_and_node_through_the_index() {
    let store = direct_store();
    store
        .update(|tx| {
            tx.create(placed("t3", "s1", "n1"))?;
            tx.create(placed("t1", "s1", ""))?;
            tx.create(placed("t2", "s2", "n1"))?;
            tx.create(placed("t4", "s1", "n2"))
        })
        .await
        .expect("create");
    // Moved to another node, changed in place, and deleted: the index follows.
    store
        .update(|tx| {
            let t1 = tx.get::<Task>("t1").expect("t1");
            tx.update(Task {
                node_id: "n2".into(),
                ..t1
            })?;
            let t3 = tx.get::<Task>("t3").expect("t3");
            tx.update(Task {
                desired_state: TaskState::Shutdown as i32,
                ..t3
            })?;
            tx.delete::<Task>("t4")
        })
        .await
        .expect("update");
    // The index hands out each task as it is now, not as it was when first indexed.
    store.view(|tx| {
        let desired = |tasks: Vec<&Task>| -> Vec<(String, i32)> {
            tasks
                .into_iter()
                .map(|t| (t.id.clone(), t.desired_state))
                .collect()
        };
        let shutdown = TaskState::Shutdown as i32;
        assert_eq!(
            desired(tx.tasks_of_service("s1")),
            [("t1".to_string(), 0), ("t3".to_string(), shutdown)]
        );
        assert_eq!(
            desired(tx.tasks_on_node("n1")),
            [("t2".to_string(), 0), ("t3".to_string(), shutdown)]
        );
        assert_eq!(desired(tx.tasks_on_node("n2")), [("t1".to_string(), 0)]);
    });
    let check = |tx: &dyn Fn(&str, &str) -> Vec<String>| {
        let cases: [(&str, &str, &[&str]); 6] = [
            ("service", "s1", &["t1", "t3"]),
            ("service", "s2", &["t2"]),
            ("service", "none", &[]),
            ("node", "n1", &["t2", "t3"]),
            ("node", "n2", &["t1"]),
            ("node", "", &[]),
        ];
        for (by, key, want) in cases {
            assert_eq!(tx(by, key), want, "{by} {key:?}");
        }
    };
    store.view(|tx| {
        check(&|by, key| {
            let tasks = match by {
                "service" => tx.tasks_of_service(key),
                _ => tx.tasks_on_node(key),
            };
            task_ids(tasks).into_iter().map(String::from).collect()
        })
    });
    // A snapshot restored rebuilds the index.
    let restored = MemoryStore::new();
    let encoded = store.memory().snapshot().encode_to_vec();
    restored.restore(Tables::decode(&encoded).expect("decoded"));
    restored.view(|tx| {
        check(&|by, key| {
            let tasks = match by {
                "service" => tx.tasks_of_service(key),
                _ => tx.tasks_on_node(key),
            };
            task_ids(tasks).into_iter().map(String::from).collect()
        })
    });
    // A write reads the index merged with its own changes.
    store
        .memory()
        .write_tx(|tx| {
            tx.create(placed("t0", "s1", "n1"))?;
            let t3 = tx.get::<Task>("t3").expect("t3");
            tx.update(Task {
                node_id: "n2".into(),
                ..t3
            })?;
            tx.delete::<Task>("t2")?;
            assert_eq!(task_ids(tx.tasks_of_service("s1")), ["t0", "t1", "t3"]);
            assert_eq!(task_ids(tx.tasks_of_service("s2")), Vec::<&str>::new());
            assert_eq!(task_ids(tx.tasks_on_node("n1")), ["t0"]);
            assert_eq!(task_ids(tx.tasks_on_node("n2")), ["t1", "t3"]);
            Ok(())
        })
        .expect("read");
}

#[test]
fn a_view_tells_the_index_of_the_last_entry_it_holds() {
    let memory = MemoryStore::new();
    assert_eq!(memory.view_at(|_| ()).0, 0);
    let tx = memory
        .write_tx(|tx| tx.create(placed("t1", "s1", "n1")))
        .expect("write")
        .0;
    memory.apply(
        7,
        mesh_proto::Proposal {
            transactions: vec![tx],
        },
    );
    assert_eq!(memory.view_at(|tx| tx.tasks_on_node("n1").len()), (7, 1));
}

#[test]
fn an_event_holds_the_stored_task_itself_and_the_one_it_replaced() {
    let memory = MemoryStore::new();
    let mut events = memory.watch();
    let apply = |index, tx| {
        memory.apply(
            index,
            mesh_proto::Proposal {
                transactions: vec![tx],
            },
        )
    };
    let stored = || memory.view(|tx| tx.peek::<Task>("t1").map(|t| t as *const Task));
    let mut next_change = || loop {
        match events.try_recv().expect("an event") {
            Event::Commit { .. } => continue,
            event => return event,
        }
    };

    let create = memory.write_tx(|tx| tx.create(placed("t1", "s1", "n1")));
    apply(1, create.expect("create").0);
    let created = next_change();
    let first = stored().expect("stored");
    assert!(std::ptr::eq(created.as_a::<Task>().expect("a task"), first));

    let update = memory.write_tx(|tx| {
        let task = tx.get::<Task>("t1").expect("t1");
        tx.update(Task {
            node_id: "n2".into(),
            ..task
        })
    });
    apply(2, update.expect("update").0);
    let updated = next_change();
    let (old, new) = (
        updated.old_as::<Task>().expect("old"),
        updated.as_a::<Task>().expect("new"),
    );
    assert!(std::ptr::eq(new, stored().expect("stored")));
    assert!(std::ptr::eq(old, first));
    assert_eq!((old.node_id.as_str(), new.node_id.as_str()), ("n1", "n2"));

    let delete = memory.write_tx(|tx| tx.delete::<Task>("t1"));
    apply(3, delete.expect("delete").0);
    let deleted = next_change();
    assert!(deleted.is_delete());
    assert!(std::ptr::eq(deleted.as_a::<Task>().expect("a task"), new));
    assert_eq!(stored(), None);
}

/// Everything `memory` holds, as one snapshot message.
fn whole(memory: &MemoryStore) -> mesh_proto::StoreSnapshot {
    memory.view(|tx| mesh_proto::StoreSnapshot {
        nodes: tx.list(),
        services: tx.list(),
        tasks: tx.list(),
        clusters: tx.list(),
        networks: tx.list(),
        secrets: tx.list(),
        configs: tx.list(),
    })
}

#[tokio::test]
async fn a_snapshot_encodes_as_the_store_snapshot_message_and_keeps_its_moment() {
    use mesh_proto::{Cluster, Config, Network, Secret, Service, StoreSnapshot};
    let store = direct_store();
    let named = |id: &str| id.to_string();
    store
        .update(|tx| {
            tx.create(node("n1", "one"))?;
            tx.create(node("n2", "two"))?;
            tx.create(Service {
                id: named("s1"),
                ..Default::default()
            })?;
            tx.create(placed("t1", "s1", "n1"))?;
            tx.create(placed("t2", "s1", "n2"))?;
            tx.create(Cluster {
                id: named("c1"),
                ..Default::default()
            })?;
            tx.create(Network {
                id: named("w1"),
                ..Default::default()
            })?;
            tx.create(Secret {
                id: named("x1"),
                ..Default::default()
            })?;
            tx.create(Config {
                id: named("g1"),
                ..Default::default()
            })
        })
        .await
        .expect("created");
    let taken = store.memory().snapshot();
    let whole = whole(store.memory());
    assert_eq!(taken.encode_to_vec(), whole.encode_to_vec());
    assert_eq!(taken.encoded_len(), whole.encoded_len());
    // Writes after it leave it as it was taken.
    store
        .update(|tx| {
            tx.delete::<Task>("t1")?;
            let mut t2 = tx.get::<Task>("t2").expect("t2");
            t2.node_id = named("n1");
            tx.update(t2)
        })
        .await
        .expect("changed");
    let decoded = StoreSnapshot::decode(taken.encode_to_vec().as_slice()).expect("decoded");
    assert_eq!(decoded, whole);
}

#[tokio::test]
async fn tables_decode_a_snapshot_as_prost_decodes_the_message() {
    use mesh_proto::{Service, StoreSnapshot};
    let store = direct_store();
    store
        .update(|tx| {
            tx.create(node("n1", "one"))?;
            tx.create(Service {
                id: "s1".into(),
                ..Default::default()
            })?;
            tx.create(placed("t1", "s1", "n1"))?;
            tx.create(placed("t2", "s1", "n2"))
        })
        .await
        .expect("created");
    let encoded = store.memory().snapshot().encode_to_vec();
    // A field a later version might add is skipped.
    let mut later = encoded.clone();
    prost::encoding::string::encode(99, &"later".to_string(), &mut later);

    let restored = MemoryStore::new();
    restored.restore(Tables::decode(&later).expect("decoded"));
    assert_eq!(whole(&restored), whole(store.memory()));
    assert_eq!(
        whole(&restored),
        StoreSnapshot::decode(later.as_slice()).expect("prost decodes it")
    );
    assert_eq!(restored.view(|tx| tx.tasks_on_node("n2").len()), 1);
    // Cut inside its last object: refused, as prost refuses it.
    let cut = &encoded[..encoded.len() - 1];
    assert!(StoreSnapshot::decode(cut).is_err());
    assert!(Tables::decode(cut).is_err());
}

/// The counts the store keeps match a count of every task after creates, state changes,
/// moves between services, desired-state changes, deletes and a restore.
#[tokio::test]
async fn the_task_counts_follow_every_write() {
    use mesh_proto::{TaskState, TaskStatus};
    let store = direct_store();
    let recount = |store: &Store| store.view(|tx| TaskCounts::of(tx.iter::<Task>()));
    let kept = |store: &Store| store.view(|tx| tx.task_counts().clone());
    let with = |id: &str, service: &str, desired: TaskState, state: TaskState| Task {
        id: id.into(),
        service_id: service.into(),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    use TaskState::{Assigned, New, Running, Shutdown};
    store
        .update(|tx| {
            tx.create(with("t1", "s1", Running, Running))?;
            tx.create(with("t2", "s1", Running, Assigned))?;
            tx.create(with("t3", "s2", Running, Running))?;
            tx.create(with("t4", "s2", Shutdown, Running))?;
            tx.create(Task {
                id: "t5".into(),
                service_id: "s2".into(),
                ..Default::default()
            })
        })
        .await
        .expect("created");
    let counts = kept(&store);
    assert_eq!(counts, recount(&store));
    assert_eq!(
        counts.by_service["s1"],
        ServiceTasks {
            wanted: 2,
            running: 1
        }
    );
    assert_eq!(counts.by_state[&(New as i32)], 1, "no status is new");
    // Replaces the stored task of the same id.
    fn put(tx: &mut WriteTx<'_>, mut task: Task) -> Result<(), StoreError> {
        task.meta = tx.peek::<Task>(&task.id).and_then(|t| t.meta);
        tx.update(task)
    }
    type Step<'a> = dyn Fn(&mut WriteTx<'_>) -> Result<(), StoreError> + 'a;
    let steps: [&Step<'_>; 4] = [
        // t2 runs; t1 is told to stop.
        &|tx| {
            put(tx, with("t2", "s1", Running, Running))?;
            put(tx, with("t1", "s1", Shutdown, Running))
        },
        // t3 moves to another service (as no writer does, but the counts must not care).
        &|tx| put(tx, with("t3", "s3", Running, Running)),
        // Deletes, of one wanted running and of one not.
        &|tx| {
            tx.delete::<Task>("t2")?;
            tx.delete::<Task>("t4")
        },
        &|tx| tx.delete::<Task>("t1"),
    ];
    for step in steps {
        store.update(step).await.expect("written");
        assert_eq!(kept(&store), recount(&store));
    }
    let counts = kept(&store);
    assert!(!counts.by_service.contains_key("s1"), "{counts:?}");
    assert_eq!(
        counts.by_state.get(&(Assigned as i32)),
        None,
        "no zero left"
    );
    // A restored store counts what it restored.
    let restored = MemoryStore::new();
    let encoded = store.memory().snapshot().encode_to_vec();
    restored.restore(Tables::decode(&encoded).expect("decoded"));
    assert_eq!(restored.view(|tx| tx.task_counts().clone()), counts);
}

/// The nodes' stamp moves with every write of a node (created, changed, deleted) and with a
/// restore, and stays through writes of other objects; a write changing nodes has none.
#[tokio::test]
async fn the_nodes_stamp_moves_only_with_the_nodes() {
    let store = direct_store();
    let stamp = |memory: &MemoryStore| memory.view(|tx| tx.nodes_stamp()).expect("a read has one");
    let mut seen = vec![stamp(store.memory())];
    let mut moved = |now: u64, what: &str| {
        assert!(!seen.contains(&now), "{what}: {now} seen before ({seen:?})");
        seen.push(now);
    };
    store
        .update(|tx| tx.create(node("n1", "a")))
        .await
        .expect("create");
    moved(stamp(store.memory()), "created");
    let before = stamp(store.memory());
    store
        .update(|tx| tx.create(placed("t1", "s1", "n1")))
        .await
        .expect("task");
    assert_eq!(
        stamp(store.memory()),
        before,
        "a task's write leaves the nodes' stamp"
    );
    store
        .update(|tx| {
            let n1 = tx.get::<Node>("n1").expect("n1");
            tx.update(Node {
                description: node("n1", "b").description,
                ..n1
            })
        })
        .await
        .expect("update");
    moved(stamp(store.memory()), "changed");
    let restored = MemoryStore::new();
    let encoded = store.memory().snapshot().encode_to_vec();
    restored.restore(Tables::decode(&encoded).expect("decoded"));
    moved(stamp(&restored), "restored");
    let current = stamp(store.memory());
    store
        .memory()
        .write_tx(|tx| {
            assert_eq!(tx.nodes_stamp(), Some(current), "nothing written yet");
            tx.delete::<Node>("n1")?;
            assert_eq!(tx.nodes_stamp(), None, "a write changing nodes");
            Ok(())
        })
        .expect("delete");
    store
        .update(|tx| tx.delete::<Node>("n1"))
        .await
        .expect("delete");
    moved(stamp(store.memory()), "deleted");
}
