//! The simulated nodes' container runtime: containers are records that start at once and run
//! until stopped, each with its own exit signal, so that a node holding thousands of tasks costs
//! a map entry per container and wakes nothing when another container changes (the agent's own
//! fake executor, made for tests, scans and wakes every container on each change). The real
//! agent's worker drives it, task controller by task controller, exactly as it drives Docker.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_agent::exec::{
    ContainerInfo, ContainerListing, ExecError, Executor, FileBind, Health, LogChunk, LogOptions,
};
use mesh_proto::{NodeDescription, Task};
use tokio::sync::watch;

/// The exit code of a container stopped (SIGTERM) and of one removed while running (SIGKILL).
const STOPPED: i32 = 143;
const KILLED: i32 = 137;

struct Container {
    task_id: String,
    sandbox: bool,
    started: bool,
    /// `Some(code)` once the container has exited.
    exited: watch::Sender<Option<i32>>,
}

impl Container {
    fn running(&self) -> bool {
        self.started && self.exited.borrow().is_none()
    }
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// Each task's sandbox, by task id.
    sandboxes: HashMap<String, String>,
    next_id: u64,
}

pub struct SimExecutor {
    description: NodeDescription,
    state: Mutex<State>,
}

impl SimExecutor {
    pub fn new(description: NodeDescription) -> Self {
        Self {
            description,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(state: &mut State, task_id: &str, sandbox: bool, started: bool) -> String {
        state.next_id += 1;
        let id = format!("sim{:012}", state.next_id);
        let container = Container {
            task_id: task_id.to_owned(),
            sandbox,
            started,
            exited: watch::channel(None).0,
        };
        state.containers.insert(id.clone(), container);
        id
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> T) -> Result<T, ExecError> {
        let mut state = self.lock();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| ExecError::ContainerNotFound { id: id.to_owned() })?;
        Ok(f(container))
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    futures::future::ready(value).boxed()
}

impl Executor for SimExecutor {
    fn describe(&self) -> BoxFuture<'_, Result<NodeDescription, ExecError>> {
        ready(Ok(self.description.clone()))
    }

    fn prepare_sandbox<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<String, ExecError>> {
        let mut state = self.lock();
        let id = match state.sandboxes.get(&task.id) {
            Some(id) => id.clone(),
            None => {
                let id = Self::add(&mut state, &task.id, true, true);
                state.sandboxes.insert(task.id.clone(), id.clone());
                id
            }
        };
        ready(Ok(id))
    }

    fn prepare<'a>(
        &'a self,
        task: &'a Task,
        _sandbox: &'a str,
        _files: &'a [FileBind],
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        let id = Self::add(&mut self.lock(), &task.id, false, false);
        ready(Ok(id))
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        ready(self.with(id, |c| c.started = true))
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i32, ExecError>> {
        let exited = self.with(id, |c| c.exited.subscribe());
        async move {
            let mut exited = exited?;
            let code = *exited
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ExecError::ContainerNotFound { id: id.to_owned() })?;
            Ok(code.unwrap_or(KILLED))
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, ExecError>> {
        ready(self.with(id, |c| ContainerInfo {
            id: id.to_owned(),
            running: c.running(),
            // No process: the worker attaches no network to these (it has none to attach).
            pid: 0,
            exit_code: c.exited.borrow().unwrap_or(0),
            started: c.started,
            health: None,
        }))
    }

    fn health_changed<'a>(
        &'a self,
        _id: &'a str,
        last: Option<Health>,
    ) -> BoxFuture<'a, Result<Option<Health>, ExecError>> {
        // No container here has a health check: its health never changes from none.
        match last {
            None => futures::future::pending().boxed(),
            Some(_) => ready(Ok(None)),
        }
    }

    fn stop<'a>(&'a self, id: &'a str, _grace: Duration) -> BoxFuture<'a, Result<(), ExecError>> {
        ready(self.with(id, |c| {
            if c.running() {
                c.exited.send_replace(Some(STOPPED));
            }
        }))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        let mut state = self.lock();
        if let Some(container) = state.containers.remove(id) {
            if container.running() {
                container.exited.send_replace(Some(KILLED));
            }
            if container.sandbox {
                state.sandboxes.remove(&container.task_id);
            }
        }
        ready(Ok(()))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerListing>, ExecError>> {
        let listing = self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| ContainerListing {
                id: id.clone(),
                task_id: c.task_id.clone(),
                running: c.running(),
                sandbox: c.sandbox,
            })
            .collect();
        ready(Ok(listing))
    }

    fn logs(
        &self,
        _id: &str,
        _options: LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, ExecError>> {
        // These containers write nothing.
        stream::empty().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_container_runs_until_stopped_and_wait_sees_it() {
        let exec = Arc::new(SimExecutor::new(NodeDescription::default()));
        let task = Task {
            id: "t1".into(),
            ..Default::default()
        };
        let sandbox = exec.prepare_sandbox(&task).await.unwrap();
        assert_eq!(
            exec.prepare_sandbox(&task).await.unwrap(),
            sandbox,
            "reused"
        );
        let id = exec.prepare(&task, &sandbox, &[]).await.unwrap();
        assert!(!exec.inspect(&id).await.unwrap().running);
        exec.start(&id).await.unwrap();
        assert!(exec.inspect(&id).await.unwrap().running);
        let wait = tokio::spawn({
            let (exec, id) = (exec.clone(), id.clone());
            async move { exec.wait(&id).await }
        });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "a running container is waited for");
        exec.stop(&id, Duration::ZERO).await.unwrap();
        assert_eq!(wait.await.unwrap().unwrap(), STOPPED);
        assert_eq!(
            exec.wait(&id).await.unwrap(),
            STOPPED,
            "at once once exited"
        );
        exec.remove(&id).await.unwrap();
        assert!(exec.inspect(&id).await.is_err());
        let left = exec.list().await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].sandbox && left[0].running);
        exec.remove(&sandbox).await.unwrap();
        let again = exec.prepare_sandbox(&task).await.unwrap();
        assert_ne!(again, sandbox, "a removed sandbox is made anew");
    }
}
