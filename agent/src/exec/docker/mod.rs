//! The Docker executor: runs tasks as containers on a Docker Engine through bollard.

mod container;
mod health;
mod image;
mod logs;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use mesh_proto::{EngineDescription, NodeDescription, Platform, Resources, Task};
use tracing::info;

use super::{
    ContainerInfo, ContainerListing, ExecError, Executor, FileBind, Health, LogChunk, LogOptions,
};

/// Requests to the engine that do not stream give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The first request, at start: a daemon that does not answer it soon is not going to.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `mesh-pause`, the process of every task's sandbox, built by `build.rs`.
const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesh-pause"));

/// An executor backed by one Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    hostname: Option<String>,
    /// Nameservers written into containers' `resolv.conf` (the embedded DNS), when set.
    dns: Vec<String>,
    /// Where this node keeps `mesh-pause` for sandboxes to mount.
    pause: Option<PathBuf>,
}

impl DockerExecutor {
    /// Connects to the engine at `docker_host` (`unix:///var/run/docker.sock`, `tcp://host:2375`) and
    /// agrees on an API version with it. `hostname` overrides the OS's in `describe`.
    pub async fn connect(docker_host: &str, hostname: Option<String>) -> Result<Self, ExecError> {
        let connect_error = |source| ExecError::Connect {
            host: docker_host.to_owned(),
            source,
        };
        let docker = Docker::connect_with_host(docker_host)
            .map_err(connect_error)?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| ExecError::NotAnswering {
                host: docker_host.to_owned(),
                seconds: CONNECT_TIMEOUT,
            })?
            .map_err(connect_error)?;
        let version = docker.client_version();
        info!(docker.host = docker_host, api.version = %version, "docker engine connected");
        Ok(Self {
            docker,
            hostname,
            dns: Vec::new(),
            pause: None,
        })
    }

    /// Writes `mesh-pause` into `dir` (replacing what was there, atomically) for sandboxes to
    /// run; an executor without it cannot make sandboxes.
    pub fn with_sandboxes_from(mut self, dir: &Path) -> Result<Self, ExecError> {
        let path = dir.join("mesh-pause");
        let local = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| ExecError::Local { what, source }
        };
        std::fs::create_dir_all(dir).map_err(local("cannot create the directory of"))?;
        let partial = dir.join(".mesh-pause.partial");
        let mut file = std::fs::File::create(&partial).map_err(local("cannot write"))?;
        file.write_all(PAUSE).map_err(local("cannot write"))?;
        file.sync_all().map_err(local("cannot write"))?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .map_err(local("cannot make executable"))?;
        std::fs::rename(&partial, &path).map_err(local("cannot write"))?;
        self.pause = Some(path);
        Ok(self)
    }

    /// Points containers' `resolv.conf` at `servers` (the embedded DNS at 127.0.0.11).
    pub fn with_dns(mut self, servers: Vec<String>) -> Self {
        self.dns = servers;
        self
    }

    async fn describe_node(&self) -> Result<NodeDescription, ExecError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine_error("docker info", e))?;
        let hostname = match &self.hostname {
            Some(name) => name.clone(),
            None => os_hostname().or(info.name).unwrap_or_default(),
        };
        Ok(NodeDescription {
            hostname,
            platform: Some(Platform {
                os: info.os_type.unwrap_or_else(|| "linux".to_owned()),
                architecture: info.architecture.unwrap_or_default(),
            }),
            resources: Some(Resources {
                nano_cpus: info.ncpu.unwrap_or(0).saturating_mul(1_000_000_000),
                memory_bytes: info.mem_total.unwrap_or(0),
            }),
            engine: Some(EngineDescription {
                engine_version: info.server_version.unwrap_or_default(),
                labels: parse_labels(info.labels.unwrap_or_default()),
            }),
        })
    }
}

impl Executor for DockerExecutor {
    fn describe(&self) -> BoxFuture<'_, Result<NodeDescription, ExecError>> {
        self.describe_node().boxed()
    }

    fn prepare_sandbox<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<String, ExecError>> {
        async move {
            let spec = container::ContainerConfig::from_task(task)?;
            let pause = self.pause.as_deref().ok_or_else(|| ExecError::Engine {
                op: "create sandbox",
                message: "this node has no pause program for sandboxes".to_owned(),
            })?;
            image::ensure(&self.docker, &spec.image, spec.pull).await?;
            let id = container::create(&self.docker, &spec.sandbox(pause, &self.dns)).await?;
            if !container::inspect(&self.docker, &id).await?.running {
                container::start(&self.docker, &id).await?;
            }
            Ok(id)
        }
        .boxed()
    }

    fn prepare<'a>(
        &'a self,
        task: &'a Task,
        sandbox: &'a str,
        files: &'a [FileBind],
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        async move {
            let spec = container::ContainerConfig::from_task(task)?
                .in_sandbox(sandbox)
                .with_files(files);
            container::create(&self.docker, &spec).await
        }
        .boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        container::start(&self.docker, id).boxed()
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i32, ExecError>> {
        container::wait(&self.docker, id).boxed()
    }

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerInfo, ExecError>> {
        container::inspect(&self.docker, id).boxed()
    }

    fn health_changed<'a>(
        &'a self,
        id: &'a str,
        last: Option<Health>,
    ) -> BoxFuture<'a, Result<Option<Health>, ExecError>> {
        health::changed(&self.docker, id, last).boxed()
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), ExecError>> {
        container::stop(&self.docker, id, grace).boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ExecError>> {
        container::remove(&self.docker, id).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ContainerListing>, ExecError>> {
        container::list(&self.docker).boxed()
    }

    fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, ExecError>> {
        logs::stream(&self.docker, id, options)
    }
}

/// Maps a bollard error to ours, keeping the engine's own words when it answered.
fn engine_error(op: &'static str, error: BollardError) -> ExecError {
    match error {
        BollardError::DockerResponseServerError { message, .. } => {
            ExecError::Engine { op, message }
        }
        BollardError::DockerStreamError { error } => ExecError::Engine { op, message: error },
        source => ExecError::Docker { op, source },
    }
}

/// Like `engine_error`, but a 404 means the container is gone.
fn container_error(op: &'static str, id: &str, error: BollardError) -> ExecError {
    if is_not_found(&error) {
        ExecError::ContainerNotFound { id: id.to_owned() }
    } else {
        engine_error(op, error)
    }
}

fn is_not_found(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn os_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Engine labels come as `key=value` strings; a label without `=` has an empty value.
fn parse_labels(labels: Vec<String>) -> HashMap<String, String> {
    labels
        .into_iter()
        .map(|label| match label.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (label, String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_labels_are_split_at_the_first_equals_sign() {
        let labels = parse_labels(vec![
            "zone=a".to_owned(),
            "expr=x=y".to_owned(),
            "bare".to_owned(),
        ]);
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(labels.get("expr").map(String::as_str), Some("x=y"));
        assert_eq!(labels.get("bare").map(String::as_str), Some(""));
        assert_eq!(labels.len(), 3);
    }
}
