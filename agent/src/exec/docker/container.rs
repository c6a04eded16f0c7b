//! Containers of tasks: the create body built from a task's spec, and the container operations.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig, Mount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use mesh_proto::{PullPolicy, Task};
use tracing::debug;

use super::{container_error, engine_error, health, is_not_found};
use crate::exec::{
    ContainerInfo, ContainerListing, ExecError, FileBind, LABEL_NODE_ID, LABEL_SANDBOX,
    LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID, LABEL_TASK_NAME, stop_grace, task_name,
};

/// Headroom over a stop's grace period for the engine to kill and reap the container.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// Everything needed to create a task's container, taken from the task.
#[derive(Debug, Clone)]
pub(super) struct ContainerConfig {
    pub task_id: String,
    pub name: String,
    pub image: String,
    pub pull: PullPolicy,
    pub body: ContainerCreateBody,
}

impl ContainerConfig {
    pub fn from_task(task: &Task) -> Result<Self, ExecError> {
        let invalid = |reason: &str| ExecError::InvalidTask {
            task_id: task.id.clone(),
            reason: reason.to_owned(),
        };
        let spec = task.spec.as_ref().ok_or_else(|| invalid("no spec"))?;
        let container = spec
            .container
            .as_ref()
            .ok_or_else(|| invalid("no container spec"))?;
        if container.image.trim().is_empty() {
            return Err(invalid("no image"));
        }
        let name = task_name(task);
        let service_name = task
            .service_annotations
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();

        let mut labels: HashMap<String, String> = container.labels.clone();
        labels.insert(LABEL_TASK_ID.to_owned(), task.id.clone());
        labels.insert(LABEL_TASK_NAME.to_owned(), name.clone());
        labels.insert(LABEL_SERVICE_ID.to_owned(), task.service_id.clone());
        labels.insert(LABEL_SERVICE_NAME.to_owned(), service_name);
        labels.insert(LABEL_NODE_ID.to_owned(), task.node_id.clone());

        let limits = spec.resources.as_ref().and_then(|r| r.limits.as_ref());
        let grace_secs = i64::try_from(stop_grace(task).as_secs()).unwrap_or(i64::MAX);
        let mounts = container.mounts.iter().map(mount).collect::<Vec<_>>();
        let host_config = HostConfig {
            // Set to the sandbox's network namespace by `in_sandbox`.
            network_mode: Some("none".to_owned()),
            nano_cpus: limits.map(|l| l.nano_cpus).filter(|n| *n > 0),
            memory: limits.map(|l| l.memory_bytes).filter(|n| *n > 0),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            // As Swarm: the spec's command replaces the image's entrypoint, its args are the cmd.
            entrypoint: non_empty(&container.command),
            cmd: non_empty(&container.args),
            env: non_empty(&container.env),
            working_dir: non_blank(&container.dir),
            user: non_blank(&container.user),
            hostname: non_blank(&container.hostname),
            labels: Some(labels),
            stop_timeout: Some(grace_secs),
            // Absent: the image's HEALTHCHECK, if any, is Docker's to apply.
            healthcheck: health::config(container.healthcheck.as_ref()),
            host_config: Some(host_config),
            ..Default::default()
        };
        Ok(Self {
            task_id: task.id.clone(),
            name,
            image: container.image.clone(),
            pull: container.pull(),
            body,
        })
    }

    /// Joins the network namespace of sandbox container `sandbox`, which also carries the hostname
    /// and DNS settings (the engine refuses them on a container that joins another's network).
    pub fn in_sandbox(mut self, sandbox: &str) -> Self {
        self.body.hostname = None;
        if let Some(host) = self.body.host_config.as_mut() {
            host.network_mode = Some(format!("container:{sandbox}"));
            host.dns = None;
        }
        self
    }

    /// Adds a read-only bind mount of each of the task's secret and config files.
    pub fn with_files(mut self, files: &[FileBind]) -> Self {
        if files.is_empty() {
            return self;
        }
        if let Some(host) = self.body.host_config.as_mut() {
            let mounts = host.mounts.get_or_insert_with(Vec::new);
            mounts.extend(files.iter().map(|f| Mount {
                typ: Some(MountType::BIND),
                source: Some(f.source.display().to_string()),
                target: Some(f.target.clone()),
                read_only: Some(true),
                ..Default::default()
            }));
        }
        self
    }

    /// The task's sandbox: its image, running only `pause` (bind-mounted from this node at
    /// [`PAUSE_TARGET`]) with no network but the one meshd plugs in, the task's hostname and the
    /// given DNS servers; named after the task with a `.sandbox` suffix and labelled as its
    /// sandbox (not with the service's labels: a service's containers are its tasks').
    pub fn sandbox(&self, pause: &Path, dns: &[String]) -> Self {
        let mut labels = self.body.labels.clone().unwrap_or_default();
        labels.retain(|key, _| {
            [LABEL_TASK_ID, LABEL_TASK_NAME, LABEL_NODE_ID].contains(&key.as_str())
        });
        labels.insert(LABEL_SANDBOX.to_owned(), "true".to_owned());
        let pause_mount = Mount {
            typ: Some(MountType::BIND),
            source: Some(pause.display().to_string()),
            target: Some(PAUSE_TARGET.to_owned()),
            read_only: Some(true),
            ..Default::default()
        };
        let host_config = HostConfig {
            network_mode: Some("none".to_owned()),
            dns: (!dns.is_empty()).then(|| dns.to_vec()),
            mounts: Some(vec![pause_mount]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec![PAUSE_TARGET.to_owned()]),
            cmd: None,
            hostname: self.body.hostname.clone(),
            user: Some("0".to_owned()),
            labels: Some(labels),
            stop_timeout: Some(0),
            // The sandbox runs only `pause`: the image's health check is the task's, not its.
            healthcheck: Some(health::disabled()),
            host_config: Some(host_config),
            ..Default::default()
        };
        Self {
            task_id: self.task_id.clone(),
            name: format!("{}.sandbox", self.name),
            image: self.image.clone(),
            pull: self.pull,
            body,
        }
    }
}

/// Where a sandbox's `pause` is mounted.
pub const PAUSE_TARGET: &str = "/.mesh-pause";

fn mount(m: &mesh_proto::Mount) -> Mount {
    let kind = mesh_proto::MountType::try_from(m.r#type).unwrap_or(mesh_proto::MountType::Bind);
    let mut out = Mount {
        target: Some(m.target.clone()),
        source: non_blank(&m.source),
        read_only: Some(m.read_only),
        ..Default::default()
    };
    match kind {
        mesh_proto::MountType::Bind => out.typ = Some(MountType::BIND),
        mesh_proto::MountType::Volume => {
            out.typ = Some(MountType::VOLUME);
            out.volume_options = Some(MountVolumeOptions {
                no_copy: Some(m.volume_no_copy),
                labels: (!m.volume_labels.is_empty()).then(|| m.volume_labels.clone()),
                driver_config: (!m.volume_driver.is_empty() || !m.volume_driver_opts.is_empty())
                    .then(|| MountVolumeOptionsDriverConfig {
                        name: non_blank(&m.volume_driver),
                        options: (!m.volume_driver_opts.is_empty())
                            .then(|| m.volume_driver_opts.clone()),
                    }),
                ..Default::default()
            });
        }
        mesh_proto::MountType::Tmpfs => {
            out.typ = Some(MountType::TMPFS);
            out.source = None;
            out.tmpfs_options =
                (m.tmpfs_size_bytes > 0 || m.tmpfs_mode != 0).then(|| MountTmpfsOptions {
                    size_bytes: (m.tmpfs_size_bytes > 0).then_some(m.tmpfs_size_bytes),
                    mode: (m.tmpfs_mode != 0).then(|| i64::from(m.tmpfs_mode)),
                    ..Default::default()
                });
        }
    }
    out
}

fn non_empty(values: &[String]) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| values.to_vec())
}

fn non_blank(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Creates the container. If one of that name already exists for the same task (a create whose
/// answer was lost, or a daemon restarted mid-prepare), it is reused.
pub(super) async fn create(docker: &Docker, config: &ContainerConfig) -> Result<String, ExecError> {
    let options = CreateContainerOptions {
        name: Some(config.name.clone()),
        ..Default::default()
    };
    match docker
        .create_container(Some(options), config.body.clone())
        .await
    {
        Ok(created) => {
            debug!(task.id = %config.task_id, container.id = %created.id, "container created");
            Ok(created.id)
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        }) => {
            let existing = docker
                .inspect_container(&config.name, None::<InspectContainerOptions>)
                .await
                .map_err(|e| engine_error("create container", e))?;
            let labels = existing.config.and_then(|c| c.labels).unwrap_or_default();
            match (existing.id, labels.get(LABEL_TASK_ID)) {
                (Some(id), Some(task)) if *task == config.task_id => Ok(id),
                _ => Err(ExecError::Engine {
                    op: "create container",
                    message,
                }),
            }
        }
        Err(e) => Err(engine_error("create container", e)),
    }
}

pub(super) async fn start(docker: &Docker, id: &str) -> Result<(), ExecError> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| container_error("start container", id, e))
}

pub(super) async fn wait(docker: &Docker, id: &str) -> Result<i32, ExecError> {
    let options = WaitContainerOptions {
        condition: "not-running".to_owned(),
    };
    let mut answers = docker.wait_container(id, Some(options));
    match answers.next().await {
        Some(Ok(answer)) => Ok(exit_code(answer.status_code)),
        // bollard turns a non-zero exit into an error; for us it is an answer.
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(exit_code(code)),
        Some(Err(e)) => Err(container_error("wait container", id, e)),
        None => Err(ExecError::Engine {
            op: "wait container",
            message: "the engine closed the wait without an answer".to_owned(),
        }),
    }
}

pub(super) async fn inspect(docker: &Docker, id: &str) -> Result<ContainerInfo, ExecError> {
    let answer = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| container_error("inspect container", id, e))?;
    let state = answer.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    Ok(ContainerInfo {
        id: answer.id.unwrap_or_else(|| id.to_owned()),
        running,
        pid: if running {
            i32::try_from(state.pid.unwrap_or(0)).unwrap_or(0)
        } else {
            0
        },
        exit_code: exit_code(state.exit_code.unwrap_or(0)),
        started: !matches!(
            state.status,
            Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None
        ),
        health: health::from_status(state.health.and_then(|h| h.status)),
    })
}

pub(super) async fn stop(docker: &Docker, id: &str, grace: Duration) -> Result<(), ExecError> {
    let options = StopContainerOptions {
        t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
        signal: None,
    };
    // The engine answers only once the container is down, which may take the whole grace period.
    let docker = docker
        .clone()
        .with_timeout(grace.saturating_add(STOP_SLACK));
    docker
        .stop_container(id, Some(options))
        .await
        .map_err(|e| container_error("stop container", id, e))
}

pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), ExecError> {
    let options = RemoveContainerOptions {
        v: true,
        force: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Err(e) if is_not_found(&e) => Ok(()),
        other => other.map_err(|e| engine_error("remove container", e)),
    }
}

pub(super) async fn list(docker: &Docker) -> Result<Vec<ContainerListing>, ExecError> {
    let filters = HashMap::from([("label".to_owned(), vec![LABEL_TASK_ID.to_owned()])]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("list containers", e))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.as_ref()?;
            let task_id = labels.get(LABEL_TASK_ID)?.clone();
            let sandbox = labels.get(LABEL_SANDBOX).is_some_and(|v| v == "true");
            Some(ContainerListing {
                id: c.id?,
                task_id,
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                sandbox,
            })
        })
        .collect())
}

fn exit_code(code: i64) -> i32 {
    i32::try_from(code).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use mesh_proto::{
        Annotations, ContainerSpec, MountType as Kind, ResourceRequirements, Resources, TaskSpec,
    };

    use super::*;

    fn task(slot: u64) -> Task {
        Task {
            id: "t1".to_owned(),
            service_id: "s1".to_owned(),
            node_id: "n1".to_owned(),
            slot,
            service_annotations: Some(Annotations {
                name: "web".to_owned(),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".to_owned(),
                    command: vec!["sh".to_owned(), "-c".to_owned()],
                    args: vec!["sleep 1".to_owned()],
                    env: vec!["A=1".to_owned()],
                    labels: HashMap::from([("team".to_owned(), "x".to_owned())]),
                    mounts: vec![mesh_proto::Mount {
                        r#type: Kind::Tmpfs as i32,
                        target: "/scratch".to_owned(),
                        tmpfs_size_bytes: 1 << 20,
                        ..Default::default()
                    }],
                    stop_grace_period_ns: Some(3_000_000_000),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: 500_000_000,
                        memory_bytes: 64 << 20,
                    }),
                    reservations: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn create_body_follows_the_spec() {
        let config = ContainerConfig::from_task(&task(2)).expect("valid task");
        assert_eq!(config.name, "web.2.t1");
        let body = &config.body;
        assert_eq!(
            body.entrypoint.as_deref(),
            Some(&["sh".to_owned(), "-c".to_owned()][..])
        );
        assert_eq!(body.cmd.as_deref(), Some(&["sleep 1".to_owned()][..]));
        assert_eq!(body.stop_timeout, Some(3));
        assert_eq!(body.working_dir, None);
        let labels = body.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_TASK_ID).map(String::as_str), Some("t1"));
        assert_eq!(
            labels.get(LABEL_TASK_NAME).map(String::as_str),
            Some("web.2.t1")
        );
        assert_eq!(
            labels.get(LABEL_SERVICE_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("x"));
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::TMPFS));
        assert_eq!(mounts[0].source, None);
        assert_eq!(
            mounts[0].tmpfs_options.as_ref().and_then(|o| o.size_bytes),
            Some(1 << 20)
        );
    }

    #[test]
    fn a_task_joins_its_sandbox_which_holds_its_network_settings() {
        let mut t = task(2);
        if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.hostname = "web-host".to_owned();
        }
        let config = ContainerConfig::from_task(&t).expect("valid task");
        let dns = vec!["127.0.0.11".to_owned()];
        let sandbox = config.sandbox(Path::new("/var/lib/mesh/mesh-pause"), &dns);
        assert_eq!(sandbox.name, "web.2.t1.sandbox");
        let body = &sandbox.body;
        assert_eq!(body.image.as_deref(), Some("busybox"));
        assert_eq!(
            body.entrypoint.as_deref(),
            Some(&[PAUSE_TARGET.to_owned()][..])
        );
        assert_eq!(body.hostname.as_deref(), Some("web-host"));
        let labels = body.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_SANDBOX).map(String::as_str), Some("true"));
        assert_eq!(labels.get(LABEL_TASK_ID).map(String::as_str), Some("t1"));
        assert!(
            !labels.contains_key("team"),
            "the task's own labels stay on the task"
        );
        assert!(
            !labels.contains_key(LABEL_SERVICE_NAME),
            "a service's containers are its tasks'"
        );
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.dns, Some(dns));
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(
            mounts[0].source.as_deref(),
            Some("/var/lib/mesh/mesh-pause")
        );
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(host.memory, None, "limits are the task's");

        let joined = config.in_sandbox("sb1");
        assert_eq!(joined.body.hostname, None);
        let host = joined.body.host_config.unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("container:sb1"));
        assert_eq!(host.dns, None);
        assert_eq!(host.memory, Some(64 << 20));
    }

    #[test]
    fn global_tasks_are_named_after_their_node() {
        let config = ContainerConfig::from_task(&task(0)).expect("valid task");
        assert_eq!(config.name, "web.n1.t1");
    }

    #[test]
    fn a_task_without_image_is_invalid() {
        let mut t = task(1);
        if let Some(c) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.image.clear();
        }
        let err = ContainerConfig::from_task(&t).expect_err("no image");
        assert_eq!(err.to_string(), "invalid task t1: no image");
    }

    #[test]
    fn volume_driver_options_and_tmpfs_mode_reach_docker() {
        let volume = mount(&mesh_proto::Mount {
            r#type: Kind::Volume as i32,
            source: "app_data".to_owned(),
            target: "/data".to_owned(),
            volume_driver: "local".to_owned(),
            volume_driver_opts: HashMap::from([("type".to_owned(), "tmpfs".to_owned())]),
            ..Default::default()
        });
        assert_eq!(volume.typ, Some(MountType::VOLUME));
        assert_eq!(volume.source.as_deref(), Some("app_data"));
        let driver = volume
            .volume_options
            .and_then(|o| o.driver_config)
            .expect("driver config");
        assert_eq!(driver.name.as_deref(), Some("local"));
        assert_eq!(
            driver
                .options
                .unwrap_or_default()
                .get("type")
                .map(String::as_str),
            Some("tmpfs")
        );

        let plain = mount(&mesh_proto::Mount {
            r#type: Kind::Volume as i32,
            source: "app_data".to_owned(),
            target: "/data".to_owned(),
            ..Default::default()
        });
        assert_eq!(plain.volume_options.and_then(|o| o.driver_config), None);

        let tmpfs = mount(&mesh_proto::Mount {
            r#type: Kind::Tmpfs as i32,
            target: "/t".to_owned(),
            tmpfs_mode: 0o1777,
            ..Default::default()
        });
        let options = tmpfs.tmpfs_options.expect("tmpfs options");
        assert_eq!(options.mode, Some(0o1777));
        assert_eq!(options.size_bytes, None);
    }
}
