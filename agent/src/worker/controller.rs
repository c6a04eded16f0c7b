//! One task's controller: walks the task through Swarm's states on the executor, one step at a
//! time, and reports every change. It never moves a task backwards and never restarts a container.
//!
//! Networks come before processes: preparing a task starts its sandbox (a container holding
//! only its network namespace), plugs the task's networks into it, and only then creates the
//! task's container inside it; a failed attach rejects the task before its process ever runs.
//! Once the task's container has ended, its networks are unplugged and its sandbox removed.
//!
//! A container with a health check (the spec's or its image's) keeps its task in Starting until
//! the check says healthy, and only a running task is announced as a backend of its services
//! (VIPs, routing mesh, DNS). One that turns unhealthy is withdrawn from every backend set at
//! once, then its task fails with "task: container is unhealthy" and its container is stopped,
//! so that the orchestrator replaces it.

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::{ContainerStatus, Task, TaskState, TaskStatus};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use super::records::Reporter;
use crate::exec::{ContainerListing, ExecError, Executor, Health, stop_grace};
use crate::network::TaskNetwork;
use crate::taskfiles::TaskFiles;

mod adopt;

/// Pause after the engine failed to answer a wait, before asking again.
const WAIT_RETRY: Duration = Duration::from_secs(1);

/// A task's error once its container's health check judged it unhealthy.
pub(super) const UNHEALTHY: &str = "task: container is unhealthy";

/// What the worker tells a controller.
#[derive(Debug)]
pub(super) enum Command {
    /// A newer version of the task (desired state or spec changed).
    Update(Box<Task>),
    /// The task left the assignments: stop and remove its container, then end (as for a desired
    /// state of remove).
    Remove,
}

/// What the worker knows about an existing container for the task.
#[derive(Debug)]
pub(super) enum Known {
    /// Nothing: ask the executor if the task's state says a container may exist.
    Unknown,
    /// The executor was asked and has none.
    Absent,
    Found(ContainerListing),
}

pub(super) struct Controller {
    executor: Arc<dyn Executor>,
    task: Task,
    status: TaskStatus,
    container: Option<String>,
    pid: i32,
    exit_code: i32,
    reporter: Reporter,
    commands: UnboundedReceiver<Command>,
    removed: bool,
    closed: bool,
    network: Option<Arc<dyn TaskNetwork>>,
    attached: bool,
    /// The task's sandbox container, once made (or found, for a container an earlier agent left).
    sandbox: Option<String>,
    /// The task's container was started (or found running).
    launched: bool,
    /// Its health as last seen; `None` without a health check.
    health: Option<Health>,
    /// Its endpoints are published as backends of its services.
    announced: bool,
    files: Option<Arc<TaskFiles>>,
}

impl Controller {
    pub fn new(
        executor: Arc<dyn Executor>,
        task: Task,
        reporter: Reporter,
        commands: UnboundedReceiver<Command>,
        network: Option<Arc<dyn TaskNetwork>>,
        files: Option<Arc<TaskFiles>>,
    ) -> Self {
        let status = task.status.clone().unwrap_or_default();
        let container = status
            .container
            .as_ref()
            .map(|c| c.container_id.clone())
            .filter(|id| !id.is_empty());
        Self {
            executor,
            task,
            status,
            container,
            pid: 0,
            exit_code: 0,
            reporter,
            commands,
            removed: false,
            closed: false,
            network,
            attached: false,
            sandbox: None,
            launched: false,
            health: None,
            announced: false,
            files,
        }
    }

    pub async fn run(mut self, known: Known) {
        self.adopt(known).await;
        // A re-adopted running container is attached again at once: the next step waits for it
        // to exit (or for a command), which may be never.
        self.follow_network().await;
        while !self.closed {
            if self.removed {
                self.teardown().await;
                return;
            }
            self.step().await;
            self.follow_network().await;
        }
        debug!(task.id = %self.task.id, "task controller stopped");
    }

    /// Attaches a running container an earlier agent left to its networks (its interfaces are
    /// taken over), announces a running task as a backend of its services, and detaches the task
    /// and removes its sandbox once it no longer runs.
    async fn follow_network(&mut self) {
        let state = self.state();
        let live = state == TaskState::Running || (state == TaskState::Starting && self.launched);
        if live && !self.attached {
            self.attach_network().await;
        }
        if state == TaskState::Running
            && self.attached
            && !self.announced
            && self.health != Some(Health::Unhealthy)
        {
            self.announced = true;
            if let Some(network) = self.network.clone() {
                network.announce(&self.task.id).await;
            }
        } else if state > TaskState::Running && self.attached {
            self.detach_network().await;
            self.remove_sandbox().await;
        }
    }

    fn state(&self) -> TaskState {
        self.status.state()
    }

    /// One move of the state machine, or a wait for the next command when there is nothing to do.
    async fn step(&mut self) {
        let state = self.state();
        let desired = self.task.desired_state();
        if desired >= TaskState::Remove {
            // The task is going away (its service was removed): its container goes now.
            self.removed = true;
            return;
        }
        if state >= TaskState::Complete {
            return self.next_command().await;
        }
        if desired >= TaskState::Shutdown {
            return self.shut_down().await;
        }
        if self.launched && self.health == Some(Health::Unhealthy) {
            return self.unhealthy().await;
        }
        match state {
            TaskState::Accepted => self.set(TaskState::Preparing, "preparing"),
            TaskState::Preparing => self.prepare().await,
            TaskState::Ready if desired < TaskState::Running => self.next_command().await,
            TaskState::Ready => self.set(TaskState::Starting, "starting"),
            TaskState::Starting => self.start().await,
            TaskState::Running => self.watch().await,
            _ => self.set(TaskState::Accepted, "accepted"),
        }
    }

    /// Starts the task's sandbox and plugs its networks into it; returns the sandbox's id.
    async fn plug(&mut self) -> Result<String, (&'static str, String)> {
        let sandbox = self
            .executor
            .prepare_sandbox(&self.task)
            .await
            .map_err(|e| ("preparing", e.to_string()))?;
        self.sandbox = Some(sandbox.clone());
        let Some(network) = self.network.clone() else {
            return Ok(sandbox);
        };
        let attaching = |e: String| ("attaching networks", e);
        let info = self
            .executor
            .inspect(&sandbox)
            .await
            .map_err(|e| attaching(e.to_string()))?;
        let pid = u32::try_from(info.pid)
            .ok()
            .filter(|pid| info.running && *pid != 0)
            .ok_or_else(|| attaching("the task's sandbox is not running".to_owned()))?;
        self.attached = true;
        network
            .attach(&self.task, pid)
            .await
            .map_err(|e| attaching(e.to_string()))?;
        Ok(sandbox)
    }

    /// Removes the task's sandbox (finding it first for a task an earlier agent ran).
    async fn remove_sandbox(&mut self) {
        let sandbox = match self.sandbox.take() {
            Some(id) => Some(id),
            None => match self.executor.list().await {
                Ok(all) => all
                    .into_iter()
                    .find(|c| c.sandbox && c.task_id == self.task.id)
                    .map(|c| c.id),
                Err(error) => {
                    warn!(task.id = %self.task.id, %error, "cannot list containers");
                    None
                }
            },
        };
        if let Some(id) = sandbox
            && let Err(error) = self.executor.remove(&id).await
        {
            warn!(task.id = %self.task.id, container.id = %id, %error, "cannot remove sandbox");
        }
    }

    /// Connects a running container an earlier agent left to the task's overlay networks.
    async fn attach_network(&mut self) {
        self.attached = true;
        let (Some(network), Ok(pid)) = (self.network.clone(), u32::try_from(self.pid)) else {
            return;
        };
        // Every task gets the gateway bridge, so even one without networks has a way out.
        if pid == 0 {
            return;
        }
        if let Err(error) = network.attach(&self.task, pid).await {
            warn!(task.id = %self.task.id, %error, "cannot attach task to its networks");
        }
    }

    async fn detach_network(&mut self) {
        self.attached = false;
        self.announced = false;
        if let Some(network) = self.network.clone() {
            network.detach(&self.task.id).await;
        }
    }

    async fn next_command(&mut self) {
        let command = self.commands.recv().await;
        self.apply(command);
    }

    fn apply(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Update(task)) => self.task = *task,
            Some(Command::Remove) => self.removed = true,
            None => self.closed = true,
        }
    }

    async fn prepare(&mut self) {
        if self.container.is_none() {
            let sandbox = match self.plug().await {
                Ok(sandbox) => sandbox,
                Err((message, err)) => {
                    self.unplug().await;
                    return self.fail(TaskState::Rejected, message, err);
                }
            };
            let binds = match self.files.as_ref().map(|f| f.write(&self.task)) {
                Some(Ok(binds)) => binds,
                None => Vec::new(),
                Some(Err(error)) => {
                    self.unplug().await;
                    return self.fail(TaskState::Rejected, "preparing", error.to_string());
                }
            };
            match self.executor.prepare(&self.task, &sandbox, &binds).await {
                Ok(id) => self.container = Some(id),
                Err(error) => {
                    self.remove_files();
                    self.unplug().await;
                    return self.fail(TaskState::Rejected, "preparing", error.to_string());
                }
            }
        }
        self.set(TaskState::Ready, "prepared");
    }

    /// Undoes [`plug`](Self::plug): the networks, then the sandbox.
    async fn unplug(&mut self) {
        if self.attached {
            self.detach_network().await;
        }
        self.remove_sandbox().await;
    }

    async fn start(&mut self) {
        let Some(id) = self.container.clone() else {
            let err = format!("No such container for task {}", self.task.id);
            return self.fail(TaskState::Failed, "starting", err);
        };
        if !self.launched {
            if let Err(error) = self.executor.start(&id).await {
                return self.fail(TaskState::Failed, "starting", error.to_string());
            }
            self.launched = true;
            match self.executor.inspect(&id).await {
                Ok(info) if !info.running && info.started => return self.exited(info.exit_code),
                Ok(info) => {
                    self.pid = info.pid;
                    self.health = info.health;
                }
                Err(error) => {
                    warn!(task.id = %self.task.id, %error, "cannot inspect started container")
                }
            }
        }
        match self.health {
            None | Some(Health::Healthy) => self.set(TaskState::Running, "started"),
            Some(Health::Unhealthy) => self.unhealthy().await,
            Some(Health::Starting) => self.watch().await,
        }
    }

    /// Withdraws the task from every backend set, fails it as unhealthy and stops its container.
    async fn unhealthy(&mut self) {
        if self.attached
            && let Some(network) = self.network.clone()
        {
            network.drain(&self.task.id).await;
        }
        self.announced = false;
        self.fail(TaskState::Failed, "unhealthy", UNHEALTHY.to_owned());
        if let Some(id) = self.container.clone() {
            self.stop(&id).await;
        }
    }

    /// Waits for the running container to exit, for its health to change, or for a command,
    /// whichever comes first.
    async fn watch(&mut self) {
        let Some(id) = self.container.clone() else {
            let err = format!("No such container for task {}", self.task.id);
            return self.fail(TaskState::Failed, "failed", err);
        };
        let executor = Arc::clone(&self.executor);
        let last = self.health;
        let health = async {
            match last {
                Some(_) => executor.health_changed(&id, last).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = health => match changed {
                Ok(health) => {
                    debug!(task.id = %self.task.id, ?health, "container health changed");
                    self.health = health;
                }
                Err(error) => {
                    warn!(task.id = %self.task.id, container.id = %id, %error, "cannot watch container health");
                    tokio::select! {
                        () = tokio::time::sleep(WAIT_RETRY) => {}
                        command = self.commands.recv() => self.apply(command),
                    }
                }
            },
            exit = executor.wait(&id) => match exit {
                Ok(code) => self.exited(code),
                Err(error @ ExecError::ContainerNotFound { .. }) => {
                    self.fail(TaskState::Failed, "failed", error.to_string());
                }
                Err(error) => {
                    warn!(task.id = %self.task.id, container.id = %id, %error, "cannot wait for container");
                    tokio::select! {
                        () = tokio::time::sleep(WAIT_RETRY) => {}
                        command = self.commands.recv() => self.apply(command),
                    }
                }
            },
            command = self.commands.recv() => self.apply(command),
        }
    }

    /// Stops the task for a desired state of shutdown. A container that exited meanwhile keeps its
    /// own terminal state.
    async fn shut_down(&mut self) {
        if self.attached
            && let Some(network) = self.network.clone()
        {
            network.drain(&self.task.id).await;
        }
        if let Some(id) = self.container.clone()
            && self.state() >= TaskState::Starting
        {
            if let Ok(info) = self.executor.inspect(&id).await
                && !info.running
                && info.started
            {
                return self.exited(info.exit_code);
            }
            self.stop(&id).await;
        }
        self.set(TaskState::Shutdown, "shutdown");
    }

    /// Stops and removes the container of a task no longer assigned or desired removed, then
    /// forgets the task.
    async fn teardown(&mut self) {
        if self.attached {
            self.detach_network().await;
        }
        if let Some(id) = self.container.clone() {
            if self.state() < TaskState::Complete && self.state() >= TaskState::Starting {
                self.stop(&id).await;
            }
            match self.executor.remove(&id).await {
                Ok(()) => debug!(task.id = %self.task.id, container.id = %id, "container removed"),
                Err(error) => {
                    warn!(task.id = %self.task.id, container.id = %id, %error, "cannot remove container")
                }
            }
        }
        self.remove_files();
        self.remove_sandbox().await;
        if self.state() < TaskState::Complete {
            self.set(TaskState::Shutdown, "shutdown");
        }
        self.reporter.forget();
    }

    /// Removes the task's secret and config files (its container is gone, or was never made).
    fn remove_files(&self) {
        if let Some(files) = &self.files {
            files.remove(&self.task.id);
        }
    }

    async fn stop(&mut self, id: &str) {
        match self.executor.stop(id, stop_grace(&self.task)).await {
            Ok(()) | Err(ExecError::ContainerNotFound { .. }) => {}
            Err(error) => {
                warn!(task.id = %self.task.id, container.id = %id, %error, "cannot stop container")
            }
        }
        if let Ok(info) = self.executor.inspect(id).await {
            self.exit_code = info.exit_code;
        }
        self.pid = 0;
    }

    fn exited(&mut self, code: i32) {
        self.pid = 0;
        self.exit_code = code;
        if code == 0 {
            self.set(TaskState::Complete, "finished");
        } else {
            let err = format!("task: non-zero exit ({code})");
            self.fail(TaskState::Failed, "failed", err);
        }
    }

    fn set(&mut self, state: TaskState, message: &str) {
        self.report(state, message, String::new());
    }

    fn fail(&mut self, state: TaskState, message: &str, err: String) {
        warn!(task.id = %self.task.id, state = state.as_str_name(), %err, "task failed");
        self.report(state, message, err);
    }

    fn report(&mut self, state: TaskState, message: &str, err: String) {
        if state <= self.state() {
            return;
        }
        debug!(task.id = %self.task.id, state = state.as_str_name(), "task state changed");
        // A container is never started again once its task has ended: its secrets go now, as
        // Docker unmounts a stopped container's secrets.
        if state >= TaskState::Complete {
            self.remove_files();
        }
        self.status = TaskStatus {
            timestamp: now_nanos(),
            state: state as i32,
            message: message.to_owned(),
            err,
            container: self.container_status(),
            scheduling_reason: String::new(),
            // The manager stamps when a task first runs.
            started_at: 0,
        };
        self.reporter.report(self.status.clone());
    }

    fn container_status(&self) -> Option<ContainerStatus> {
        self.container.as_ref().map(|id| ContainerStatus {
            container_id: id.clone(),
            pid: self.pid,
            exit_code: self.exit_code,
        })
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
