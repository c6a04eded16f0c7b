//! The stream of tasks assigned to one node: a complete set, then incremental changes per commit.
//! With the tasks go the secrets and configs they use, and only those: a node that runs no task
//! using a secret never receives it, and is told to forget it once its last such task is gone.

use mesh_proto::{AssignmentsMessage, Config, Secret, Task, TaskState, assignments_message::Type};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use super::fanout::Fanout;
use crate::store::{Read, Store};

/// The secret and config ids a node needs for the tasks it holds: those of its tasks that may
/// still run (desired state running or earlier), as SwarmKit's dispatcher sends them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dependencies {
    pub secrets: BTreeSet<String>,
    pub configs: BTreeSet<String>,
}

impl Dependencies {
    fn of<'a>(tasks: impl IntoIterator<Item = &'a Sent>) -> Self {
        let mut deps = Dependencies::default();
        for task in tasks {
            if task.desired_state > TaskState::Running as i32 {
                continue;
            }
            deps.secrets.extend(task.secrets.iter().cloned());
            deps.configs.extend(task.configs.iter().cloned());
        }
        deps
    }
}

/// What a stream remembers of a task it told its node about: the desired state it sent, and the
/// secrets and configs the task uses. Not the task itself: a node's stream lives as long as its
/// session, and a copy of each of a leader's million tasks would double its memory. Almost no
/// task uses a secret or a config, and an empty list allocates nothing.
#[derive(Debug)]
struct Sent {
    desired_state: i32,
    secrets: Box<[String]>,
    configs: Box<[String]>,
}

impl Sent {
    fn of(task: &Task) -> Self {
        let container = task.spec.as_ref().and_then(|s| s.container.as_ref());
        Sent {
            desired_state: task.desired_state,
            secrets: container
                .map(|c| c.secrets.iter().map(|r| r.secret_id.clone()).collect())
                .unwrap_or_default(),
            configs: container
                .map(|c| c.configs.iter().map(|r| r.config_id.clone()).collect())
                .unwrap_or_default(),
        }
    }
}

/// Fills `message` with what the node needs beyond what it was `sent`, and what it may forget;
/// `sent` becomes what it needs. An id with no object (removed meanwhile) is neither sent nor
/// remembered.
fn add_dependencies(
    tx: &impl Read,
    sent: &mut Dependencies,
    needed: Dependencies,
    message: &mut AssignmentsMessage,
) {
    let secrets: Vec<Secret> = needed
        .secrets
        .difference(&sent.secrets)
        .filter_map(|id| tx.get::<Secret>(id))
        .collect();
    let configs: Vec<Config> = needed
        .configs
        .difference(&sent.configs)
        .filter_map(|id| tx.get::<Config>(id))
        .collect();
    message
        .remove_secrets
        .extend(sent.secrets.difference(&needed.secrets).cloned());
    message
        .remove_configs
        .extend(sent.configs.difference(&needed.configs).cloned());
    *sent = Dependencies {
        secrets: needed
            .secrets
            .into_iter()
            .filter(|id| tx.peek::<Secret>(id).is_some())
            .collect(),
        configs: needed
            .configs
            .into_iter()
            .filter(|id| tx.peek::<Config>(id).is_some())
            .collect(),
    };
    message.update_secrets.extend(secrets);
    message.update_configs.extend(configs);
}

/// Whether the node should hold this task: it is on the node and the scheduler has placed it.
fn assigned_to(task: &Task, node_id: &str) -> bool {
    task.node_id == node_id
        && task
            .status
            .as_ref()
            .is_some_and(|s| s.state >= TaskState::Assigned as i32)
}

/// Messages stay well under gRPC's default 4 MiB limit, however many tasks a node holds.
const MESSAGE_BUDGET: usize = 3 << 20;

/// The complete set as one message, or as several `partial` ones when it is large. `first` holds
/// the secrets and configs, which come before the tasks that use them.
fn complete_set(first: AssignmentsMessage, tasks: Vec<Task>) -> Vec<AssignmentsMessage> {
    let mut messages = vec![AssignmentsMessage {
        r#type: Type::Complete as i32,
        ..Default::default()
    }];
    let mut size = 0;
    let split = |messages: &mut Vec<AssignmentsMessage>, size: &mut usize, next: usize| {
        if *size + next > MESSAGE_BUDGET && *size > 0 {
            if let Some(last) = messages.last_mut() {
                last.partial = true;
            }
            messages.push(AssignmentsMessage {
                r#type: Type::Complete as i32,
                ..Default::default()
            });
            *size = 0;
        }
        *size += next;
    };
    for secret in first.update_secrets {
        split(
            &mut messages,
            &mut size,
            prost::Message::encoded_len(&secret) + 8,
        );
        if let Some(last) = messages.last_mut() {
            last.update_secrets.push(secret);
        }
    }
    for config in first.update_configs {
        split(
            &mut messages,
            &mut size,
            prost::Message::encoded_len(&config) + 8,
        );
        if let Some(last) = messages.last_mut() {
            last.update_configs.push(config);
        }
    }
    for task in tasks {
        let task_size = prost::Message::encoded_len(&task) + 8;
        if size + task_size > MESSAGE_BUDGET && size > 0 {
            if let Some(last) = messages.last_mut() {
                last.partial = true;
            }
            messages.push(AssignmentsMessage {
                r#type: Type::Complete as i32,
                ..Default::default()
            });
            size = 0;
        }
        size += task_size;
        if let Some(last) = messages.last_mut() {
            last.update_tasks.push(task);
        }
    }
    messages
}

/// Feeds `out` until the session closes or the receiver goes away. The node's task changes come
/// from the dispatcher's [`Fanout`], one batch per committed entry that touched the node.
pub(super) async fn stream(
    store: Store,
    fanout: Arc<Fanout>,
    node_id: String,
    mut closed: watch::Receiver<bool>,
    out: mpsc::Sender<Result<AssignmentsMessage, tonic::Status>>,
) {
    'resync: loop {
        // Subscribed before the view: no entry after it is missed, and those it holds are skipped.
        let Some(mut changes) = fanout.subscribe(&node_id) else {
            return;
        };
        // What the node was last told of: the secrets and configs it holds.
        let mut deps = Dependencies::default();
        // What the node was last told about each task it holds.
        let (seen, (tasks, first, mut sent)) = store.memory().view_at(|tx| {
            let tasks: Vec<Task> = tx
                .tasks_on_node(&node_id)
                .into_iter()
                .filter(|t| assigned_to(t, &node_id))
                .cloned()
                .collect();
            let mut first = AssignmentsMessage::default();
            let sent: HashMap<String, Sent> =
                tasks.iter().map(|t| (t.id.clone(), Sent::of(t))).collect();
            add_dependencies(tx, &mut deps, Dependencies::of(sent.values()), &mut first);
            (tasks, first, sent)
        });
        for complete in complete_set(first, tasks) {
            if out.send(Ok(complete)).await.is_err() {
                return;
            }
        }
        loop {
            let batch = tokio::select! {
                _ = closed.changed() => return,
                batch = changes.recv() => batch,
            };
            // Dropped by the router (this stream fell behind, or the store was reset).
            let Some(batch) = batch else {
                continue 'resync;
            };
            if batch.index <= seen {
                continue;
            }
            let mut pending = AssignmentsMessage {
                r#type: Type::Incremental as i32,
                ..Default::default()
            };
            for event in &batch.events {
                let Some(task) = event.as_a::<Task>() else {
                    continue;
                };
                let held = !event.is_delete() && assigned_to(task, &node_id);
                match (held, sent.get(&task.id)) {
                    (true, Some(told)) if told.desired_state == task.desired_state => {}
                    (true, _) => {
                        sent.insert(task.id.clone(), Sent::of(task));
                        pending.remove_tasks.retain(|id| id != &task.id);
                        pending.update_tasks.retain(|t| t.id != task.id);
                        pending.update_tasks.push(task.clone());
                    }
                    (false, Some(_)) => {
                        sent.remove(&task.id);
                        pending.update_tasks.retain(|t| t.id != task.id);
                        pending.remove_tasks.push(task.id.clone());
                    }
                    (false, None) => {}
                }
            }
            if pending.update_tasks.is_empty() && pending.remove_tasks.is_empty() {
                continue;
            }
            let needed = Dependencies::of(sent.values());
            if needed != deps {
                store.view(|tx| add_dependencies(tx, &mut deps, needed, &mut pending));
            }
            if prost::Message::encoded_len(&pending) > MESSAGE_BUDGET {
                // Too large for one incremental message: send the whole set, in parts.
                continue 'resync;
            }
            if out.send(Ok(pending)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{ConfigReference, ContainerSpec, SecretReference, SecretSpec, TaskSpec};

    fn big_task(i: usize) -> Task {
        Task {
            id: format!("task{i}"),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    env: vec![format!("PAD={}", "x".repeat(64 << 10))],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_large_set_is_split_under_the_limit() {
        let tasks: Vec<Task> = (0..200).map(big_task).collect();
        let messages = complete_set(AssignmentsMessage::default(), tasks);
        assert!(messages.len() > 1, "12 MiB of tasks must be split");
        let (last, rest) = messages.split_last().unwrap();
        assert!(
            rest.iter().all(|m| m.partial),
            "all but the last are partial"
        );
        assert!(!last.partial);
        for m in &messages {
            assert!(prost::Message::encoded_len(m) < 4 << 20);
        }
        let total: usize = messages.iter().map(|m| m.update_tasks.len()).sum();
        assert_eq!(total, 200);
        assert_eq!(
            complete_set(AssignmentsMessage::default(), vec![]).len(),
            1,
            "an empty set is still sent"
        );
    }

    fn task(id: &str, desired: TaskState, secrets: &[&str], configs: &[&str]) -> Task {
        Task {
            id: id.into(),
            desired_state: desired as i32,
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: secrets
                        .iter()
                        .map(|s| SecretReference {
                            secret_id: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    configs: configs
                        .iter()
                        .map(|c| ConfigReference {
                            config_id: c.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What a node holding `tasks` needs.
    fn needs(tasks: &[Task]) -> Dependencies {
        Dependencies::of(&tasks.iter().map(Sent::of).collect::<Vec<_>>())
    }

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_needs_the_secrets_of_the_tasks_that_may_run() {
        let cases: [(Vec<Task>, &[&str], &[&str]); 4] = [
            (vec![], &[], &[]),
            (
                vec![
                    task("t1", TaskState::Running, &["s1"], &["c1"]),
                    task("t2", TaskState::Ready, &["s1", "s2"], &[]),
                ],
                &["s1", "s2"],
                &["c1"],
            ),
            // A task being shut down no longer needs its secrets.
            (
                vec![
                    task("t1", TaskState::Shutdown, &["s1"], &["c1"]),
                    task("t2", TaskState::Running, &["s2"], &[]),
                ],
                &["s2"],
                &[],
            ),
            (vec![task("t1", TaskState::Remove, &["s1"], &[])], &[], &[]),
        ];
        for (tasks, secrets, configs) in cases {
            let deps = needs(&tasks);
            assert_eq!(deps.secrets, ids(secrets), "{tasks:?}");
            assert_eq!(deps.configs, ids(configs));
        }
    }

    #[tokio::test]
    async fn only_new_dependencies_are_sent_and_old_ones_forgotten() {
        let store = crate::store::direct_store();
        store
            .update(|tx| {
                for id in ["s1", "s2"] {
                    tx.create(Secret {
                        id: id.into(),
                        spec: Some(SecretSpec {
                            data: id.as_bytes().to_vec(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })?;
                }
                tx.create(Config {
                    id: "c1".into(),
                    ..Default::default()
                })
            })
            .await
            .expect("stored");
        let mut sent = Dependencies::default();
        let mut first = AssignmentsMessage::default();
        let tasks = [task("t1", TaskState::Running, &["s1", "gone"], &["c1"])];
        store.view(|tx| add_dependencies(tx, &mut sent, needs(&tasks), &mut first));
        let sent_ids: Vec<&str> = first.update_secrets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(sent_ids, ["s1"], "a removed secret is not sent");
        assert_eq!(first.update_configs.len(), 1);
        assert_eq!(sent.secrets, ids(&["s1"]));

        let mut next = AssignmentsMessage::default();
        let tasks = [task("t2", TaskState::Running, &["s1", "s2"], &[])];
        store.view(|tx| add_dependencies(tx, &mut sent, needs(&tasks), &mut next));
        let sent_ids: Vec<&str> = next.update_secrets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(sent_ids, ["s2"], "s1 is held already");
        assert!(next.remove_secrets.is_empty());
        assert_eq!(next.remove_configs, ["c1"]);
    }

    #[tokio::test]
    async fn a_stream_sends_a_secret_while_a_task_may_use_it_and_then_forgets_it() {
        use mesh_proto::TaskStatus;
        use std::time::Duration;

        let store = crate::store::direct_store();
        let on_node = |id: &str, desired: TaskState| Task {
            node_id: "n1".into(),
            status: Some(TaskStatus {
                state: TaskState::Assigned as i32,
                ..Default::default()
            }),
            ..task(id, desired, &["s1"], &[])
        };
        store
            .update(|tx| {
                tx.create(Secret {
                    id: "s1".into(),
                    ..Default::default()
                })?;
                tx.create(on_node("t1", TaskState::Running))
            })
            .await
            .expect("stored");
        let (fanout, _stop) = super::super::fanout::tests::started(&store).await;
        let (_close, closed) = watch::channel(false);
        let (out, mut messages) = mpsc::channel(8);
        tokio::spawn(stream(store.clone(), fanout, "n1".into(), closed, out));
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), messages.recv())
                .await
                .expect("a message in time")
                .expect("the stream is open")
                .expect("not an error")
        };
        let secret_ids =
            |secrets: &[Secret]| secrets.iter().map(|s| s.id.clone()).collect::<Vec<_>>();

        let complete = next().await;
        assert_eq!(complete.r#type, Type::Complete as i32);
        assert_eq!(secret_ids(&complete.update_secrets), ["s1"]);

        // Shut down, the task needs its secret no longer.
        store
            .update(|tx| {
                let mut t1 = tx.get::<Task>("t1").expect("t1");
                t1.desired_state = TaskState::Shutdown as i32;
                tx.update(t1)
            })
            .await
            .expect("stored");
        let shutdown = next().await;
        assert_eq!(shutdown.update_tasks.len(), 1);
        assert_eq!(shutdown.remove_secrets, ["s1"]);

        // A new task using it has it sent again.
        store
            .update(|tx| tx.create(on_node("t2", TaskState::Running)))
            .await
            .expect("stored");
        let again = next().await;
        assert_eq!(secret_ids(&again.update_secrets), ["s1"]);
        assert!(again.remove_secrets.is_empty());
    }

    #[test]
    fn large_secrets_are_split_too() {
        let secret = |i: usize| Secret {
            id: format!("s{i}"),
            spec: Some(SecretSpec {
                data: vec![7; 500 << 10],
                ..Default::default()
            }),
            ..Default::default()
        };
        let first = AssignmentsMessage {
            update_secrets: (0..10).map(secret).collect(),
            ..Default::default()
        };
        let messages = complete_set(first, (0..3).map(big_task).collect());
        assert!(messages.len() > 1);
        for m in &messages {
            assert!(prost::Message::encoded_len(m) < 4 << 20);
        }
        let secrets: usize = messages.iter().map(|m| m.update_secrets.len()).sum();
        assert_eq!(secrets, 10);
        assert!(messages[0].update_tasks.is_empty(), "secrets come first");
    }
}
