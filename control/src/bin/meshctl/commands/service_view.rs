//! `meshctl service ls|ps|inspect`: the read-only service verbs.

use super::node::print_tasks;
use super::service::get_service;
use crate::client::Client;
use crate::error::CliError;
use crate::inspect::service_json;
use crate::listing::{render, service_rows};
use crate::output::write_pretty_json;
use crate::pretty;
use mesh_control::cli::node::PsFlags;
use mesh_proto::gather;
use mesh_proto::{ListServicesRequest, ListTasksRequest};
use std::collections::HashMap;
use std::io::Write;

pub async fn ls(client: &mut Client, quiet: bool, json: bool) -> Result<(), CliError> {
    let listed = client.control.list_services(ListServicesRequest {}).await?;
    let response = gather(listed.into_inner()).await?;
    render(
        &mut std::io::stdout(),
        &service_rows(&response),
        quiet,
        json,
    )?;
    Ok(())
}

pub async fn ps(
    client: &mut Client,
    flags: &PsFlags,
    references: &[String],
) -> Result<(), CliError> {
    let mut names = HashMap::new();
    let mut service_ids = Vec::with_capacity(references.len());
    for reference in references {
        let service = get_service(client, reference).await?;
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default();
        names.insert(service.id.clone(), name);
        service_ids.push(service.id);
    }
    let request = ListTasksRequest {
        service_ids,
        desired_states: flags.filter.iter().map(|s| *s as i32).collect(),
        ..ListTasksRequest::default()
    };
    print_tasks(client, request, flags, &names).await
}

pub async fn inspect(
    client: &mut Client,
    pretty: bool,
    references: &[String],
) -> Result<(), CliError> {
    let mut services = Vec::with_capacity(references.len());
    for reference in references {
        services.push(get_service(client, reference).await?);
    }
    let mut out = std::io::stdout();
    if pretty {
        for service in &services {
            out.write_all(pretty::service(service).as_bytes())?;
        }
        return Ok(());
    }
    let json: Vec<_> = services.iter().map(service_json).collect();
    write_pretty_json(&mut out, &json)?;
    Ok(())
}
