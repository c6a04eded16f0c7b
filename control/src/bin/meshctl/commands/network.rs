//! `meshctl network create|ls|inspect|rm`.

use super::parse_format;
use crate::client::Client;
use crate::error::CliError;
use crate::flags::parse_label;
use crate::listing::{Row, render};
use crate::output::{rfc3339, short_id, write_pretty_json};
use clap::{Args, Subcommand};
use ipnet::Ipv4Net;
use mesh_proto::{
    Annotations, CreateNetworkRequest, GetNetworkRequest, IpamConfig, ListNetworksRequest, Network,
    NetworkSpec, RemoveNetworkRequest,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;

/// The option key under which Docker shows an overlay's VXLAN id.
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls {
        /// Only display network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// Display detailed information on one or more networks
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the network ("overlay")
    #[arg(short, long, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR format
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    subnet: Option<Ipv4Net>,
    /// IPv4 gateway for the subnet
    #[arg(long, value_name = "IP", value_parser = parse_ip)]
    gateway: Option<Ipv4Addr>,
    /// Allocate task addresses from a sub-range
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    ip_range: Option<Ipv4Net>,
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Set metadata on a network
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Set driver specific options
    #[arg(short, long = "opt", value_name = "K=V", value_parser = parse_label)]
    opts: Vec<(String, String)>,
    name: String,
}

fn parse_cidr(value: &str) -> Result<Ipv4Net, String> {
    value
        .parse()
        .map_err(|_| format!("invalid CIDR {value:?}: expected an IPv4 subnet such as 10.9.0.0/24"))
}

fn parse_ip(value: &str) -> Result<Ipv4Addr, String> {
    value
        .parse()
        .map_err(|_| format!("invalid IP {value:?}: expected an IPv4 address such as 10.9.0.1"))
}

impl CreateArgs {
    /// The spec these flags describe, or why they don't describe one.
    fn to_spec(&self) -> Result<NetworkSpec, CliError> {
        if self.subnet.is_none() && (self.gateway.is_some() || self.ip_range.is_some()) {
            return Err(CliError::Invalid(
                "--gateway and --ip-range need a --subnet".to_string(),
            ));
        }
        let ipam = self.subnet.map(|subnet| IpamConfig {
            subnet: subnet.to_string(),
            gateway: self.gateway.map(|g| g.to_string()).unwrap_or_default(),
            ip_range: self.ip_range.map(|r| r.to_string()).unwrap_or_default(),
        });
        let spec = NetworkSpec {
            annotations: Some(Annotations {
                name: self.name.clone(),
                labels: self.labels.iter().cloned().collect(),
            }),
            driver: self.driver.clone(),
            ipam: ipam.into_iter().collect(),
            attachable: self.attachable,
            driver_opts: self.opts.iter().cloned().collect(),
            ..NetworkSpec::default()
        };
        mesh_control::limits::network(&spec)?;
        Ok(spec)
    }
}

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
    let networks = client
        .control
        .list_networks(ListNetworksRequest {})
        .await?
        .into_inner()
        .networks;
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
