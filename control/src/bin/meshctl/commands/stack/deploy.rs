//! `meshctl stack deploy`: reads the compose files (and the secrets' and configs' files),
//! converts and validates the whole stack, then creates what is missing and updates what changed,
//! printing docker's lines. A service whose converted spec equals its current one is left alone
//! (no new spec version, no task restarted). A deploy that fails half-way says what it did and what it did not; running it
//! again finishes the job.

use super::payloads::{self, Kind, Payload};
use super::{service_name, service_namespace, stack_networks, stack_services};
use crate::client::Client;
use crate::error::CliError;
use mesh_control::cli::stack::DeployArgs;
use mesh_control::compose::{self, ComposeFile, Context, Plan};
use mesh_proto::{
    CreateNetworkRequest, CreateServiceRequest, GetNetworkRequest, RemoveServiceRequest,
    ServiceSpec, UpdateServiceRequest,
};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Reads one `-c` argument (`-` is stdin).
fn read_compose_file(name: &str) -> Result<ComposeFile, CliError> {
    let mut text = String::new();
    if name == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            CliError::Invalid(format!("cannot read the compose file from stdin: {e}"))
        })?;
    } else {
        text = std::fs::read_to_string(name)
            .map_err(|e| CliError::Invalid(format!("cannot read compose file {name}: {e}")))?;
    }
    Ok(ComposeFile {
        name: name.to_string(),
        text,
    })
}

/// The directory relative paths start from: the first file's (the current one for stdin).
fn working_dir(first: &str) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if first == "-" {
        return cwd;
    }
    let dir = Path::new(first)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    cwd.join(dir)
}

/// Loads and converts the stack and reads its secrets' and configs' files: every error before
/// the daemon is asked anything.
pub fn plan(args: &DeployArgs) -> Result<(Plan, Vec<Payload>), CliError> {
    let files = args
        .compose_files
        .iter()
        .map(|f| read_compose_file(f))
        .collect::<Result<Vec<_>, _>>()?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = compose::load(&files, &env).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut err = std::io::stderr();
    for warning in &loaded.warnings {
        writeln!(err, "{warning}\n")?;
    }
    let first = args.compose_files.first().map_or("-", String::as_str);
    let dir = working_dir(first);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let context = Context {
        stack: &args.stack,
        working_dir: &dir,
        env: &env,
        read: &read,
    };
    let plan =
        compose::convert(&loaded.config, &context).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut payloads = payloads::read(Kind::Secret, &plan.secrets)?;
    payloads.extend(payloads::read(Kind::Config, &plan.configs)?);
    Ok((plan, payloads))
}

/// What a deploy did so far and still had to do, for the message of a failure half-way.
#[derive(Default)]
struct Progress {
    done: Vec<String>,
    pending: Vec<String>,
}

impl Progress {
    fn finish(&mut self, step: &str) {
        self.pending.retain(|p| p != step);
        self.done.push(step.to_string());
    }

    fn failed(&self, step: &str, error: &tonic::Status) -> CliError {
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        let pending: Vec<String> = self
            .pending
            .iter()
            .filter(|p| *p != step)
            .cloned()
            .collect();
        CliError::Status(format!(
            "failed to {step}: {}; done: {}; not done: {} (deploy again to finish)",
            error.message().trim(),
            list(&self.done),
            list(&pending)
        ))
    }
}

pub async fn run(args: &DeployArgs, host: &str) -> Result<(), CliError> {
    let (plan, payloads) = plan(args)?;
    let mut client = super::super::connect(host).await?;
    deploy(&mut client, plan, &payloads, args).await
}

async fn deploy(
    client: &mut Client,
    mut plan: Plan,
    payloads: &[Payload],
    args: &DeployArgs,
) -> Result<(), CliError> {
    for name in &plan.external_networks {
        let request = GetNetworkRequest {
            reference: name.clone(),
        };
        if let Err(e) = client.control.get_network(request).await {
            if e.code() == tonic::Code::NotFound {
                return Err(CliError::Invalid(format!(
                    "network {name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed"
                )));
            }
            return Err(e.into());
        }
    }
    payloads::check_external(client, payloads).await?;
    let mut progress = Progress::default();
    let mut out = std::io::stdout();
    // Secrets and configs first, as docker: the services refer to them.
    let existing_secrets = payloads::existing(client, Kind::Secret).await?;
    let existing_configs = payloads::existing(client, Kind::Config).await?;
    let owned: Vec<&Payload> = payloads.iter().filter(|p| p.is_created()).collect();
    for p in &owned {
        progress
            .pending
            .push(format!("create {} {}", p.kind.as_str(), p.name));
    }
    for p in owned {
        let step = format!("create {} {}", p.kind.as_str(), p.name);
        let existing = match p.kind {
            Kind::Secret => existing_secrets.get(&p.name),
            Kind::Config => existing_configs.get(&p.name),
        };
        payloads::create_or_update(client, p, existing, &mut out)
            .await
            .map_err(|e| progress.failed(&step, &e))?;
        progress.finish(&step);
    }
    let ids = |m: payloads::Existing| {
        m.into_iter()
            .map(|(name, k)| (name, k.id))
            .collect::<HashMap<_, _>>()
    };
    let secret_ids = ids(payloads::existing(client, Kind::Secret).await?);
    let config_ids = ids(payloads::existing(client, Kind::Config).await?);
    payloads::fill_ids(&mut plan.services, &secret_ids, &config_ids);
    let plan = &plan;

    let existing_networks: HashSet<String> = stack_networks(client, &args.stack)
        .await?
        .iter()
        .map(|n| super::network_name(n).to_string())
        .collect();
    let services = stack_services(client, &args.stack).await?.services;
    let current: HashMap<&str, &mesh_proto::Service> =
        services.iter().map(|s| (service_name(s), s)).collect();

    let networks: Vec<_> = plan
        .networks
        .iter()
        .filter(|n| !existing_networks.contains(&n.name))
        .collect();
    for network in &networks {
        progress
            .pending
            .push(format!("create network {}", network.name));
    }
    let mut updates = Vec::new();
    for service in &plan.services {
        match current.get(service.name.as_str()) {
            Some(old) => {
                let mut spec = service.spec.clone();
                keep_force_update(&mut spec, old.spec.as_ref());
                if old.spec.as_ref() != Some(&spec) {
                    progress
                        .pending
                        .push(format!("update service {}", service.name));
                    updates.push((service, Some(*old), spec));
                }
            }
            None => {
                progress
                    .pending
                    .push(format!("create service {}", service.name));
                updates.push((service, None, service.spec.clone()));
            }
        }
    }
    let planned: HashSet<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    let prune: Vec<_> = if args.prune {
        services
            .iter()
            .filter(|s| {
                service_namespace(s) == Some(args.stack.as_str())
                    && !planned.contains(service_name(s))
            })
            .collect()
    } else {
        Vec::new()
    };
    for service in &prune {
        progress
            .pending
            .push(format!("remove service {}", service_name(service)));
    }

    for network in networks {
        let step = format!("create network {}", network.name);
        writeln!(out, "Creating network {}", network.name)?;
        let request = CreateNetworkRequest {
            spec: Some(network.spec.clone()),
        };
        client
            .control
            .create_network(request)
            .await
            .map_err(|e| progress.failed(&step, &e))?;
        progress.finish(&step);
    }
    for (service, old, spec) in updates {
        match old {
            Some(old) => {
                let step = format!("update service {}", service.name);
                writeln!(out, "Updating service {} (id: {})", service.name, old.id)?;
                let request = UpdateServiceRequest {
                    service_id: old.id.clone(),
                    version: old.meta.as_ref().and_then(|m| m.version),
                    spec: Some(spec),
                    rollback: false,
                };
                client
                    .control
                    .update_service(request)
                    .await
                    .map_err(|e| progress.failed(&step, &e))?;
                progress.finish(&step);
            }
            None => {
                let step = format!("create service {}", service.name);
                writeln!(out, "Creating service {}", service.name)?;
                let request = CreateServiceRequest { spec: Some(spec) };
                client
                    .control
                    .create_service(request)
                    .await
                    .map_err(|e| progress.failed(&step, &e))?;
                progress.finish(&step);
            }
        }
    }
    for service in prune {
        let step = format!("remove service {}", service_name(service));
        writeln!(out, "Removing service {}", service_name(service))?;
        let request = RemoveServiceRequest {
            service_id: service.id.clone(),
        };
        client
            .control
            .remove_service(request)
            .await
            .map_err(|e| progress.failed(&step, &e))?;
        progress.finish(&step);
    }
    Ok(())
}

/// Keeps the current `force_update` counter, as docker does, so a deploy does not count as a
/// forced update (nor undo one).
fn keep_force_update(spec: &mut ServiceSpec, old: Option<&ServiceSpec>) {
    let counter = old
        .and_then(|s| s.task.as_ref())
        .map_or(0, |t| t.force_update);
    if let Some(task) = spec.task.as_mut() {
        task.force_update = counter;
    }
}
