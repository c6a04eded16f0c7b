//! The executor: a small trait over the container runtime that runs a node's tasks, modelled on
//! SwarmKit's `agent/exec`. Docker (through bollard) is the real one; a fake exists for tests.

pub mod docker;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use mesh_proto::{NodeDescription, Task};

pub use crate::taskfiles::FileBind;
pub use docker::DockerExecutor;

/// Label holding the id of the task a container runs; every container mesh creates carries it.
pub const LABEL_TASK_ID: &str = "com.mesh.task.id";
/// Label holding the task's name, `<service>.<slot>.<task id>` (the container's name).
pub const LABEL_TASK_NAME: &str = "com.mesh.task.name";
pub const LABEL_SERVICE_ID: &str = "com.mesh.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.mesh.service.name";
pub const LABEL_NODE_ID: &str = "com.mesh.node.id";
/// Set (to `true`) on a task's sandbox container: the one that holds its network namespace.
pub const LABEL_SANDBOX: &str = "com.mesh.task.sandbox";

/// Swarm's default stop grace period, used when a task's spec sets none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Why an executor operation failed. Display is one line, fit for a task's `err` field.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot connect to the Docker daemon at {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the Docker daemon at {host} did not answer within {} s", seconds.as_secs())]
    NotAnswering { host: String, seconds: Duration },
    #[error("No such image: {image}")]
    ImageNotFound { image: String },
    #[error("pull {image}: {reason}")]
    Pull { image: String, reason: String },
    #[error("No such container: {id}")]
    ContainerNotFound { id: String },
    #[error("invalid task {task_id}: {reason}")]
    InvalidTask { task_id: String, reason: String },
    /// The engine answered and refused: `message` is its own words.
    #[error("{op}: {message}")]
    Engine { op: &'static str, message: String },
    /// This node's side of the work failed (writing the sandbox's `pause`).
    #[error("{what}: {source}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The engine could not be reached or answered nonsense.
    #[error("{op}: {source}")]
    Docker {
        op: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The state of one container, as an inspect sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub running: bool,
    /// 0 unless running.
    pub pid: i32,
    /// Meaningful once the container has exited.
    pub exit_code: i32,
    /// Created or running at some point: false for a container that was created and never started.
    pub started: bool,
    /// `None` when the container has no health check (neither the spec's nor its image's).
    pub health: Option<Health>,
}

/// A container's health, as its health check last judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not judged yet: within the start period, or before the first check's verdict.
    Starting,
    Healthy,
    /// As many checks in a row as its retries failed.
    Unhealthy,
}

/// A container created by mesh on this node, found by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerListing {
    pub id: String,
    pub task_id: String,
    pub running: bool,
    /// The task's sandbox, not its own container.
    pub sandbox: bool,
}

/// What part of a container's output to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new output as it comes.
    pub follow: bool,
    /// Only the last N lines; `None` for all of them.
    pub tail: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp, as `docker logs -t` does.
    pub timestamps: bool,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stderr: bool,
    pub data: Vec<u8>,
}

/// The container runtime as the worker sees it. Every operation names a container by the id that
/// `prepare` returned; operations on a container that is gone fail with `ContainerNotFound`.
pub trait Executor: Send + Sync + 'static {
    /// The node as the engine describes it: hostname, platform, resources, engine version and labels.
    fn describe(&self) -> BoxFuture<'_, Result<NodeDescription, ExecError>>;

    /// Gets the task's image according to its pull policy, then creates and starts the task's
    /// sandbox: a container that only holds the network namespace (with the hostname and DNS
    /// settings) the task's own container will join, so that its networks are in place before the
    /// task's process runs. Returns the sandbox's id; a sandbox the task has already is reused.
    fn prepare_sandbox<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<String, ExecError>>;

    /// Creates the task's container (not started) in the network namespace of `sandbox`, with
    /// `files` (its secrets and configs, already written) bind-mounted read-only; returns the
    /// container id.
    fn prepare<'a>(
        &'a self,
        task: &'a Task,
        sandbox: &'a str,
        files: &'a [FileBind],
    ) -> BoxFuture<'a, Result<String, ExecError>>;

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Resolves with the exit code once the container is not running (at once if it has exited).
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i32, ExecError>>;

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, ExecError>>;

    /// Resolves with the container's health once it differs from `last` (at once if it does
    /// already); never, for a container without a health check whose `last` is `None`.
    fn health_changed<'a>(
        &'a self,
        id: &'a str,
        last: Option<Health>,
    ) -> BoxFuture<'a, Result<Option<Health>, ExecError>>;

    /// Asks the container to stop, and kills it once `grace` has passed.
    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Removes the container (killing it if needed) and its anonymous volumes. A container that is
    /// already gone is not an error.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Every container carrying `LABEL_TASK_ID`, running or not, sandboxes included.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerListing>, ExecError>>;

    fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, ExecError>>;
}

/// The grace period of a task: its spec's, or Swarm's default of 10 s.
pub fn stop_grace(task: &Task) -> Duration {
    task.spec
        .as_ref()
        .and_then(|spec| spec.container.as_ref())
        .and_then(|container| container.stop_grace_period_ns)
        .and_then(|ns| u64::try_from(ns).ok())
        .map_or(DEFAULT_STOP_GRACE, Duration::from_nanos)
}

/// The container name of a task: `<service>.<slot>.<task id>`, or `<service>.<node id>.<task id>` for
/// a global task (slot 0), as Swarm names them.
pub fn task_name(task: &Task) -> String {
    let service = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(task.service_id.as_str());
    if task.slot == 0 {
        format!("{service}.{}.{}", task.node_id, task.id)
    } else {
        format!("{service}.{}.{}", task.slot, task.id)
    }
}
