//! A merged compose file converted into what `stack deploy` creates, as docker/cli's convert
//! package does it: objects named `<stack>_<name>` (unless `name:` or `external:` says
//! otherwise) and labelled with the stack's namespace, a default overlay network for services
//! that list none, each service's short name an alias on its networks. Every spec is checked
//! here (the API's own checks and limits included), so a stack that does not validate creates
//! nothing.

mod deploy;
mod objects;
mod ports;
mod service;
mod volumes;

use super::model::Config;
use super::syntax::ListOrDict;
use super::{ComposeError, NAMESPACE_LABEL};
use mesh_proto::{NetworkSpec, ServiceSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What a conversion needs beyond the model.
pub struct Context<'a> {
    /// The stack's name.
    pub stack: &'a str,
    /// The first compose file's directory: relative paths start there.
    pub working_dir: &'a Path,
    /// The client's environment, for `environment` entries without a value and `~`.
    pub env: &'a HashMap<String, String>,
    /// Reads a file the compose file names (`env_file`); an error is one line.
    pub read: &'a dyn Fn(&Path) -> Result<String, String>,
}

/// Everything one deploy creates or updates, in the order it does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The stack's networks the services use, to create when missing.
    pub networks: Vec<NetworkPlan>,
    /// External networks the services use: they must exist before anything is created.
    pub external_networks: Vec<String>,
    pub secrets: Vec<FilePlan>,
    pub configs: Vec<FilePlan>,
    pub services: Vec<ServicePlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPlan {
    pub name: String,
    pub spec: NetworkSpec,
}

/// A secret or config of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlan {
    /// Its name in the cluster.
    pub name: String,
    pub labels: HashMap<String, String>,
    pub source: FileSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileSource {
    /// Created from this file's content.
    File(PathBuf),
    /// Must already exist.
    External,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    /// Its name in the cluster (`<stack>_<service>`).
    pub name: String,
    pub spec: ServiceSpec,
}

/// `<stack>_<name>`.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// Labels from the file plus the stack's namespace.
fn labels(stack: &str, from: Option<&ListOrDict>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = from
        .map(|l| {
            l.0.iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    out.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
    out
}

/// Converts a merged compose file into the deploy plan of stack `context.stack`.
pub fn convert(config: &Config, context: &Context<'_>) -> Result<Plan, ComposeError> {
    crate::cli::flags::parse_name(context.stack)
        .map_err(|_| ComposeError::invalid("stack name", format!("invalid stack name {:?}: letters, digits, '-' and '_', starting and ending with a letter or digit", context.stack)))?;
    if config.services.is_empty() {
        return Err(ComposeError::invalid(
            "services",
            "the stack has no services",
        ));
    }
    let mut plan = Plan::default();
    let mut used_networks: BTreeMap<String, ()> = BTreeMap::new();
    for (name, service) in &config.services {
        let converted = service::convert(name, service, config, context)?;
        for network in service::network_names(service) {
            used_networks.insert(network, ());
        }
        plan.services.push(converted);
    }
    for name in used_networks.keys() {
        match objects::network(name, config, context.stack)? {
            objects::Net::Stack(network) => plan.networks.push(network),
            objects::Net::External(name) => plan.external_networks.push(name),
        }
    }
    plan.secrets = objects::files("secrets", &config.secrets, context)?;
    plan.configs = objects::files("configs", &config.configs, context)?;
    Ok(plan)
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
