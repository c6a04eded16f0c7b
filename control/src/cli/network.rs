//! `meshctl network create|ls|inspect|rm`: the arguments, and the spec `create`'s describe.

use super::flags::parse_label;
use super::{InputError, parse_format};
use clap::{Args, Subcommand};
use ipnet::Ipv4Net;
use mesh_proto::{Annotations, IpamConfig, NetworkSpec};
use std::net::Ipv4Addr;

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
    pub driver: String,
    /// Subnet in CIDR format
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub subnet: Option<Ipv4Net>,
    /// IPv4 gateway for the subnet
    #[arg(long, value_name = "IP", value_parser = parse_ip)]
    pub gateway: Option<Ipv4Addr>,
    /// Allocate task addresses from a sub-range
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub ip_range: Option<Ipv4Net>,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Set metadata on a network
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Set driver specific options
    #[arg(short, long = "opt", value_name = "K=V", value_parser = parse_label)]
    pub opts: Vec<(String, String)>,
    pub name: String,
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
    pub fn to_spec(&self) -> Result<NetworkSpec, InputError> {
        if self.subnet.is_none() && (self.gateway.is_some() || self.ip_range.is_some()) {
            return Err(InputError::Invalid(
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
        crate::limits::network(&spec)?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests;
