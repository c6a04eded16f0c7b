//! A stack's secrets and configs: read from their files before anything is created, created (or
//! their labels updated) before the services, their ids filled into the services' references,
//! and removed by `stack rm` after the services. Their data is never printed nor logged.

use crate::client::Client;
use crate::error::CliError;
use mesh_control::api::secrets::{MAX_CONFIG_BYTES, MAX_SECRET_BYTES};
use mesh_control::cli::secret::check_size;
use mesh_control::compose::{FilePlan, FileSource, NAMESPACE_LABEL, ServicePlan};
use mesh_proto::gather;
use mesh_proto::{
    Annotations, ConfigSpec, CreateConfigRequest, CreateSecretRequest, GetConfigRequest,
    GetSecretRequest, ListConfigsRequest, ListSecretsRequest, RemoveConfigRequest,
    RemoveSecretRequest, SecretSpec, UpdateConfigRequest, UpdateSecretRequest,
};
use std::collections::HashMap;

/// A secret or config the cluster has: its id, version and labels.
pub struct Known {
    pub id: String,
    pub version: Option<mesh_proto::Version>,
    pub labels: HashMap<String, String>,
}

/// What the cluster has, by name.
pub type Existing = HashMap<String, Known>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// One secret or config of the stack, with its content when the stack creates it.
pub struct Payload {
    pub kind: Kind,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// `None` for an external one, which must exist.
    data: Option<Vec<u8>>,
}

impl Payload {
    /// Whether the stack creates it (not external).
    pub fn is_created(&self) -> bool {
        self.data.is_some()
    }
}

/// Reads every file-backed secret and config and checks its size: all before connecting.
pub fn read(kind: Kind, plans: &[FilePlan]) -> Result<Vec<Payload>, CliError> {
    let max = match kind {
        Kind::Secret => MAX_SECRET_BYTES,
        Kind::Config => MAX_CONFIG_BYTES,
    };
    plans
        .iter()
        .map(|plan| {
            let data = match &plan.source {
                FileSource::External => None,
                FileSource::File(path) => {
                    let data = std::fs::read(path).map_err(|e| {
                        CliError::Invalid(format!(
                            "{} {}: cannot read {}: {e}",
                            kind.as_str(),
                            plan.name,
                            path.display()
                        ))
                    })?;
                    check_size(&format!("{} {}", kind.as_str(), plan.name), data.len(), max)?;
                    Some(data)
                }
            };
            Ok(Payload {
                kind,
                name: plan.name.clone(),
                labels: plan.labels.clone(),
                data,
            })
        })
        .collect()
}

/// Fails naming the first external secret or config that does not exist.
pub async fn check_external(client: &mut Client, payloads: &[Payload]) -> Result<(), CliError> {
    for p in payloads.iter().filter(|p| p.data.is_none()) {
        let reference = p.name.clone();
        let found = match p.kind {
            Kind::Secret => client
                .control
                .get_secret(GetSecretRequest { reference })
                .await
                .map(drop),
            Kind::Config => client
                .control
                .get_config(GetConfigRequest { reference })
                .await
                .map(drop),
        };
        match found {
            Ok(()) => {}
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Err(CliError::Invalid(format!(
                    "{} {:?} is declared as external, but could not be found",
                    p.kind.as_str(),
                    p.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The ids of every secret (or config) by name, with their versions.
pub async fn existing(client: &mut Client, kind: Kind) -> Result<Existing, CliError> {
    let entry = |id: String, meta: Option<mesh_proto::Meta>, a: Option<Annotations>| {
        let a = a.unwrap_or_default();
        let known = Known {
            id,
            version: meta.and_then(|m| m.version),
            labels: a.labels,
        };
        (a.name, known)
    };
    Ok(match kind {
        Kind::Secret => gather(
            client
                .control
                .list_secrets(ListSecretsRequest {})
                .await?
                .into_inner(),
        )
        .await?
        .secrets
        .into_iter()
        .map(|s| entry(s.id, s.meta, s.spec.and_then(|s| s.annotations)))
        .collect(),
        Kind::Config => gather(
            client
                .control
                .list_configs(ListConfigsRequest {})
                .await?
                .into_inner(),
        )
        .await?
        .configs
        .into_iter()
        .map(|c| entry(c.id, c.meta, c.spec.and_then(|s| s.annotations)))
        .collect(),
    })
}

/// Creates a missing one ("Creating secret x"), or updates an existing one's labels (its data
/// must be the same: Swarm's "only updates to Labels are allowed" otherwise).
pub async fn create_or_update(
    client: &mut Client,
    payload: &Payload,
    existing: Option<&Known>,
    out: &mut impl std::io::Write,
) -> Result<(), tonic::Status> {
    let Some(data) = payload.data.clone() else {
        return Ok(());
    };
    let annotations = Some(Annotations {
        name: payload.name.clone(),
        labels: payload.labels.clone(),
    });
    match (payload.kind, existing) {
        (Kind::Secret, None) => {
            let _ = writeln!(out, "Creating secret {}", payload.name);
            let spec = Some(SecretSpec { annotations, data });
            client
                .control
                .create_secret(CreateSecretRequest { spec })
                .await
                .map(drop)
        }
        (Kind::Config, None) => {
            let _ = writeln!(out, "Creating config {}", payload.name);
            let spec = Some(ConfigSpec { annotations, data });
            client
                .control
                .create_config(CreateConfigRequest { spec })
                .await
                .map(drop)
        }
        (Kind::Secret, Some(known)) => {
            let request = UpdateSecretRequest {
                secret_id: known.id.clone(),
                version: known.version,
                spec: Some(SecretSpec { annotations, data }),
            };
            client.control.update_secret(request).await.map(drop)
        }
        (Kind::Config, Some(known)) => {
            let request = UpdateConfigRequest {
                config_id: known.id.clone(),
                version: known.version,
                spec: Some(ConfigSpec { annotations, data }),
            };
            client.control.update_config(request).await.map(drop)
        }
    }
}

/// Fills the ids of the objects the services refer to by name, as the API would store them.
pub fn fill_ids(
    services: &mut [ServicePlan],
    secrets: &HashMap<String, String>,
    configs: &HashMap<String, String>,
) {
    for service in services {
        let Some(c) = service
            .spec
            .task
            .as_mut()
            .and_then(|t| t.container.as_mut())
        else {
            continue;
        };
        for r in &mut c.secrets {
            if let Some(id) = secrets.get(&r.secret_name) {
                r.secret_id.clone_from(id);
            }
        }
        for r in &mut c.configs {
            if let Some(id) = configs.get(&r.config_name) {
                r.config_id.clone_from(id);
            }
        }
    }
}

/// Removes the stack's secrets (or configs), "Removing secret x"; returns the failures.
pub async fn remove_all(
    client: &mut Client,
    kind: Kind,
    stack: &str,
    out: &mut impl std::io::Write,
) -> Result<Vec<String>, CliError> {
    let mut mine: Vec<(String, String)> = existing(client, kind)
        .await?
        .into_iter()
        .filter(|(_, k)| k.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        .map(|(name, k)| (name, k.id))
        .collect();
    mine.sort();
    let mut failures = Vec::new();
    for (name, id) in mine {
        writeln!(out, "Removing {} {name}", kind.as_str())?;
        let result = match kind {
            Kind::Secret => client
                .control
                .remove_secret(RemoveSecretRequest {
                    secret_id: id.clone(),
                })
                .await
                .map(drop),
            Kind::Config => client
                .control
                .remove_config(RemoveConfigRequest {
                    config_id: id.clone(),
                })
                .await
                .map(drop),
        };
        if let Err(e) = result {
            failures.push(format!(
                "failed to remove {} {id}: {}",
                kind.as_str(),
                e.message()
            ));
        }
    }
    Ok(failures)
}
