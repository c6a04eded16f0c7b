//! `meshctl network create|ls|inspect|rm`.

use crate::client::Client;
use crate::error::CliError;
use crate::listing::{Row, render};
use crate::output::{rfc3339, short_id, write_pretty_json};
use mesh_control::cli::network::NetworkCommand;
use mesh_proto::gather;
use mesh_proto::{
    CreateNetworkRequest, GetNetworkRequest, ListNetworksRequest, Network, NetworkSpec,
    RemoveNetworkRequest,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;

/// The option key under which Docker shows an overlay's VXLAN id.
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// Runs a network verb; `create`'s flags are checked before connecting.
pub async fn run(command: NetworkCommand, host: &str) -> Result<(), CliError> {
    match command {
        NetworkCommand::Create(args) => {
            let spec = args.to_spec()?;
            create(&mut super::connect(host).await?, spec).await
        }
        NetworkCommand::Ls { quiet, format } => {
            let json = format.unwrap_or(false);
            ls(&mut super::connect(host).await?, quiet, json).await
        }
        NetworkCommand::Inspect { networks } => {
            inspect(&mut super::connect(host).await?, &networks).await
        }
        NetworkCommand::Rm { networks } => rm(&mut super::connect(host).await?, &networks).await,
    }
}

async fn create(client: &mut Client, spec: NetworkSpec) -> Result<(), CliError> {
    let network = client
        .control
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await?
        .into_inner();
    writeln!(std::io::stdout(), "{}", network.id)?;
    Ok(())
}

/// One line of `network ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRow {
    id: String,
    name: String,
    driver: String,
}

impl Row for NetworkRow {
    const HEADERS: &'static [&'static str] = &["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.driver.clone(),
            "swarm".to_string(),
        ]
    }
    fn json(&self) -> Value {
        json!({"ID": self.id, "Name": self.name, "Driver": self.driver, "Scope": "swarm"})
    }
    fn id(&self) -> &str {
        &self.id
    }
}

fn name(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

/// The rows of `network ls`, sorted by name.
pub fn network_rows(networks: &[Network]) -> Vec<NetworkRow> {
    let mut rows: Vec<NetworkRow> = networks
        .iter()
        .map(|n| NetworkRow {
            id: short_id(&n.id).to_string(),
            name: name(n).to_string(),
            driver: n
                .spec
                .as_ref()
                .map(|s| s.driver.clone())
                .unwrap_or_default(),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    rows
}

async fn ls(client: &mut Client, quiet: bool, json: bool) -> Result<(), CliError> {
    let listed = client.control.list_networks(ListNetworksRequest {}).await?;
    let networks = gather(listed.into_inner()).await?.networks;
    render(
        &mut std::io::stdout(),
        &network_rows(&networks),
        quiet,
        json,
    )?;
    Ok(())
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkJson {
    name: String,
    id: String,
    created: String,
    scope: &'static str,
    driver: String,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: IpamJson,
    internal: bool,
    attachable: bool,
    ingress: bool,
    containers: BTreeMap<String, Value>,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct IpamJson {
    driver: &'static str,
    options: Option<BTreeMap<String, String>>,
    config: Vec<IpamConfigJson>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigJson {
    subnet: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    gateway: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    ip_range: String,
}

/// A network as `docker network inspect` shows it: the allocated subnet once there is one,
/// else what the user asked for.
pub fn network_json(network: &Network) -> NetworkJson {
    let spec = network.spec.clone().unwrap_or_default();
    let allocation = network.allocation.as_ref();
    let ipam = allocation
        .map(|a| &a.ipam)
        .filter(|i| !i.is_empty())
        .unwrap_or(&spec.ipam);
    let mut options: BTreeMap<String, String> = spec.driver_opts.clone().into_iter().collect();
    if let Some(a) = allocation {
        options.insert(VXLAN_ID_OPTION.to_string(), a.vni.to_string());
    }
    let annotations = spec.annotations.clone().unwrap_or_default();
    NetworkJson {
        name: annotations.name,
        id: network.id.clone(),
        created: rfc3339(network.meta.as_ref().map_or(0, |m| m.created_at)),
        scope: "swarm",
        driver: spec.driver.clone(),
        enable_ipv6: false,
        ipam: IpamJson {
            driver: "default",
            options: None,
            config: ipam
                .iter()
                .map(|c| IpamConfigJson {
                    subnet: c.subnet.clone(),
                    gateway: c.gateway.clone(),
                    ip_range: c.ip_range.clone(),
                })
                .collect(),
        },
        internal: spec.internal,
        attachable: spec.attachable,
        ingress: spec.ingress,
        containers: BTreeMap::new(),
        options,
        labels: annotations.labels.into_iter().collect(),
    }
}

async fn inspect(client: &mut Client, references: &[String]) -> Result<(), CliError> {
    let mut networks = Vec::with_capacity(references.len());
    for reference in references {
        let network = client
            .control
            .get_network(GetNetworkRequest {
                reference: reference.clone(),
            })
            .await?
            .into_inner();
        networks.push(network_json(&network));
    }
    write_pretty_json(&mut std::io::stdout(), &networks)?;
    Ok(())
}

/// Removes every network it can, as docker does, and reports the failures together.
async fn rm(client: &mut Client, references: &[String]) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for reference in references {
        let request = RemoveNetworkRequest {
            network_id: reference.clone(),
        };
        match client.control.remove_network(request).await {
            Ok(_) => writeln!(std::io::stdout(), "{reference}")?,
            Err(status) => errors.push(CliError::from(status).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Status(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests;
