//! Task status reports from agents, checked and written in batches.

use futures::StreamExt;
use mesh_proto::{Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::mpsc;

use crate::limits::{BATCH_WRITES, WRITES_IN_FLIGHT};
use crate::store::{Read, Store, now_nanos};

/// The status reports of one `UpdateTaskStatus` call, with the node that sent them.
pub(super) struct StatusBatch {
    pub node_id: String,
    pub updates: Vec<TaskStatusUpdate>,
}

/// Whether a report from `node_id` may replace the task's current status: only the node the task
/// is assigned to reports on it, and a task's state never moves backwards.
pub fn accept_status(task: &Task, node_id: &str, new: &TaskStatus) -> bool {
    if task.node_id != node_id {
        return false;
    }
    let current = task.status.as_ref();
    let current_state = current.map_or(TaskState::New as i32, |s| s.state);
    if new.state < current_state {
        return false;
    }
    // Same state: accept only when what the agent tells changed (its message, error, container),
    // not its time alone: after reconnecting, every agent sends each task's latest state again,
    // and after a leader's restart at 10,000 nodes those were a million writes of nothing new.
    current.is_none_or(|c| {
        c.state != new.state
            || c.message != new.message
            || c.err != new.err
            || c.container != new.container
    })
}

/// Writes `first` and whatever else is already queued, up to [`WRITES_IN_FLIGHT`] batches of
/// reports ([`BATCH_WRITES`]), in transactions proposed together, a batch of reports each, each
/// within the reconciler batch size ([`WriteTx::is_full`](crate::store::WriteTx::is_full)): an
/// agent's report of a thousand tasks, or many agents' at once, never make one transaction over
/// the limit. Two reports of one task in two transactions conflict in the later one applied,
/// which reads the task again and writes only what is still news ([`accept_status`]).
pub(super) async fn write_batch(
    store: &Store,
    first: StatusBatch,
    queue: &mut mpsc::UnboundedReceiver<StatusBatch>,
) {
    let mut taken = first.updates.len();
    let mut batches = vec![first];
    while taken < BATCH_WRITES * WRITES_IN_FLIGHT {
        match queue.try_recv() {
            Ok(batch) => {
                taken += batch.updates.len();
                batches.push(batch);
            }
            Err(_) => break,
        }
    }
    let reports: Vec<(&str, &TaskStatusUpdate)> = batches
        .iter()
        .flat_map(|b| b.updates.iter().map(move |u| (b.node_id.as_str(), u)))
        .collect();
    // Collected first: a stream over the lazy map would not be provably `Send`.
    let writes: Vec<_> = reports
        .chunks(BATCH_WRITES)
        .map(|reports| async move {
            let mut written = 0;
            while written < reports.len() {
                match write_chunk(store, &reports[written..]).await {
                    Some(count) => written += count,
                    None => return,
                }
            }
        })
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect::<()>()
        .await;
}

/// Writes the reports from the start of `reports` that fit one transaction; how many it took,
/// or `None` when they could not be written (then they are dropped, as logged).
async fn write_chunk(store: &Store, reports: &[(&str, &TaskStatusUpdate)]) -> Option<usize> {
    // A conflict means a reconciler wrote one of the tasks meanwhile: re-read and apply again, for
    // an agent does not repeat a report (a removed task's last one would be lost).
    // A transient Raft error (a leader still settling in) is retried too, for a while.
    use crate::store::StoreError;
    for attempt in 0..50u32 {
        match write_once(store, reports).await {
            Ok(count) => return Some(count),
            // A task changed or was reaped between the read and the apply: read again (a reaped
            // task is skipped then), or the other reports of the batch would be lost with it.
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) if attempt < 10 => {
                continue;
            }
            Err(
                err @ (StoreError::NotLeader { .. } | StoreError::NoQuorum | StoreError::Raft(_)),
            ) => {
                tracing::debug!(error = %err, attempt, "task status batch retried");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not write task status batch");
                return None;
            }
        }
    }
    tracing::warn!("task status batch kept failing; dropped");
    None
}

/// When the task first ran: kept from `current`, or `now` when `new` is its first RUNNING report.
pub fn started_at(current: Option<&TaskStatus>, new: &TaskStatus, now: i64) -> i64 {
    match current.map_or(0, |c| c.started_at) {
        0 if new.state == TaskState::Running as i32 => now,
        kept => kept,
    }
}

/// One transaction of the reports from the start of `reports`, until it is full; returns how
/// many it took (at least one).
async fn write_once(
    store: &Store,
    reports: &[(&str, &TaskStatusUpdate)],
) -> Result<usize, crate::store::StoreError> {
    store
        .update(|tx| {
            let mut taken = 0;
            for (node_id, update) in reports {
                if tx.is_full() {
                    break;
                }
                taken += 1;
                let (Some(stored), Some(status)) =
                    (tx.peek::<Task>(&update.task_id), update.status.as_ref())
                else {
                    continue;
                };
                // Looked at in place, copied only if taken: agents re-send every task's latest
                // state after reconnecting (a million at once after a leader's restart at this
                // size), nearly all of it nothing new.
                if !accept_status(stored, node_id, status) {
                    continue;
                }
                let mut task = stored.clone();
                // Keep the scheduler's reason out of an agent's report; the manager
                // stamps when the task first ran (the update monitor counts from it).
                let started_at = started_at(task.status.as_ref(), status, now_nanos());
                task.status = Some(TaskStatus {
                    scheduling_reason: String::new(),
                    started_at,
                    ..status.clone()
                });
                tracing::debug!(task.id = %task.id, state = status.state, "task status");
                tx.update(task)?;
            }
            Ok(taken)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(node: &str, state: TaskState) -> Task {
        Task {
            node_id: node.into(),
            // As the manager stores it: stamped when first running, the report's time kept.
            status: Some(TaskStatus {
                state: state as i32,
                message: "m".into(),
                timestamp: 5,
                started_at: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(state: TaskState, message: &str) -> TaskStatus {
        TaskStatus {
            state: state as i32,
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_rules() {
        use TaskState::*;
        let cases = [
            // (assigned node, current, reporting node, new, accepted)
            ("n1", Assigned, "n1", status(Accepted, "accepted"), true),
            ("n1", Running, "n1", status(Failed, "exit"), true),
            ("n1", Running, "n1", status(Starting, "late"), false),
            ("n1", Running, "n2", status(Failed, "exit"), false),
            ("n1", Running, "n1", status(Running, "m"), false),
            ("n1", Running, "n1", status(Running, "other"), true),
            // The same again, later (as sent after reconnecting): nothing to write.
            (
                "n1",
                Running,
                "n1",
                TaskStatus {
                    timestamp: 9,
                    ..status(Running, "m")
                },
                false,
            ),
            (
                "n1",
                Running,
                "n1",
                TaskStatus {
                    err: "e".into(),
                    ..status(Running, "m")
                },
                true,
            ),
            (
                "n1",
                Running,
                "n1",
                TaskStatus {
                    container: Some(Default::default()),
                    ..status(Running, "m")
                },
                true,
            ),
        ];
        for (assigned, current, reporter, new, want) in cases {
            let t = task(assigned, current);
            assert_eq!(
                accept_status(&t, reporter, &new),
                want,
                "{assigned} {current:?} <- {reporter} {new:?}"
            );
        }
    }

    #[test]
    fn first_running_report_is_stamped() {
        let at = |state: TaskState, started_at: i64| TaskStatus {
            state: state as i32,
            started_at,
            ..Default::default()
        };
        // (current status, new report, started_at written)
        let cases = [
            (None, at(TaskState::Running, 0), 100),
            (
                Some(at(TaskState::Starting, 0)),
                at(TaskState::Running, 0),
                100,
            ),
            (
                Some(at(TaskState::Starting, 0)),
                at(TaskState::Starting, 0),
                0,
            ),
            (
                Some(at(TaskState::Running, 40)),
                at(TaskState::Running, 0),
                40,
            ),
            (
                Some(at(TaskState::Running, 40)),
                at(TaskState::Failed, 0),
                40,
            ),
            // An agent cannot set it.
            (
                Some(at(TaskState::Starting, 0)),
                at(TaskState::Starting, 7),
                0,
            ),
        ];
        for (current, new, want) in cases {
            assert_eq!(
                started_at(current.as_ref(), &new, 100),
                want,
                "{current:?} <- {new:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_large_report_is_written_in_batches_and_whole() {
        use crate::limits::BATCH_WRITES;
        let store = crate::store::direct_store();
        let count = BATCH_WRITES * 2 + 7;
        store
            .update(|tx| {
                for i in 0..count {
                    tx.create(Task {
                        id: format!("t{i:04}"),
                        ..task("n1", TaskState::Assigned)
                    })?;
                }
                Ok(())
            })
            .await
            .expect("created");
        let entries = crate::store::writes_per_entry(&store);
        let updates = (0..count)
            .map(|i| TaskStatusUpdate {
                task_id: format!("t{i:04}"),
                status: Some(status(TaskState::Accepted, "accepted")),
            })
            .collect();
        let (queue, mut rx) = mpsc::unbounded_channel();
        // Another node's report, queued behind: refused (not its task), and no harm done.
        queue
            .send(StatusBatch {
                node_id: "n2".into(),
                updates: vec![TaskStatusUpdate {
                    task_id: "t0000".into(),
                    status: Some(status(TaskState::Failed, "not mine")),
                }],
            })
            .expect("queued");
        let first = StatusBatch {
            node_id: "n1".into(),
            updates,
        };
        write_batch(&store, first, &mut rx).await;
        let accepted = store.view(|tx| {
            tx.iter::<Task>()
                .filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.state == TaskState::Accepted as i32)
                })
                .count()
        });
        assert_eq!(accepted, count, "every report written");
        // The recorder reads the watch on its own: let it catch up with the last commit.
        let recorded = || entries.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for _ in 0..100 {
            if recorded().iter().sum::<usize>() >= count {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let written = recorded();
        assert_eq!(written, [BATCH_WRITES, BATCH_WRITES, 7], "{written:?}");
    }

    /// Reports queued from many agents are written in several transactions proposed together,
    /// and a task reported twice (in two of them) ends in its later state.
    #[tokio::test]
    async fn queued_reports_are_written_in_transactions_proposed_together() {
        let (store, in_flight) = crate::store::slow_store();
        // Ten tasks a node, and node 0 reports twice: as many reports as one write takes.
        let nodes = BATCH_WRITES * WRITES_IN_FLIGHT / 10 - 1;
        let id = |node: usize, i: usize| format!("t{node:04}-{i}");
        store
            .update_retrying(|tx| {
                for node in 0..nodes {
                    for i in 0..10 {
                        tx.create(Task {
                            id: id(node, i),
                            ..task(&format!("n{node}"), TaskState::Assigned)
                        })?;
                    }
                }
                Ok(())
            })
            .await
            .expect("created");
        let (queue, mut rx) = mpsc::unbounded_channel();
        let report = |node: usize, state: TaskState| StatusBatch {
            node_id: format!("n{node}"),
            updates: (0..10)
                .map(|i| TaskStatusUpdate {
                    task_id: id(node, i),
                    status: Some(status(state, "m")),
                })
                .collect(),
        };
        for node in 1..nodes {
            queue
                .send(report(node, TaskState::Running))
                .expect("queued");
        }
        // Node 0 reports STARTING first and RUNNING last: in the first and the last transaction.
        queue.send(report(0, TaskState::Running)).expect("queued");
        write_batch(&store, report(0, TaskState::Starting), &mut rx).await;

        let running = store.view(|tx| {
            tx.iter::<Task>()
                .filter(|t| t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32))
                .count()
        });
        assert_eq!(running, nodes * 10, "every task running");
        assert!(rx.try_recv().is_err(), "everything queued taken");
        assert_eq!(in_flight.most(), WRITES_IN_FLIGHT);
    }
}
