//! Limits on what one request may ask of the managers, so that no single request can take one
//! down. The API checks every request against them before anything is written (meshctl checks
//! the same before it sends), and each refusal is one line naming the value and the limit. Two
//! backstops hold whatever the origin of a write: the store refuses a transaction that encodes to
//! more than [`MAX_TX_BYTES`], and the reconcilers write at most [`BATCH_WRITES`] objects (and about
//! [`BATCH_BYTES`]) per transaction, continuing after each commit. The README lists these values.

use mesh_proto::{Annotations, ServiceSpec};
use prost::Message;
use std::collections::HashMap;

/// Replicas of one replicated service.
pub const MAX_REPLICAS: u64 = 100_000;
/// Tasks the cluster's services may want running together: the replicas of every replicated
/// service plus, for each global service, one per node. A million: the size the managers are
/// built and measured for (`cargo xtask bench scale`: the leader holds every task in memory,
/// within 4 GiB at that size, and its scheduler, dispatcher and snapshots scale to it); a
/// cluster beyond has not been measured, and its leader's memory would grow without bound.
pub const MAX_TASKS_PER_CLUSTER: u64 = 1_000_000;
/// A service name: a DNS label.
pub const MAX_SERVICE_NAME: usize = 63;
/// A network name.
pub const MAX_NETWORK_NAME: usize = 64;
/// Labels on one object (service, container, node, network), and a network's driver options.
pub const MAX_LABELS: usize = 64;
/// A label's (or driver option's) key, in bytes.
pub const MAX_LABEL_KEY: usize = 128;
/// A label's (or driver option's) value, in bytes.
pub const MAX_LABEL_VALUE: usize = 4096;
/// Environment variables of a service's container.
pub const MAX_ENV: usize = 1024;
/// One `KEY=VALUE` environment entry, in bytes.
pub const MAX_ENV_ENTRY: usize = 32 * 1024;
/// The words of a container's command and arguments together.
pub const MAX_ARGS: usize = 1024;
/// Mounts of a service's container (and, each, its secrets and its configs).
pub const MAX_MOUNTS: usize = 64;
/// Published ports of a service.
pub const MAX_PORTS: usize = 128;
/// Placement constraints and preferences of a service, each.
pub const MAX_CONSTRAINTS: usize = 64;
/// Networks a service attaches to.
pub const MAX_SERVICE_NETWORKS: usize = 32;
/// A whole service spec, encoded. Every task carries a copy of its part of it.
pub const MAX_SPEC_BYTES: usize = 128 * 1024;
/// One gRPC request to the control API, encoded.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// One store transaction, encoded: the largest Raft entry a write can propose (the proposer adds
/// at most its batch size of other transactions to an entry).
pub const MAX_TX_BYTES: usize = 4 * 1024 * 1024;
/// Objects one reconciler transaction writes before it commits and continues in the next.
pub const BATCH_WRITES: usize = 500;
/// Bytes one reconciler transaction writes before it commits and continues in the next.
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Transactions of a batch each that one writer of the leader's task pipeline (the allocator,
/// the scheduler, the dispatcher's status writer) proposes together: they share the Raft round
/// trips (the proposer puts them in the same entries). With one in flight, each stage moved a
/// batch per commit: in the loss of a tenth of 10,000 nodes, 2,500 status reports a second while
/// a hundred thousand replacements waited.
pub const WRITES_IN_FLIGHT: usize = 4;

/// A request beyond a limit: one line naming what, how much, and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("replicas {replicas} is above the limit of {MAX_REPLICAS} per service")]
    Replicas { replicas: u64 },
    #[error(
        "the cluster's services would want {wanted} tasks, above the limit of \
         {MAX_TASKS_PER_CLUSTER}: scale other services down first"
    )]
    ClusterTasks { wanted: u64 },
    #[error("{what} has {count} entries, above the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{what} {preview:?} is {len} bytes long, above the limit of {limit}")]
    TooLong {
        what: &'static str,
        /// The start of the value, to say which one without echoing all of it.
        preview: String,
        len: usize,
        limit: usize,
    },
    #[error("the service spec is {bytes} bytes encoded, above the limit of {MAX_SPEC_BYTES}")]
    SpecBytes { bytes: usize },
    #[error(
        "the change would write {bytes} bytes in one transaction, above the limit of \
         {MAX_TX_BYTES}"
    )]
    Transaction { bytes: usize },
}

/// The longest start of `value` shown in an error.
const PREVIEW: usize = 32;

fn preview(value: &str) -> String {
    let mut end = value.len().min(PREVIEW);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    if end < value.len() {
        format!("{}...", &value[..end])
    } else {
        value.to_string()
    }
}

fn count(what: &'static str, count: usize, limit: usize) -> Result<(), LimitError> {
    if count > limit {
        return Err(LimitError::TooMany { what, count, limit });
    }
    Ok(())
}

fn length(what: &'static str, value: &str, limit: usize) -> Result<(), LimitError> {
    if value.len() > limit {
        return Err(LimitError::TooLong {
            what,
            preview: preview(value),
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

/// `--replicas N`.
pub fn replicas(replicas: u64) -> Result<(), LimitError> {
    if replicas > MAX_REPLICAS {
        return Err(LimitError::Replicas { replicas });
    }
    Ok(())
}

/// A map of labels (or driver options) named `what`.
pub fn labels(what: &'static str, labels: &HashMap<String, String>) -> Result<(), LimitError> {
    count(what, labels.len(), MAX_LABELS)?;
    // In key order, so that the same request is always refused for the same entry.
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for key in keys {
        length("label key", key, MAX_LABEL_KEY)?;
        length("label value", &labels[key], MAX_LABEL_VALUE)?;
    }
    Ok(())
}

pub(crate) fn annotations(
    what: &'static str,
    annotations: Option<&Annotations>,
) -> Result<(), LimitError> {
    annotations.map_or(Ok(()), |a| labels(what, &a.labels))
}

/// A network's name, labels and driver options.
pub fn network(spec: &mesh_proto::NetworkSpec) -> Result<(), LimitError> {
    if let Some(a) = &spec.annotations {
        length("network name", &a.name, MAX_NETWORK_NAME)?;
    }
    annotations("network labels", spec.annotations.as_ref())?;
    labels("network driver options", &spec.driver_opts)
}

/// A node's labels.
pub fn node(spec: &mesh_proto::NodeSpec) -> Result<(), LimitError> {
    annotations("node labels", spec.annotations.as_ref())
}

/// Every limit on one service spec; the cluster-wide task limit is [`cluster_tasks`].
pub fn service_spec(spec: &ServiceSpec) -> Result<(), LimitError> {
    if let Some(a) = &spec.annotations {
        length("service name", &a.name, MAX_SERVICE_NAME)?;
    }
    if let Some(mesh_proto::service_spec::Mode::Replicated(r)) = &spec.mode {
        replicas(r.replicas)?;
    }
    annotations("service labels", spec.annotations.as_ref())?;
    if let Some(task) = &spec.task {
        if let Some(c) = &task.container {
            count("the container's environment", c.env.len(), MAX_ENV)?;
            for env in &c.env {
                length("environment entry", env, MAX_ENV_ENTRY)?;
            }
            count(
                "the container's command and arguments",
                c.command.len() + c.args.len(),
                MAX_ARGS,
            )?;
            count("the container's mounts", c.mounts.len(), MAX_MOUNTS)?;
            for mount in &c.mounts {
                labels("volume labels", &mount.volume_labels)?;
                labels("volume driver options", &mount.volume_driver_opts)?;
            }
            count("the container's secrets", c.secrets.len(), MAX_MOUNTS)?;
            count("the container's configs", c.configs.len(), MAX_MOUNTS)?;
            labels("container labels", &c.labels)?;
        }
        if let Some(p) = &task.placement {
            count(
                "placement constraints",
                p.constraints.len(),
                MAX_CONSTRAINTS,
            )?;
            count(
                "placement preferences",
                p.preferences.len(),
                MAX_CONSTRAINTS,
            )?;
        }
        count(
            "the service's networks",
            task.networks.len(),
            MAX_SERVICE_NETWORKS,
        )?;
    }
    if let Some(endpoint) = &spec.endpoint {
        count("published ports", endpoint.ports.len(), MAX_PORTS)?;
    }
    let bytes = spec.encoded_len();
    if bytes > MAX_SPEC_BYTES {
        return Err(LimitError::SpecBytes { bytes });
    }
    Ok(())
}

/// The tasks a set of services wants: replicas, plus one per node for each global service.
pub fn wanted_tasks<'a>(services: impl IntoIterator<Item = &'a ServiceSpec>, nodes: u64) -> u64 {
    services
        .into_iter()
        .map(|spec| match &spec.mode {
            Some(mesh_proto::service_spec::Mode::Replicated(r)) => r.replicas,
            Some(mesh_proto::service_spec::Mode::Global(_)) => nodes,
            None => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// The cluster-wide task limit, for services wanting `wanted` tasks together.
pub fn cluster_tasks(wanted: u64) -> Result<(), LimitError> {
    if wanted > MAX_TASKS_PER_CLUSTER {
        return Err(LimitError::ClusterTasks { wanted });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
