//! The worker: applies the dispatcher's assignments by running one controller per task, reports
//! their status, re-adopts the containers of an earlier run, and serves their logs. Modelled on
//! SwarmKit's `agent/worker.go`.

mod controller;
mod records;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use mesh_proto::assignments_message::Type as AssignmentsType;
use mesh_proto::{AssignmentsMessage, LogMessage, LogSubscription, Task, TaskStatusUpdate};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::exec::{ContainerListing, DEFAULT_STOP_GRACE, ExecError, Executor, LogOptions};
use crate::network::TaskNetwork;
use crate::taskfiles::TaskFiles;
use controller::{Command, Controller, Known};
use records::Records;

/// A cheap handle on the node's worker.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Arc<dyn Executor>,
    node_id: String,
    updates: UnboundedSender<TaskStatusUpdate>,
    records: Arc<Records>,
    network: Option<Arc<dyn TaskNetwork>>,
    /// Where tasks' secrets and configs are written; `None` where no task gets any (tests).
    files: Option<Arc<TaskFiles>>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    controllers: HashMap<String, Handle>,
    /// Controllers tearing down and orphan removals: aborted at shutdown.
    retiring: Vec<JoinHandle<()>>,
    /// Set by the first complete set, which re-adopts the containers of an earlier run.
    adopted: bool,
    shut_down: bool,
}

struct Handle {
    commands: UnboundedSender<Command>,
    join: JoinHandle<()>,
}

impl Worker {
    /// A worker running tasks on `executor`, attaching them to their overlay networks through
    /// `network` and writing their secrets and configs through `files` when given; status
    /// updates come out of the returned receiver.
    pub fn new(
        executor: Arc<dyn Executor>,
        node_id: String,
        network: Option<Arc<dyn TaskNetwork>>,
        files: Option<Arc<TaskFiles>>,
    ) -> (Worker, UnboundedReceiver<TaskStatusUpdate>) {
        let (updates, receiver) = mpsc::unbounded_channel();
        let inner = Inner {
            executor,
            node_id,
            updates,
            records: Arc::new(Records::default()),
            network,
            files,
            state: tokio::sync::Mutex::new(State::default()),
        };
        (
            Worker {
                inner: Arc::new(inner),
            },
            receiver,
        )
    }

    /// Applies one message of the dispatcher's assignment stream: a complete set replaces what the
    /// worker holds (tasks not in it are stopped and their containers removed); an incremental one
    /// adds or updates `update_tasks` and removes `remove_tasks`.
    pub async fn assign(&self, msg: AssignmentsMessage) {
        let mut state = self.inner.state.lock().await;
        if state.shut_down {
            return;
        }
        state.retiring.retain(|join| !join.is_finished());
        // The secrets and configs first: the tasks of the same message may use them.
        if let Some(files) = &self.inner.files {
            files.assign(&msg);
        }
        match msg.r#type() {
            AssignmentsType::Complete => {
                let wanted: HashSet<String> =
                    msg.update_tasks.iter().map(|t| t.id.clone()).collect();
                let mut found = if state.adopted {
                    None
                } else {
                    state.adopted = true;
                    Some(self.adopt(&mut state, &wanted).await)
                };
                let gone: Vec<String> = state
                    .controllers
                    .keys()
                    .filter(|id| !wanted.contains(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    self.remove(&mut state, &id);
                }
                for task in msg.update_tasks {
                    let known = match found.as_mut() {
                        Some(found) => found.remove(&task.id).map_or(Known::Absent, Known::Found),
                        None => Known::Unknown,
                    };
                    self.update(&mut state, task, known);
                }
            }
            AssignmentsType::Incremental => {
                for id in &msg.remove_tasks {
                    self.remove(&mut state, id);
                }
                for task in msg.update_tasks {
                    self.update(&mut state, task, Known::Unknown);
                }
            }
        }
    }

    /// The last status of every task the worker holds.
    pub fn statuses(&self) -> Vec<TaskStatusUpdate> {
        self.inner
            .records
            .lock()
            .iter()
            .map(|(id, record)| TaskStatusUpdate {
                task_id: id.clone(),
                status: Some(record.status.clone()),
            })
            .collect()
    }

    /// The output of the subscription's tasks that have a container here, merged as it comes.
    pub fn logs(&self, sub: &LogSubscription) -> BoxStream<'static, LogMessage> {
        let options = LogOptions {
            follow: sub.follow,
            tail: (sub.tail > 0).then_some(sub.tail),
            timestamps: sub.timestamps,
        };
        let records = self.inner.records.lock();
        let streams: Vec<_> = sub
            .task_ids
            .iter()
            .filter_map(|task_id| {
                let record = records.get(task_id)?;
                let container = record.status.container.as_ref()?.container_id.clone();
                if container.is_empty() {
                    return None;
                }
                let template = LogMessage {
                    task_id: task_id.clone(),
                    node_id: self.inner.node_id.clone(),
                    slot: record.slot,
                    service_name: record.service_name.clone(),
                    stderr: false,
                    data: Vec::new(),
                };
                let lines = self
                    .inner
                    .executor
                    .logs(&container, options)
                    .take_while(move |chunk| {
                        if let Err(error) = chunk {
                            debug!(container.id = %container, %error, "container logs ended");
                        }
                        futures::future::ready(chunk.is_ok())
                    })
                    .filter_map(move |chunk| {
                        let message = chunk.ok().map(|chunk| LogMessage {
                            stderr: chunk.stderr,
                            data: chunk.data,
                            ..template.clone()
                        });
                        futures::future::ready(message)
                    });
                Some(lines.boxed())
            })
            .collect();
        futures::stream::select_all(streams).boxed()
    }

    /// Stops every controller and leaves the containers as they are, for the next run to re-adopt.
    pub async fn shutdown(&self) {
        let mut guard = self.inner.state.lock().await;
        let state = &mut *guard;
        state.shut_down = true;
        let joins: Vec<JoinHandle<()>> = state
            .controllers
            .drain()
            .map(|(_, handle)| handle.join)
            .chain(state.retiring.drain(..))
            .collect();
        for join in &joins {
            join.abort();
        }
        for join in joins {
            // A cancelled controller is the expected outcome here.
            let _ = join.await;
        }
        info!(node.id = %self.inner.node_id, "worker stopped");
    }

    /// Lists the containers an earlier run left: returns those of the wanted tasks by task id, and
    /// stops and removes the others.
    async fn adopt(
        &self,
        state: &mut State,
        wanted: &HashSet<String>,
    ) -> HashMap<String, ContainerListing> {
        let listing = match self.inner.executor.list().await {
            Ok(listing) => listing,
            Err(error) => {
                warn!(%error, "cannot list containers to re-adopt");
                return HashMap::new();
            }
        };
        let mut found: HashMap<String, ContainerListing> = HashMap::new();
        for container in listing {
            if !wanted.contains(&container.task_id) {
                state.retiring.push(self.remove_orphan(container));
                continue;
            }
            // A wanted task's sandbox stays; its controller finds it when it needs it.
            if container.sandbox {
                continue;
            }
            let better = found
                .get(&container.task_id)
                .is_none_or(|held| container.running && !held.running);
            if better {
                found.insert(container.task_id.clone(), container);
            }
        }
        info!(containers = found.len(), "containers re-adopted");
        // Settled with Docker: the files of tasks no longer held go.
        if let Some(files) = &self.inner.files {
            files.retain(wanted);
        }
        found
    }

    fn remove_orphan(&self, container: ContainerListing) -> JoinHandle<()> {
        let executor = Arc::clone(&self.inner.executor);
        tokio::spawn(async move {
            let id = container.id.as_str();
            if container.running {
                match executor.stop(id, DEFAULT_STOP_GRACE).await {
                    Ok(()) | Err(ExecError::ContainerNotFound { .. }) => {}
                    Err(error) => warn!(container.id = %id, %error, "cannot stop orphan container"),
                }
            }
            match executor.remove(id).await {
                Ok(()) => {
                    info!(container.id = %id, task.id = %container.task_id, "orphan container removed")
                }
                Err(error) => warn!(container.id = %id, %error, "cannot remove orphan container"),
            }
        })
    }

    fn update(&self, state: &mut State, task: Task, known: Known) {
        if let Some(handle) = state.controllers.get(&task.id)
            && !handle.commands.is_closed()
        {
            // A controller that ends meanwhile drops the update; the next assignment replaces it.
            let _ = handle.commands.send(Command::Update(Box::new(task)));
            return;
        }
        debug!(task.id = %task.id, "task assigned");
        let (commands, receiver) = mpsc::unbounded_channel();
        let reporter = self.inner.records.hold(&task, self.inner.updates.clone());
        let task_id = task.id.clone();
        let controller = Controller::new(
            Arc::clone(&self.inner.executor),
            task,
            reporter,
            receiver,
            self.inner.network.clone(),
            self.inner.files.clone(),
        );
        let join = tokio::spawn(controller.run(known));
        state.controllers.insert(task_id, Handle { commands, join });
    }

    fn remove(&self, state: &mut State, task_id: &str) {
        let Some(handle) = state.controllers.remove(task_id) else {
            return;
        };
        debug!(task.id = %task_id, "task unassigned");
        if handle.commands.send(Command::Remove).is_ok() {
            state.retiring.push(handle.join);
        }
    }
}
