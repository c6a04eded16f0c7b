//! The allocator's writes: a VXLAN id and subnet for each new network, then an address on each
//! network a new task attaches to. Pools change in memory first; when a write fails the caller
//! rebuilds them from the store.

use mesh_proto::{
    Meta, Network, NetworkAttachment, NetworkAttachmentConfig, Service, Task, TaskState, TaskStatus,
};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};

use super::pools::Pools;
use crate::limits::{BATCH_WRITES, WRITES_IN_FLIGHT};
use crate::scheduler::PENDING_MESSAGE;
use crate::store::{Read, Store, StoreError, WriteTx, now_nanos};

/// A task that can leave NEW: not yet allocated, and still wanted.
pub(super) fn is_new(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_none_or(|s| s.state == TaskState::New as i32)
        && task.desired_state <= TaskState::Running as i32
}

/// Allocates every queued network that has no allocation yet. Networks the pools cannot serve
/// move to `blocked`, retried once something is released.
pub(super) async fn allocate_networks(
    store: &Store,
    pools: &mut Pools,
    queue: &mut BTreeSet<String>,
    blocked: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let ids: Vec<String> = queue.iter().cloned().collect();
    let failed = store
        .update(|tx| {
            let mut failed = Vec::new();
            let mut networks: Vec<Network> = ids
                .iter()
                .filter_map(|id| tx.get::<Network>(id))
                .filter(|n| n.allocation.is_none())
                .collect();
            networks.sort_by_key(|n| (written_at(n.meta.as_ref()), n.id.clone()));
            for mut network in networks {
                let id = network.id.clone();
                match pools.allocate_network(&network) {
                    Ok(allocation) => {
                        tracing::info!(network.id = %id, vni = allocation.vni,
                            subnet = %allocation.ipam.first().map_or("", |i| i.subnet.as_str()),
                            "network allocated");
                        network.allocation = Some(allocation);
                        tx.update(network)?;
                    }
                    Err(err) => {
                        tracing::warn!(network.id = %id, error = %err, "network allocation failed");
                        failed.push(id.clone());
                    }
                }
            }
            Ok(failed)
        })
        .await?;
    queue.clear();
    blocked.extend(failed);
    Ok(())
}

/// The NEW tasks, oldest write first: the order the allocator takes them in. Kept in that order
/// from the store's events, so that a pass reads only the batch it writes, not every task still
/// waiting (a hundred thousand tasks created at once are allocated 500 per commit).
#[derive(Debug, Default)]
pub(super) struct TaskQueue {
    order: BTreeSet<(u64, String)>,
    written_at: HashMap<String, u64>,
}

impl TaskQueue {
    /// Queues `task`, or moves it to where its latest write puts it.
    pub fn insert(&mut self, task: &Task) {
        let at = written_at(task.meta.as_ref());
        if let Some(before) = self.written_at.insert(task.id.clone(), at) {
            self.order.remove(&(before, task.id.clone()));
        }
        self.order.insert((at, task.id.clone()));
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(at) = self.written_at.remove(id) {
            self.order.remove(&(at, id.to_string()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The queued ids, oldest write first.
    pub fn oldest_first(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|(_, id)| id.as_str())
    }
}

/// The log index of an object's last write: creation order for objects not yet written since.
fn written_at(meta: Option<&Meta>) -> u64 {
    meta.and_then(|m| m.version.as_ref()).map_or(0, |v| v.index)
}

/// What became of one task.
enum Outcome {
    Attached(Vec<NetworkAttachment>),
    /// Stays NEW; the reason is shown in its status message.
    Wait(String),
    Reject(String),
}

/// The network a task's target names: by id, else by name.
pub(super) fn resolve<'a>(networks: &'a [Network], target: &str) -> Option<&'a Network> {
    networks.iter().find(|n| n.id == target).or_else(|| {
        networks.iter().find(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.name == target)
        })
    })
}

/// The task's attachments: its spec's networks, and the ingress network when its service
/// publishes ports through the routing mesh.
fn attach(
    pools: &mut Pools,
    networks: &[Network],
    service: Option<&Service>,
    task: &Task,
) -> Outcome {
    let mut targets: Vec<NetworkAttachmentConfig> = task
        .spec
        .as_ref()
        .map(|s| s.networks.clone())
        .unwrap_or_default();
    if service.is_some_and(super::services::publishes_ingress) {
        let Some(ingress) = super::services::ingress(networks) else {
            return Outcome::Wait("waiting for the ingress network".into());
        };
        if resolve(networks, &ingress.id).is_some()
            && !targets
                .iter()
                .any(|t| resolve(networks, &t.target).is_some_and(|n| n.id == ingress.id))
        {
            targets.push(NetworkAttachmentConfig {
                target: ingress.id.clone(),
                aliases: Vec::new(),
            });
        }
    }
    let mut attachments = Vec::new();
    pools.release_task(&task.id);
    for target in &targets {
        let Some(network) = resolve(networks, &target.target) else {
            pools.release_task(&task.id);
            return Outcome::Reject(format!("network {} not found", target.target));
        };
        if !pools.is_allocated(&network.id) {
            pools.release_task(&task.id);
            return Outcome::Wait(format!(
                "waiting for network {} to be allocated",
                target.target
            ));
        }
        let Some(allocation) = network.allocation.as_ref() else {
            pools.release_task(&task.id);
            return Outcome::Wait(format!(
                "waiting for network {} to be allocated",
                target.target
            ));
        };
        let gateway = allocation
            .ipam
            .first()
            .map(|ipam| ipam.gateway.clone())
            .unwrap_or_default();
        let vip = service
            .and_then(|s| s.endpoint.as_ref())
            .and_then(|e| e.virtual_ips.iter().find(|v| v.network_id == network.id))
            .map(|v| v.addr.clone())
            .unwrap_or_default();
        let vip_mode = service.is_some_and(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.endpoint.as_ref())
                .is_none_or(|e| e.mode() == mesh_proto::EndpointMode::Vip)
        });
        if vip_mode && vip.is_empty() {
            pools.release_task(&task.id);
            return Outcome::Wait(format!(
                "waiting for the service's virtual IP on network {}",
                target.target
            ));
        }
        match pools.allocate_address(&task.id, &network.id) {
            Ok(address) => attachments.push(NetworkAttachment {
                network_id: network.id.clone(),
                addresses: vec![address],
                aliases: target.aliases.clone(),
                vni: allocation.vni,
                gateway,
                vip,
            }),
            Err(err) => {
                pools.release_task(&task.id);
                return Outcome::Wait(format!("network {}: {err}", target.target));
            }
        }
    }
    Outcome::Attached(attachments)
}

fn set_status(
    tx: &mut WriteTx<'_>,
    mut task: Task,
    state: TaskState,
    message: &str,
    err: &str,
) -> Result<(), StoreError> {
    let status = task.status.get_or_insert_with(TaskStatus::default);
    if status.state == state as i32 && status.message == message && status.err == err {
        return Ok(());
    }
    status.state = state as i32;
    status.message = message.to_string();
    status.err = err.to_string();
    status.timestamp = now_nanos();
    tx.update(task)
}

/// Attaches queued NEW tasks to their networks and moves them to PENDING, oldest first: up to
/// [`WRITES_IN_FLIGHT`] transactions of a batch of the queue each, proposed together (they share
/// the Raft round trips; the pools, changed in memory as each is built, already hold the
/// addresses of the ones before). Tasks waiting for a network stay queued, and so do those left
/// for the next pass (which this pass's commits trigger); everything else leaves the queue once
/// written. When a write fails, what the others wrote still leaves the queue, and the failure is
/// returned (the caller rebuilds the pools from the store).
pub(super) async fn allocate_tasks(
    store: &Store,
    pools: &mut Pools,
    queue: &mut TaskQueue,
) -> Result<(), StoreError> {
    let ids: Vec<&str> = queue
        .oldest_first()
        .take(BATCH_WRITES * WRITES_IN_FLIGHT)
        .collect();
    // Each transaction is built whole before the next starts (in `update`, before it proposes):
    // the lock is never contended, it only lets the writes share the pools.
    let pools = Mutex::new(pools);
    let writes: Vec<_> = ids
        .chunks(BATCH_WRITES)
        .map(|ids| store.update(|tx| allocate_some(tx, &mut pools.lock(), ids)))
        .collect();
    let results = futures::future::join_all(writes).await;
    let mut done = Vec::new();
    let mut failed = Ok(());
    for result in results {
        match result {
            Ok(written) => done.extend(written),
            Err(err) => failed = Err(err),
        }
    }
    for id in done {
        queue.remove(&id);
    }
    failed
}

/// Allocates the tasks `ids` (queued NEW tasks) until `tx` holds a batch; returns the ids that
/// leave the queue.
fn allocate_some(
    tx: &mut WriteTx<'_>,
    pools: &mut Pools,
    ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    let networks = tx.list::<Network>();
    let mut done = Vec::new();
    for &id in ids {
        if tx.is_full() {
            break;
        }
        let Some(mut task) = tx.get::<Task>(id).filter(is_new) else {
            done.push(id.to_string());
            continue;
        };
        // The service read in place: a copy per task was a million copies of 1,000 services'
        // specs while a million tasks were created.
        let service = tx.peek::<Service>(&task.service_id);
        let outcome = attach(pools, &networks, service, &task);
        let ports = service
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.clone())
            .unwrap_or_default();
        match outcome {
            Outcome::Attached(attachments) => {
                task.networks = attachments;
                task.ports = ports;
                set_status(tx, task, TaskState::Pending, PENDING_MESSAGE, "")?;
                done.push(id.to_string());
            }
            Outcome::Wait(reason) => {
                tracing::debug!(task.id = %id, reason = %reason, "task allocation waits");
                set_status(tx, task, TaskState::New, &reason, "")?;
            }
            Outcome::Reject(err) => {
                tracing::info!(task.id = %id, error = %err, "task rejected by the allocator");
                set_status(
                    tx,
                    task,
                    TaskState::Rejected,
                    "network attachment failed",
                    &err,
                )?;
                done.push(id.to_string());
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Version;

    fn written(id: &str, index: u64) -> Task {
        Task {
            id: id.into(),
            meta: Some(Meta {
                version: Some(Version { index }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_queue_keeps_the_oldest_write_first() {
        let mut queue = TaskQueue::default();
        queue.insert(&written("c", 7));
        queue.insert(&written("a", 9));
        queue.insert(&written("b", 7));
        queue.insert(&Task {
            id: "unwritten".into(),
            ..Default::default()
        });
        let order = |q: &TaskQueue| q.oldest_first().map(String::from).collect::<Vec<_>>();
        assert_eq!(order(&queue), ["unwritten", "b", "c", "a"]);
        // Written again (a status message while it waits): it moves behind, and once only.
        queue.insert(&written("b", 12));
        assert_eq!(order(&queue), ["unwritten", "c", "a", "b"]);
        queue.remove("c");
        queue.remove("not queued");
        assert_eq!(order(&queue), ["unwritten", "a", "b"]);
        for id in ["unwritten", "a", "b"] {
            queue.remove(id);
        }
        assert!(queue.is_empty());
    }
}
