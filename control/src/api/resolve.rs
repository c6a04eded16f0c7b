//! Turning a user's reference (id, name or id prefix) into an object, as Docker resolves them.

use mesh_proto::{Node, Service, Task};

use crate::store::{Kind, Read, StoreError};

pub(super) fn pick<T: Clone>(
    kind: Kind,
    reference: &str,
    all: Vec<T>,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<T, StoreError> {
    if reference.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "{kind} reference is empty"
        )));
    }
    if let Some(found) = all.iter().find(|o| id(o) == reference) {
        return Ok(found.clone());
    }
    let by_name: Vec<&T> = all.iter().filter(|o| name(o) == reference).collect();
    if let [one] = by_name.as_slice() {
        return Ok((*one).clone());
    }
    let by_prefix: Vec<&T> = all
        .iter()
        .filter(|o| id(o).starts_with(reference))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(StoreError::NotFound {
            kind,
            id: reference.to_string(),
        }),
        many => Err(StoreError::InvalidArgument(format!(
            "{kind} {reference} is ambiguous ({} matches)",
            many.len()
        ))),
    }
}

pub fn service(tx: &impl Read, reference: &str) -> Result<Service, StoreError> {
    pick(
        Kind::Service,
        reference,
        tx.list::<Service>(),
        |s| &s.id,
        service_name,
    )
}

pub fn node(tx: &impl Read, reference: &str) -> Result<Node, StoreError> {
    pick(
        Kind::Node,
        reference,
        tx.list::<Node>(),
        |n| &n.id,
        |n| n.description.as_ref().map_or("", |d| d.hostname.as_str()),
    )
}

pub fn task(tx: &impl Read, reference: &str) -> Result<Task, StoreError> {
    pick(Kind::Task, reference, tx.list::<Task>(), |t| &t.id, |_| "")
}

pub fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

pub fn network(tx: &impl Read, reference: &str) -> Result<mesh_proto::Network, StoreError> {
    pick(
        Kind::Network,
        reference,
        tx.list::<mesh_proto::Network>(),
        |n| &n.id,
        network_name,
    )
}

pub fn network_name(network: &mesh_proto::Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}
