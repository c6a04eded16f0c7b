//! An in-memory executor for tests: containers are records, every operation is instant, and a test
//! can script exits and failures and count calls.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_proto::{NodeDescription, Task};
use tokio::sync::Notify;

use super::{
    ContainerInfo, ContainerListing, ExecError, Executor, FileBind, Health, LogChunk, LogOptions,
    task_name,
};

/// The exit code of a container stopped by `stop`, as for a process ended by SIGTERM.
pub const STOPPED_EXIT_CODE: i32 = 143;

/// One container the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub id: String,
    pub task_id: String,
    pub name: String,
    pub started: bool,
    pub running: bool,
    pub exit_code: i32,
    pub logs: Vec<LogChunk>,
    /// A task's sandbox; for a task's container, the sandbox it joined.
    pub sandbox: bool,
    pub joined: Option<String>,
    pub health: Option<Health>,
}

#[derive(Debug, Default)]
struct State {
    containers: HashMap<String, FakeContainer>,
    next_id: u64,
    prepare_failures: HashMap<String, String>,
    /// Tasks whose containers have a health check: they start in [`Health::Starting`].
    health_checked: HashSet<String>,
    calls: HashMap<&'static str, usize>,
    /// How long each `list` takes to answer (an engine slow under load).
    list_delay: std::time::Duration,
}

/// An executor whose containers live in memory.
#[derive(Debug, Default)]
pub struct FakeExecutor {
    state: Mutex<State>,
    changed: Notify,
    description: NodeDescription,
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// An executor that describes itself as `description`.
    pub fn with_description(description: NodeDescription) -> Self {
        Self {
            description,
            ..Self::default()
        }
    }

    /// Makes every later `list` take `delay` to answer.
    pub fn slow_list(&self, delay: std::time::Duration) {
        self.lock().list_delay = delay;
    }

    /// Makes every later `prepare` of `task_id` fail with `message`.
    pub fn fail_prepare(&self, task_id: &str, message: &str) {
        self.lock()
            .prepare_failures
            .insert(task_id.to_owned(), message.to_owned());
    }

    /// Gives the containers of `task_id` a health check: they start in [`Health::Starting`].
    pub fn health_check(&self, task_id: &str) {
        self.lock().health_checked.insert(task_id.to_owned());
    }

    /// Sets the health of the container of `task_id`, as its health check would; false if there
    /// is none.
    pub fn set_health(&self, task_id: &str, health: Option<Health>) -> bool {
        let found = {
            let mut state = self.lock();
            let container = state
                .containers
                .values_mut()
                .find(|c| c.task_id == task_id && !c.sandbox);
            container.map(|c| c.health = health)
        };
        self.changed.notify_waiters();
        found.is_some()
    }

    /// Makes the running container of `task_id` exit with `code`; false if there is none.
    pub fn exit(&self, task_id: &str, code: i32) -> bool {
        let found = {
            let mut state = self.lock();
            let container = state
                .containers
                .values_mut()
                .find(|c| c.task_id == task_id && c.running && !c.sandbox);
            container.map(|c| {
                c.running = false;
                c.exit_code = code;
            })
        };
        self.changed.notify_waiters();
        found.is_some()
    }

    /// Adds a container as if an earlier agent had created it; returns its id.
    pub fn add_container(&self, task_id: &str, running: bool, exit_code: i32) -> String {
        let mut state = self.lock();
        let id = next_id(&mut state);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                task_id: task_id.to_owned(),
                name: format!("adopted.{task_id}"),
                started: true,
                running,
                exit_code,
                logs: Vec::new(),
                sandbox: false,
                joined: None,
                health: None,
            },
        );
        id
    }

    /// The sandbox of `task_id`, if it has one.
    pub fn sandbox_of(&self, task_id: &str) -> Option<FakeContainer> {
        self.lock()
            .containers
            .values()
            .find(|c| c.task_id == task_id && c.sandbox)
            .cloned()
    }

    /// Appends output to the container of `task_id`; false if there is none.
    pub fn push_log(&self, task_id: &str, stderr: bool, data: &[u8]) -> bool {
        let mut state = self.lock();
        let container = state
            .containers
            .values_mut()
            .find(|c| c.task_id == task_id && !c.sandbox);
        container
            .map(|c| {
                c.logs.push(LogChunk {
                    stderr,
                    data: data.to_vec(),
                })
            })
            .is_some()
    }

    /// How many times the operation (`prepare_sandbox`, `prepare`, `start`, `wait`, `inspect`,
    /// `stop`, `remove`, `list`, `logs`) was called.
    pub fn calls(&self, op: &str) -> usize {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        let mut all: Vec<_> = self.lock().containers.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The task's own container (not its sandbox).
    pub fn container_of(&self, task_id: &str) -> Option<FakeContainer> {
        self.lock()
            .containers
            .values()
            .find(|c| c.task_id == task_id && !c.sandbox)
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and applies `f` to the container `id`, waking waiters if `f` changes it.
    fn with_container<T>(
        &self,
        op: &'static str,
        id: &str,
        f: impl FnOnce(&mut FakeContainer) -> T,
    ) -> Result<T, ExecError> {
        let (out, changed) = {
            let mut state = self.lock();
            *state.calls.entry(op).or_default() += 1;
            match state.containers.get_mut(id) {
                Some(container) => {
                    let before = container.clone();
                    let out = f(container);
                    (Some(out), *container != before)
                }
                None => (None, false),
            }
        };
        if changed {
            self.changed.notify_waiters();
        }
        out.ok_or_else(|| ExecError::ContainerNotFound { id: id.to_owned() })
    }
}

fn next_id(state: &mut State) -> String {
    state.next_id += 1;
    format!("fake{:08}", state.next_id)
}

impl Executor for FakeExecutor {
    fn describe(&self) -> BoxFuture<'_, Result<NodeDescription, ExecError>> {
        futures::future::ready(Ok(self.description.clone())).boxed()
    }

    fn prepare_sandbox<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<String, ExecError>> {
        let id = {
            let mut state = self.lock();
            *state.calls.entry("prepare_sandbox").or_default() += 1;
            let existing = state
                .containers
                .values()
                .find(|c| c.task_id == task.id && c.sandbox)
                .map(|c| c.id.clone());
            existing.unwrap_or_else(|| {
                let id = next_id(&mut state);
                let sandbox = FakeContainer {
                    id: id.clone(),
                    task_id: task.id.clone(),
                    name: format!("{}.sandbox", task_name(task)),
                    started: true,
                    running: true,
                    exit_code: 0,
                    logs: Vec::new(),
                    sandbox: true,
                    joined: None,
                    health: None,
                };
                state.containers.insert(id.clone(), sandbox);
                id
            })
        };
        self.changed.notify_waiters();
        futures::future::ready(Ok(id)).boxed()
    }

    fn prepare<'a>(
        &'a self,
        task: &'a Task,
        sandbox: &'a str,
        _files: &'a [FileBind],
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        let mut state = self.lock();
        *state.calls.entry("prepare").or_default() += 1;
        let result = match state.prepare_failures.get(&task.id) {
            Some(message) => Err(ExecError::Engine {
                op: "create container",
                message: message.clone(),
            }),
            None => {
                let id = next_id(&mut state);
                let container = FakeContainer {
                    id: id.clone(),
                    task_id: task.id.clone(),
                    name: task_name(task),
                    started: false,
                    running: false,
                    exit_code: 0,
                    logs: Vec::new(),
                    sandbox: false,
                    joined: Some(sandbox.to_owned()),
                    health: None,
                };
                state.containers.insert(id.clone(), container);
                Ok(id)
            }
        };
        futures::future::ready(result).boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        let checked = self.lock().health_checked.clone();
        let result = self.with_container("start", id, |c| {
            c.started = true;
            c.running = true;
            if checked.contains(&c.task_id) {
                c.health = Some(Health::Starting);
            }
        });
        futures::future::ready(result).boxed()
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i32, ExecError>> {
        async move {
            let mut counted = false;
            loop {
                let changed = self.changed.notified();
                let op = if counted { "wait.poll" } else { "wait" };
                counted = true;
                let status = self.with_container(op, id, |c| (c.running, c.exit_code))?;
                match status {
                    (false, code) => return Ok(code),
                    (true, _) => changed.await,
                }
            }
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, ExecError>> {
        let result = self.with_container("inspect", id, |c| ContainerInfo {
            id: c.id.clone(),
            running: c.running,
            pid: if c.running { 4242 } else { 0 },
            exit_code: c.exit_code,
            started: c.started,
            health: c.health,
        });
        futures::future::ready(result).boxed()
    }

    fn health_changed<'a>(
        &'a self,
        id: &'a str,
        last: Option<Health>,
    ) -> BoxFuture<'a, Result<Option<Health>, ExecError>> {
        async move {
            loop {
                let changed = self.changed.notified();
                let now = self.with_container("health", id, |c| c.health)?;
                if now != last {
                    return Ok(now);
                }
                changed.await;
            }
        }
        .boxed()
    }

    fn stop<'a>(&'a self, id: &'a str, _grace: Duration) -> BoxFuture<'a, Result<(), ExecError>> {
        let result = self.with_container("stop", id, |c| {
            if c.running {
                c.running = false;
                c.exit_code = STOPPED_EXIT_CODE;
            }
        });
        futures::future::ready(result).boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        {
            let mut state = self.lock();
            *state.calls.entry("remove").or_default() += 1;
            state.containers.remove(id);
        }
        self.changed.notify_waiters();
        futures::future::ready(Ok(())).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerListing>, ExecError>> {
        let mut state = self.lock();
        *state.calls.entry("list").or_default() += 1;
        let listing = state
            .containers
            .values()
            .map(|c| ContainerListing {
                id: c.id.clone(),
                task_id: c.task_id.clone(),
                running: c.running,
                sandbox: c.sandbox,
            })
            .collect();
        let delay = state.list_delay;
        if delay.is_zero() {
            return futures::future::ready(Ok(listing)).boxed();
        }
        async move {
            tokio::time::sleep(delay).await;
            Ok(listing)
        }
        .boxed()
    }

    fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, ExecError>> {
        match self.with_container("logs", id, |c| c.logs.clone()) {
            Ok(mut chunks) => {
                if let Some(tail) = options.tail.and_then(|n| usize::try_from(n).ok()) {
                    chunks.drain(..chunks.len().saturating_sub(tail));
                }
                stream::iter(chunks.into_iter().map(Ok)).boxed()
            }
            Err(e) => stream::once(futures::future::ready(Err(e))).boxed(),
        }
    }
}
