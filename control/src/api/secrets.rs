//! Secret and config requests, alike but for what they return: create (validated as Swarm's),
//! inspect and list (a secret's data never leaves the store this way; a config's does, as
//! `docker config inspect` shows it), update (labels only: the data is immutable, so rotating one
//! means a new object and a service update) and remove (refused while a service uses it).

use mesh_proto::chunks::{LIST_CHUNK_BYTES, field_len, split};
use mesh_proto::{Annotations, Config, ConfigSpec, ContainerSpec, Secret, SecretSpec, Service};
use tonic::Status;

use super::{resolve, status};
use crate::store::{Kind, Read, Store, StoreError, StoreObject, new_id};

/// Swarm's limit on a secret's data (`MaxSecretSize`): it must be shorter than this.
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// Swarm's limit on a config's data (`MaxConfigSize`).
pub const MAX_CONFIG_BYTES: usize = 1000 * 1024;
/// The longest secret or config name.
pub const MAX_NAME: usize = 64;

/// What secrets and configs have in common, for the handlers below.
pub(super) trait Payload: StoreObject {
    /// The spec as requests carry it.
    type Spec: Clone + PartialEq;
    /// The data must be shorter than this many bytes.
    const MAX_DATA: usize;
    /// Whether the API returns the data.
    const SHOWS_DATA: bool;

    fn build(id: String, spec: Self::Spec) -> Self;
    fn spec(&self) -> Option<&Self::Spec>;
    fn set_spec(&mut self, spec: Self::Spec);
    fn annotations(spec: &Self::Spec) -> Option<&Annotations>;
    fn set_annotations(spec: &mut Self::Spec, annotations: Option<Annotations>);
    fn data(spec: &Self::Spec) -> &[u8];
    fn clear_data(&mut self);
    /// The ids of the objects of this type `container` uses.
    fn used_ids(container: &ContainerSpec) -> Vec<&str>;

    fn name(&self) -> &str {
        self.spec()
            .and_then(Self::annotations)
            .map_or("", |a| a.name.as_str())
    }
}

impl Payload for Secret {
    type Spec = SecretSpec;
    const MAX_DATA: usize = MAX_SECRET_BYTES;
    const SHOWS_DATA: bool = false;

    fn build(id: String, spec: SecretSpec) -> Self {
        Secret {
            id,
            spec: Some(spec),
            ..Default::default()
        }
    }
    fn spec(&self) -> Option<&SecretSpec> {
        self.spec.as_ref()
    }
    fn set_spec(&mut self, spec: SecretSpec) {
        self.spec = Some(spec);
    }
    fn annotations(spec: &SecretSpec) -> Option<&Annotations> {
        spec.annotations.as_ref()
    }
    fn set_annotations(spec: &mut SecretSpec, annotations: Option<Annotations>) {
        spec.annotations = annotations;
    }
    fn data(spec: &SecretSpec) -> &[u8] {
        &spec.data
    }
    fn clear_data(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.data.clear();
        }
    }
    fn used_ids(container: &ContainerSpec) -> Vec<&str> {
        container
            .secrets
            .iter()
            .map(|r| r.secret_id.as_str())
            .collect()
    }
}

impl Payload for Config {
    type Spec = ConfigSpec;
    const MAX_DATA: usize = MAX_CONFIG_BYTES;
    const SHOWS_DATA: bool = true;

    fn build(id: String, spec: ConfigSpec) -> Self {
        Config {
            id,
            spec: Some(spec),
            ..Default::default()
        }
    }
    fn spec(&self) -> Option<&ConfigSpec> {
        self.spec.as_ref()
    }
    fn set_spec(&mut self, spec: ConfigSpec) {
        self.spec = Some(spec);
    }
    fn annotations(spec: &ConfigSpec) -> Option<&Annotations> {
        spec.annotations.as_ref()
    }
    fn set_annotations(spec: &mut ConfigSpec, annotations: Option<Annotations>) {
        spec.annotations = annotations;
    }
    fn data(spec: &ConfigSpec) -> &[u8] {
        &spec.data
    }
    fn clear_data(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.data.clear();
        }
    }
    fn used_ids(container: &ContainerSpec) -> Vec<&str> {
        container
            .configs
            .iter()
            .map(|r| r.config_id.as_str())
            .collect()
    }
}

/// Swarm's rule for secret and config names: `[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?`, at
/// most 64 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must be provided".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = name.len() <= MAX_NAME
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: only {MAX_NAME} [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
        ))
    }
}

/// A spec's name, labels and data size, each refused in one line.
pub(super) fn validate<T: Payload>(spec: &T::Spec) -> Result<(), String> {
    let annotations = T::annotations(spec);
    validate_name(annotations.map_or("", |a| a.name.as_str()))?;
    crate::limits::annotations("labels", annotations).map_err(|e| e.to_string())?;
    let len = T::data(spec).len();
    if len == 0 || len >= T::MAX_DATA {
        return Err(format!(
            "{} data must be larger than 0 and less than {} bytes (it is {len})",
            T::KIND,
            T::MAX_DATA
        ));
    }
    Ok(())
}

/// The object as the API returns it.
fn shown<T: Payload>(mut object: T) -> T {
    if !T::SHOWS_DATA {
        object.clear_data();
    }
    object
}

fn pick<T: Payload>(tx: &impl Read, reference: &str) -> Result<T, StoreError> {
    resolve::pick(
        T::KIND,
        reference,
        tx.iter::<T>(),
        <T as StoreObject>::id,
        <T as Payload>::name,
    )
}

pub(super) async fn create<T: Payload>(store: &Store, spec: Option<T::Spec>) -> Result<T, Status> {
    let spec =
        spec.ok_or_else(|| Status::invalid_argument(format!("{} spec is missing", T::KIND)))?;
    validate::<T>(&spec).map_err(Status::invalid_argument)?;
    let object = T::build(new_id(), spec);
    let (id, name) = (object.id().to_string(), object.name().to_string());
    store
        .update(|tx| {
            if tx.iter::<T>().any(|o| o.name() == name) {
                return Err(StoreError::AlreadyExists {
                    kind: T::KIND,
                    name: name.clone(),
                });
            }
            tx.create(object)
        })
        .await
        .map_err(status)?;
    tracing::info!(kind = %T::KIND, id = %id, name = %name, "created");
    get::<T>(store, &id)
}

pub(super) fn get<T: Payload>(store: &Store, reference: &str) -> Result<T, Status> {
    store
        .view_promptly(|tx| pick::<T>(tx, reference))
        .map(shown)
        .map_err(status)
}

/// Every secret (or config), as the API shows it, from one read, in chunks of at most
/// [`LIST_CHUNK_BYTES`] made into messages by `chunk`.
pub(super) fn list<T: Payload + prost::Message, R>(
    store: &Store,
    chunk: impl FnMut(Vec<T>) -> R,
) -> Vec<R> {
    let objects = store.view_promptly(|tx| tx.iter::<T>().cloned().map(shown).collect());
    split(objects, LIST_CHUNK_BYTES, |o| field_len(1, o), chunk)
}

/// Changes the labels; any other change is refused, as Swarm refuses it.
pub(super) async fn update<T: Payload>(
    store: &Store,
    reference: &str,
    version: Option<mesh_proto::Version>,
    spec: Option<T::Spec>,
) -> Result<T, Status> {
    let spec =
        spec.ok_or_else(|| Status::invalid_argument(format!("{} spec is missing", T::KIND)))?;
    let id = store
        .update(|tx| {
            let mut object = pick::<T>(tx, reference)?;
            if let Some(version) = &version
                && object.version() != version.index
            {
                return Err(StoreError::Conflict {
                    kind: T::KIND,
                    id: object.id().to_string(),
                });
            }
            let current = object.spec().cloned().ok_or_else(|| {
                StoreError::InvalidArgument(format!("{} {} has no spec", T::KIND, object.id()))
            })?;
            let name = |s: &T::Spec| T::annotations(s).map(|a| a.name.clone());
            // The data may be left out or sent back unchanged (as `docker stack deploy` does on a
            // re-deploy), compared in constant time as Swarm compares it.
            let data = T::data(&spec);
            let data_kept =
                data.is_empty() || crate::ca::token::constant_time_eq(data, T::data(&current));
            if name(&spec) != name(&current) || !data_kept {
                return Err(StoreError::InvalidArgument(
                    "only updates to Labels are allowed".into(),
                ));
            }
            crate::limits::annotations("labels", T::annotations(&spec))?;
            let mut next = current;
            T::set_annotations(&mut next, T::annotations(&spec).cloned());
            object.set_spec(next);
            let id = object.id().to_string();
            tx.update(object)?;
            Ok(id)
        })
        .await
        .map_err(status)?;
    get::<T>(store, &id)
}

/// Removes it unless a service uses it; the refusal names the services, as Swarm's does.
pub(super) async fn remove<T: Payload>(store: &Store, reference: &str) -> Result<(), Status> {
    store
        .update(|tx| {
            let object = pick::<T>(tx, reference)?;
            let mut users: Vec<String> = tx
                .iter::<Service>()
                .filter(|s| {
                    s.spec
                        .as_ref()
                        .and_then(|s| s.task.as_ref())
                        .and_then(|t| t.container.as_ref())
                        .is_some_and(|c| T::used_ids(c).contains(&object.id()))
                })
                .map(|s| resolve::service_name(s).to_string())
                .collect();
            users.sort();
            if !users.is_empty() {
                return Err(StoreError::InvalidArgument(format!(
                    "{} '{}' is in use by the following service{}: {}",
                    T::KIND,
                    object.name(),
                    if users.len() == 1 { "" } else { "s" },
                    users.join(", ")
                )));
            }
            tx.delete::<T>(object.id())
        })
        .await
        .map_err(status)
}

/// Resolves each secret and config reference of `spec` (by id, name or unique id prefix) to the
/// object's id and name, then checks the files they make. Every reference that resolves to
/// nothing is named in one line, as Swarm's "secrets not found: a, b".
pub(super) fn resolve_references(
    tx: &impl Read,
    spec: &mut mesh_proto::ServiceSpec,
) -> Result<(), StoreError> {
    let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) else {
        return Ok(());
    };
    let mut missing = Vec::new();
    for r in &mut container.secrets {
        let wanted = first_set(&r.secret_id, &r.secret_name);
        match pick::<Secret>(tx, &wanted) {
            Ok(secret) => {
                r.secret_name = secret.name().to_string();
                r.secret_id = secret.id;
            }
            Err(StoreError::NotFound { .. }) => missing.push(wanted),
            Err(err) => return Err(err),
        }
    }
    not_found(Kind::Secret, &missing)?;
    for r in &mut container.configs {
        let wanted = first_set(&r.config_id, &r.config_name);
        match pick::<Config>(tx, &wanted) {
            Ok(config) => {
                r.config_name = config.name().to_string();
                r.config_id = config.id;
            }
            Err(StoreError::NotFound { .. }) => missing.push(wanted),
            Err(err) => return Err(err),
        }
    }
    not_found(Kind::Config, &missing)?;
    crate::files::files(container).map_err(StoreError::InvalidArgument)?;
    Ok(())
}

fn first_set(id: &str, name: &str) -> String {
    if id.is_empty() { name } else { id }.to_string()
}

fn not_found(kind: Kind, missing: &[String]) -> Result<(), StoreError> {
    match missing {
        [] => Ok(()),
        [one] => Err(StoreError::InvalidArgument(format!(
            "{kind} not found: {one}"
        ))),
        many => Err(StoreError::InvalidArgument(format!(
            "{kind}s not found: {}",
            many.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests;
