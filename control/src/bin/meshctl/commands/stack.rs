//! `meshctl stack deploy|ls|ps|services|rm`: a stack is the services, networks, secrets and
//! configs labelled `com.docker.stack.namespace=<stack>`; as with docker, the client does the
//! work through the Control API.

mod deploy;
mod payloads;

use super::node::print_tasks;
use crate::client::Client;
use crate::error::CliError;
use crate::listing::{Row, render, service_rows};
use mesh_control::cli::node::PsFlags;
use mesh_control::cli::stack::StackCommand;
use mesh_control::compose::NAMESPACE_LABEL;
use mesh_proto::gather;
use mesh_proto::{
    ListNetworksRequest, ListServicesRequest, ListServicesResponse, ListTasksRequest, Network,
    RemoveNetworkRequest, RemoveServiceRequest, Service,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

pub async fn run(command: StackCommand, host: &str) -> Result<(), CliError> {
    match command {
        StackCommand::Deploy(args) => deploy::run(&args, host).await,
        StackCommand::Ls { format } => {
            ls(&mut super::connect(host).await?, format.unwrap_or(false)).await
        }
        StackCommand::Ps { flags, stack } => {
            ps(&mut super::connect(host).await?, &flags, &stack).await
        }
        StackCommand::Services {
            quiet,
            format,
            stack,
        } => {
            services(
                &mut super::connect(host).await?,
                quiet,
                format.unwrap_or(false),
                &stack,
            )
            .await
        }
        StackCommand::Rm { stacks } => rm(&mut super::connect(host).await?, &stacks).await,
    }
}

/// The stack a labelled object belongs to.
fn namespace(labels: Option<&HashMap<String, String>>) -> Option<&str> {
    labels
        .and_then(|l| l.get(NAMESPACE_LABEL))
        .map(String::as_str)
}

fn service_namespace(service: &Service) -> Option<&str> {
    namespace(
        service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| &a.labels),
    )
}

fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

fn network_name(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

/// The services of `stack`, sorted by name.
async fn stack_services(
    client: &mut Client,
    stack: &str,
) -> Result<ListServicesResponse, CliError> {
    let listed = client.control.list_services(ListServicesRequest {}).await?;
    let mut response = gather(listed.into_inner()).await?;
    response
        .services
        .retain(|s| service_namespace(s) == Some(stack));
    response
        .services
        .sort_by(|a, b| service_name(a).cmp(service_name(b)));
    Ok(response)
}

/// The networks of `stack`, sorted by name.
async fn stack_networks(client: &mut Client, stack: &str) -> Result<Vec<Network>, CliError> {
    let listed = client.control.list_networks(ListNetworksRequest {}).await?;
    let mut networks = gather(listed.into_inner()).await?.networks;
    networks.retain(|n| {
        namespace(
            n.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .map(|a| &a.labels),
        ) == Some(stack)
    });
    networks.sort_by(|a, b| network_name(a).cmp(network_name(b)));
    Ok(networks)
}

/// One line of `stack ls`.
struct StackRow {
    name: String,
    services: usize,
}

impl Row for StackRow {
    const HEADERS: &'static [&'static str] = &["NAME", "SERVICES"];
    fn cells(&self) -> Vec<String> {
        vec![self.name.clone(), self.services.to_string()]
    }
    fn json(&self) -> Value {
        json!({"Name": self.name, "Services": self.services.to_string()})
    }
    fn id(&self) -> &str {
        &self.name
    }
}

async fn ls(client: &mut Client, json: bool) -> Result<(), CliError> {
    let listed = client.control.list_services(ListServicesRequest {}).await?;
    let response = gather(listed.into_inner()).await?;
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for service in &response.services {
        if let Some(stack) = service_namespace(service) {
            *stacks.entry(stack.to_string()).or_default() += 1;
        }
    }
    let rows: Vec<StackRow> = stacks
        .into_iter()
        .map(|(name, services)| StackRow { name, services })
        .collect();
    render(&mut std::io::stdout(), &rows, false, json)?;
    Ok(())
}

fn nothing_found(stack: &str) -> Result<(), CliError> {
    writeln!(std::io::stderr(), "Nothing found in stack: {stack}")?;
    Ok(())
}

async fn services(
    client: &mut Client,
    quiet: bool,
    json: bool,
    stack: &str,
) -> Result<(), CliError> {
    let response = stack_services(client, stack).await?;
    if response.services.is_empty() {
        return nothing_found(stack);
    }
    render(
        &mut std::io::stdout(),
        &service_rows(&response),
        quiet,
        json,
    )?;
    Ok(())
}

async fn ps(client: &mut Client, flags: &PsFlags, stack: &str) -> Result<(), CliError> {
    let response = stack_services(client, stack).await?;
    if response.services.is_empty() {
        return nothing_found(stack);
    }
    let names: HashMap<String, String> = response
        .services
        .iter()
        .map(|s| (s.id.clone(), service_name(s).to_string()))
        .collect();
    let request = ListTasksRequest {
        service_ids: response.services.iter().map(|s| s.id.clone()).collect(),
        desired_states: flags.filter.iter().map(|s| *s as i32).collect(),
        ..ListTasksRequest::default()
    };
    print_tasks(client, request, flags, &names).await
}

/// How long `stack rm` waits for a removed service's tasks to leave a network.
const NETWORK_WAIT: Duration = Duration::from_secs(60);

/// Removes services, then networks; keeps going past a failure and reports them all.
async fn rm(client: &mut Client, stacks: &[String]) -> Result<(), CliError> {
    let mut failures = Vec::new();
    for stack in stacks {
        let services = stack_services(client, stack).await?.services;
        let networks = stack_networks(client, stack).await?;
        let owns = |m: &payloads::Existing| {
            m.values()
                .any(|k| namespace(Some(&k.labels)) == Some(stack.as_str()))
        };
        let secrets = payloads::existing(client, payloads::Kind::Secret).await?;
        let configs = payloads::existing(client, payloads::Kind::Config).await?;
        if services.is_empty() && networks.is_empty() && !owns(&secrets) && !owns(&configs) {
            nothing_found(stack)?;
            continue;
        }
        let mut out = std::io::stdout();
        for service in &services {
            writeln!(out, "Removing service {}", service_name(service))?;
            let request = RemoveServiceRequest {
                service_id: service.id.clone(),
            };
            if let Err(e) = client.control.remove_service(request).await {
                failures.push(format!(
                    "failed to remove service {}: {}",
                    service.id,
                    e.message()
                ));
            }
        }
        for network in &networks {
            writeln!(out, "Removing network {}", network_name(network))?;
            if let Err(e) = remove_network(client, network).await {
                failures.push(format!("failed to remove network {}: {e}", network.id));
            }
        }
        failures
            .extend(payloads::remove_all(client, payloads::Kind::Secret, stack, &mut out).await?);
        failures
            .extend(payloads::remove_all(client, payloads::Kind::Config, stack, &mut out).await?);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Status(failures.join("; ")))
    }
}

/// Removes a network, waiting while the tasks of services just removed still hold it.
async fn remove_network(client: &mut Client, network: &Network) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let request = RemoveNetworkRequest {
            network_id: network.id.clone(),
        };
        match client.control.remove_network(request).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) if e.message().contains("in use by") && started.elapsed() < NETWORK_WAIT => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.message().to_string()),
        }
    }
}
