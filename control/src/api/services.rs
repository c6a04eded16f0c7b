//! Service and task requests: create, inspect, update, remove, list, and logs.

use futures::StreamExt;
use mesh_proto::chunks::{LIST_CHUNK_BYTES, field_len, split};
use mesh_proto::{
    CreateServiceRequest, Endpoint, EndpointSpec, GetServiceRequest, ListServicesResponse,
    ListTasksRequest, ListTasksResponse, LogMessage, Node, RemoveServiceRequest, Service,
    ServiceLogsRequest, ServiceSpec, Task, TaskState, UpdateServiceRequest, UpdateState,
    UpdateStatus, service_spec::Mode,
};
use std::collections::{BTreeSet, HashMap};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{ManagerContext, Stream, ports, resolve, secrets, status, validate};
use crate::limits;
use crate::store::{Kind, Read, Store, StoreError, WriteTx, new_id, now_nanos};

pub(super) fn get(store: &Store, req: GetServiceRequest) -> Result<Service, Status> {
    store
        .view_promptly(|tx| resolve::service(tx, &req.reference))
        .map_err(status)
}

pub(super) async fn create(store: &Store, req: CreateServiceRequest) -> Result<Service, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("service spec is missing"))?;
    let annotations = spec.annotations.get_or_insert_with(Default::default);
    if annotations.name.is_empty() {
        annotations.name = random_name();
    }
    let name = annotations.name.clone();
    validate::service_spec(&spec).map_err(Status::invalid_argument)?;
    let spec_endpoint = spec.endpoint.clone().unwrap_or_default();
    let service = Service {
        id: new_id(),
        spec: Some(spec),
        spec_version: 1,
        ..Default::default()
    };
    let id = service.id.clone();
    store
        .update(|tx| {
            if !tx
                .find::<Service>(|s| resolve::service_name(s) == name)
                .is_empty()
            {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::Service,
                    name: name.clone(),
                });
            }
            let mut service = service.clone();
            if let Some(spec) = service.spec.as_mut() {
                secrets::resolve_references(tx, spec)?;
            }
            check_networks(tx, service.spec.as_ref())?;
            check_cluster_tasks(tx, &service.id, service.spec.as_ref())?;
            service.endpoint = Some(endpoint(tx, &service.id, &spec_endpoint, None)?);
            tx.create(service)
        })
        .await
        .map_err(status)?;
    tracing::info!(service.id = %id, service.name = %name, "service created");
    get(store, GetServiceRequest { reference: id })
}

pub(super) async fn update(store: &Store, req: UpdateServiceRequest) -> Result<Service, Status> {
    if req.rollback {
        if req.spec.is_some() {
            return Err(Status::invalid_argument(
                "a rollback takes no spec: it returns to the previous one",
            ));
        }
    } else {
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("service spec is missing"))?;
        validate::service_spec(spec).map_err(Status::invalid_argument)?;
    }
    let id = store
        .update(|tx| {
            let mut service = resolve::service(tx, &req.service_id)?;
            if let Some(version) = &req.version
                && service.meta.as_ref().and_then(|m| m.version.as_ref()) != Some(version)
            {
                return Err(StoreError::Conflict {
                    kind: Kind::Service,
                    id: service.id,
                });
            }
            match &req.spec {
                Some(spec) => change_spec(tx, &mut service, spec.clone())?,
                None => {
                    roll_back(tx, &mut service, true)?;
                    service.update_status = Some(UpdateStatus {
                        state: UpdateState::RollbackStarted as i32,
                        started_at: now_nanos(),
                        completed_at: 0,
                        message: "manually requested rollback".into(),
                    });
                }
            }
            let id = service.id.clone();
            tx.update(service)?;
            Ok(id)
        })
        .await
        .map_err(status)?;
    get(store, GetServiceRequest { reference: id })
}

/// Makes `spec` the service's spec, the one it replaces its previous spec. A new task template
/// (or new ports) gets a new spec version, which starts a rolling update.
fn change_spec(
    tx: &WriteTx<'_>,
    service: &mut Service,
    mut spec: ServiceSpec,
) -> Result<(), StoreError> {
    let old = service.spec.clone().unwrap_or_default();
    let global = |m: &Option<Mode>| matches!(m, Some(Mode::Global(_)));
    if global(&old.mode) != global(&spec.mode) {
        return Err(StoreError::InvalidArgument(
            "a service's mode (replicated or global) cannot be changed".into(),
        ));
    }
    if old.annotations.as_ref().map(|a| &a.name) != spec.annotations.as_ref().map(|a| &a.name) {
        return Err(StoreError::InvalidArgument(
            "renaming services is not supported".into(),
        ));
    }
    secrets::resolve_references(tx, &mut spec)?;
    check_networks(tx, Some(&spec))?;
    check_cluster_tasks(tx, &service.id, Some(&spec))?;
    let wanted = spec.endpoint.clone().unwrap_or_default();
    service.endpoint = Some(endpoint(tx, &service.id, &wanted, service.endpoint.take())?);
    service.previous_spec_version = service.spec_version;
    // New tasks for a new task template, and for new ports (as Swarm does): a task carries the
    // ports its node publishes in host mode.
    if old.task != spec.task || old.endpoint != spec.endpoint {
        service.spec_version = next_spec_version(service);
        // A new spec starts a new update, also over a paused one (as Swarm resets the status).
        service.update_status = Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: now_nanos(),
            completed_at: 0,
            message: "update in progress".into(),
        });
    } else {
        // As Swarm: any other change clears the status; an update left paused over outdated
        // tasks starts again.
        service.update_status = None;
    }
    service.previous_spec = Some(old);
    service.spec = Some(spec);
    Ok(())
}

/// A spec version never given to this service before.
fn next_spec_version(service: &Service) -> u64 {
    service
        .last_spec_version
        .max(service.spec_version)
        .max(service.previous_spec_version)
        + 1
}

/// Makes the service's previous spec (and its spec version) current again, with its published
/// ports assigned. A rollback a user asks for swaps the two specs, as Swarm does, so rolling back
/// twice returns to the spec rolled back from; the updater's own rollback (`keep_previous`
/// false) leaves no previous spec, as Swarm's.
pub(crate) fn roll_back(
    tx: &WriteTx<'_>,
    service: &mut Service,
    keep_previous: bool,
) -> Result<(), StoreError> {
    let Some(previous) = service.previous_spec.take() else {
        return Err(StoreError::FailedPrecondition(format!(
            "service {} does not have a previous spec",
            resolve::service_name(service)
        )));
    };
    service.last_spec_version = service
        .last_spec_version
        .max(service.spec_version)
        .max(service.previous_spec_version);
    let wanted = previous.endpoint.clone().unwrap_or_default();
    service.endpoint = Some(endpoint(tx, &service.id, &wanted, service.endpoint.take())?);
    let current = service.spec.replace(previous);
    let current_version = service.spec_version;
    // A previous spec stored before spec versions were kept for it gets a fresh number.
    service.spec_version = match service.previous_spec_version {
        0 => next_spec_version(service),
        version => version,
    };
    if keep_previous {
        service.previous_spec = current;
        service.previous_spec_version = current_version;
    } else {
        service.previous_spec_version = 0;
    }
    Ok(())
}

/// The service's endpoint for `spec`: published ports assigned (keeping those `previous` gave),
/// virtual IPs carried over for the allocator to adjust.
fn endpoint(
    tx: &WriteTx<'_>,
    id: &str,
    spec: &EndpointSpec,
    previous: Option<Endpoint>,
) -> Result<Endpoint, StoreError> {
    let previous = previous.unwrap_or_default();
    // Read in place: a copy of every service for each one created or updated was half a million
    // copies over the creation of a thousand services.
    let services: Vec<&Service> = tx.iter::<Service>().collect();
    let ports =
        ports::assign(id, spec, &previous.ports, &services).map_err(StoreError::InvalidArgument)?;
    Ok(Endpoint {
        spec: Some(spec.clone()),
        ports,
        virtual_ips: previous.virtual_ips,
    })
}

pub(super) async fn remove(store: &Store, req: RemoveServiceRequest) -> Result<(), Status> {
    store
        .update(|tx| {
            let service = resolve::service(tx, &req.service_id)?;
            tx.delete::<Service>(&service.id)
        })
        .await
        .map_err(status)
}

/// The services with, for each, its tasks running and wanted, from one read, in chunks of at
/// most [`LIST_CHUNK_BYTES`]. The counts are the store's own, kept as it applies: the view
/// costs the services, not their tasks.
pub(super) fn list(store: &Store) -> Vec<ListServicesResponse> {
    let counted = store.view_promptly(|tx| {
        let counts = &tx.task_counts().by_service;
        tx.iter::<Service>()
            .map(|service| {
                let tasks = counts.get(service.id.as_str()).copied().unwrap_or_default();
                let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
                    Some(Mode::Replicated(r)) => r.replicas,
                    _ => tasks.wanted,
                };
                (service.clone(), tasks.running, desired)
            })
            .collect::<Vec<_>>()
    });
    let cost = |(service, running, desired): &(Service, u64, u64)| {
        field_len(1, service)
            + count_entry_len(2, &service.id, *running)
            + count_entry_len(3, &service.id, *desired)
    };
    split(counted, LIST_CHUNK_BYTES, cost, |run| {
        let mut chunk = ListServicesResponse::default();
        for (service, running, desired) in run {
            chunk.running_tasks.insert(service.id.clone(), running);
            chunk.desired_tasks.insert(service.id.clone(), desired);
            chunk.services.push(service);
        }
        chunk
    })
}

/// At least what one `map<string, uint64>` entry adds to a message as field `tag`.
fn count_entry_len(tag: u32, id: &String, count: u64) -> usize {
    use prost::encoding::{encoded_len_varint, key_len, string, uint64};
    let entry = string::encoded_len(1, id) + uint64::encoded_len(2, &count);
    key_len(tag) + encoded_len_varint(entry as u64) + entry
}

/// The tasks the request's filters select (each filter, when given, lists the values allowed),
/// from one read, in chunks of at most [`LIST_CHUNK_BYTES`].
pub(super) fn list_tasks(store: &Store, req: ListTasksRequest) -> Vec<ListTasksResponse> {
    // Sets, and the store's indexes when a filter names nodes or services: a request naming
    // thousands of nodes costs their tasks, not every task times every name.
    let services: BTreeSet<&str> = req.service_ids.iter().map(String::as_str).collect();
    let nodes: BTreeSet<&str> = req.node_ids.iter().map(String::as_str).collect();
    let desired: BTreeSet<i32> = req.desired_states.iter().copied().collect();
    let wanted = |t: &&Task| {
        (services.is_empty() || services.contains(t.service_id.as_str()))
            && (nodes.is_empty() || nodes.contains(t.node_id.as_str()))
            && (desired.is_empty() || desired.contains(&t.desired_state))
    };
    let tasks = store.view_promptly(|tx| {
        let mut tasks: Vec<Task> = if !nodes.is_empty() {
            let on = nodes.iter().flat_map(|n| tx.tasks_on_node(n));
            on.filter(wanted).cloned().collect()
        } else if !services.is_empty() {
            let of = services.iter().flat_map(|s| tx.tasks_of_service(s));
            of.filter(wanted).cloned().collect()
        } else {
            tx.iter::<Task>().filter(wanted).cloned().collect()
        };
        // In id order, as a scan gives them.
        tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        tasks
    });
    split(
        tasks,
        LIST_CHUNK_BYTES,
        |t| field_len(1, t),
        |tasks| ListTasksResponse { tasks },
    )
}

pub(super) fn logs(
    context: &ManagerContext,
    req: ServiceLogsRequest,
) -> Result<Stream<LogMessage>, Status> {
    let tasks = context
        .store
        .view_promptly(|tx| -> Result<Vec<Task>, StoreError> {
            match resolve::service(tx, &req.reference) {
                Ok(service) => Ok(tx
                    .tasks_of_service(&service.id)
                    .into_iter()
                    .cloned()
                    .collect()),
                Err(StoreError::NotFound { .. }) => resolve::task(tx, &req.reference)
                    .map(|t| vec![t])
                    .map_err(|_| StoreError::NotFound {
                        kind: Kind::Service,
                        id: req.reference.clone(),
                    }),
                Err(err) => Err(err),
            }
        })
        .map_err(status)?;
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for task in tasks {
        let started = task
            .status
            .as_ref()
            .is_some_and(|s| s.state >= TaskState::Preparing as i32);
        if !task.node_id.is_empty() && started {
            by_node.entry(task.node_id).or_default().push(task.id);
        }
    }
    let (rx, guard) = context
        .broker
        .subscribe(by_node, req.follow, req.tail, req.timestamps);
    // The guard lives as long as the stream: dropping it closes the subscription on every node.
    let stream = ReceiverStream::new(rx).map(move |m| {
        let _ = &guard;
        Ok(m)
    });
    Ok(Box::pin(stream))
}

/// The cluster's services, with service `id` as `spec`, must stay within the cluster-wide task
/// limit.
fn check_cluster_tasks(
    tx: &impl Read,
    id: &str,
    spec: Option<&ServiceSpec>,
) -> Result<(), StoreError> {
    let nodes = tx.iter::<Node>().count() as u64;
    let others = tx
        .iter::<Service>()
        .filter(|s| s.id != id)
        .filter_map(|s| s.spec.as_ref());
    limits::cluster_tasks(limits::wanted_tasks(others.chain(spec), nodes))?;
    Ok(())
}

/// Every network a service attaches to must exist (by id, name or id prefix).
fn check_networks(tx: &impl Read, spec: Option<&ServiceSpec>) -> Result<(), StoreError> {
    let targets = spec
        .and_then(|s| s.task.as_ref())
        .map(|t| t.networks.as_slice());
    for target in targets.unwrap_or_default() {
        resolve::network(tx, &target.target)?;
    }
    Ok(())
}

/// A Docker-style random name (`adjective_noun`) for a service created without one.
fn random_name() -> String {
    use rand::seq::IndexedRandom;
    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "quirky", "serene", "sharp", "tender", "vivid", "witty", "zealous",
    ];
    const NOUNS: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
        "newton", "noether", "pascal", "ritchie", "shannon", "tesla", "turing",
    ];
    let mut rng = rand::rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
        NOUNS.choose(&mut rng).unwrap_or(&"turing")
    )
}

#[cfg(test)]
mod tests;
