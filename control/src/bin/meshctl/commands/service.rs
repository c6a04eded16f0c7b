//! `meshctl service create|update|scale|rm`, and the dispatch of every `service` verb.

use crate::client::Client;
use crate::error::CliError;
use crate::output::now_nanos;
use crate::progress;
use mesh_control::cli::service::ServiceCommand;
use mesh_control::cli::spec::{CreateFlags, UpdateFlags};
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    CreateServiceRequest, GetServiceRequest, RemoveServiceRequest, Service, UpdateServiceRequest,
};
use std::io::Write;

pub async fn run(command: ServiceCommand, host: &str) -> Result<(), CliError> {
    // Everything clap could not judge alone is checked before connecting.
    match &command {
        ServiceCommand::Create(flags) => {
            flags.to_spec()?;
        }
        ServiceCommand::Update(flags) => flags.validate()?,
        _ => {}
    }
    let mut client = super::connect(host).await?;
    match command {
        ServiceCommand::Create(flags) => create(&mut client, &flags).await,
        ServiceCommand::Ls { quiet, format } => {
            super::service_view::ls(&mut client, quiet, format.unwrap_or(false)).await
        }
        ServiceCommand::Ps { flags, services } => {
            super::service_view::ps(&mut client, &flags, &services).await
        }
        ServiceCommand::Inspect { pretty, services } => {
            super::service_view::inspect(&mut client, pretty, &services).await
        }
        ServiceCommand::Scale { detach, scales } => scale(&mut client, detach, &scales).await,
        ServiceCommand::Update(flags) if flags.rollback => {
            rollback(&mut client, &flags.service, flags.detach, flags.quiet).await
        }
        ServiceCommand::Update(flags) => update(&mut client, &flags).await,
        ServiceCommand::Rollback {
            detach,
            quiet,
            service,
        } => rollback(&mut client, &service, detach, quiet).await,
        ServiceCommand::Rm { services } => rm(&mut client, &services).await,
        ServiceCommand::Logs(args) => super::logs::logs(&mut client, args).await,
    }
}

/// Resolves a service reference (id, name or id prefix) on the daemon.
pub async fn get_service(client: &mut Client, reference: &str) -> Result<Service, CliError> {
    let request = GetServiceRequest {
        reference: reference.to_string(),
    };
    Ok(client.control.get_service(request).await?.into_inner())
}

async fn create(client: &mut Client, flags: &CreateFlags) -> Result<(), CliError> {
    let spec = flags.to_spec()?;
    let since = now_nanos();
    let request = CreateServiceRequest { spec: Some(spec) };
    let service = client.control.create_service(request).await?.into_inner();
    writeln!(std::io::stdout(), "{}", service.id)?;
    if flags.detach {
        return Ok(());
    }
    progress::watch(&mut client.control, &service, since, flags.quiet).await
}

/// Writes `spec` over `service` at the version read, so a concurrent change is refused.
async fn write_spec(
    client: &mut Client,
    service: &Service,
    spec: mesh_proto::ServiceSpec,
) -> Result<Service, CliError> {
    let request = UpdateServiceRequest {
        service_id: service.id.clone(),
        version: service.meta.as_ref().and_then(|m| m.version),
        spec: Some(spec),
        rollback: false,
    };
    Ok(client.control.update_service(request).await?.into_inner())
}

/// `service rollback` and `service update --rollback`: the daemon swaps in the previous spec and
/// rolls the tasks back with the rollback config.
async fn rollback(
    client: &mut Client,
    reference: &str,
    detach: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let service = get_service(client, reference).await?;
    let since = now_nanos();
    let request = UpdateServiceRequest {
        service_id: service.id.clone(),
        version: service.meta.as_ref().and_then(|m| m.version),
        spec: None,
        rollback: true,
    };
    let rolled_back = client.control.update_service(request).await?.into_inner();
    writeln!(std::io::stdout(), "{reference}")?;
    if detach {
        return Ok(());
    }
    progress::watch(&mut client.control, &rolled_back, since, quiet).await
}

async fn update(client: &mut Client, flags: &UpdateFlags) -> Result<(), CliError> {
    let service = get_service(client, &flags.service).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    flags.apply(&mut spec)?;
    let since = now_nanos();
    let updated = write_spec(client, &service, spec).await?;
    writeln!(std::io::stdout(), "{}", flags.service)?;
    if flags.detach {
        return Ok(());
    }
    progress::watch(&mut client.control, &updated, since, flags.quiet).await
}

async fn scale(
    client: &mut Client,
    detach: bool,
    scales: &[(String, u64)],
) -> Result<(), CliError> {
    // Resolve and check every service before changing any.
    let mut targets = Vec::with_capacity(scales.len());
    for (_, replicas) in scales {
        mesh_control::limits::replicas(*replicas)?;
    }
    for (reference, replicas) in scales {
        let service = get_service(client, reference).await?;
        if !matches!(
            service.spec.as_ref().and_then(|s| s.mode.as_ref()),
            Some(Mode::Replicated(_))
        ) {
            return Err(CliError::Invalid(format!(
                "{reference}: scale can only be used with replicated mode"
            )));
        }
        targets.push((reference, *replicas, service));
    }
    let since = now_nanos();
    let mut updated = Vec::with_capacity(targets.len());
    for (reference, replicas, service) in targets {
        let mut spec = service.spec.clone().unwrap_or_default();
        spec.mode = Some(Mode::Replicated(mesh_proto::ReplicatedService { replicas }));
        updated.push(write_spec(client, &service, spec).await?);
        writeln!(std::io::stdout(), "{reference} scaled to {replicas}")?;
    }
    if detach {
        return Ok(());
    }
    for service in &updated {
        progress::watch(&mut client.control, service, since, false).await?;
    }
    Ok(())
}

async fn rm(client: &mut Client, references: &[String]) -> Result<(), CliError> {
    let mut failures = Vec::new();
    for reference in references {
        let removed = async {
            let service = get_service(client, reference).await?;
            let request = RemoveServiceRequest {
                service_id: service.id,
            };
            client.control.remove_service(request).await?;
            Ok::<_, CliError>(())
        }
        .await;
        match removed {
            Ok(()) => writeln!(std::io::stdout(), "{reference}")?,
            Err(error @ CliError::Connect { .. }) => return Err(error),
            Err(error) => failures.push(error.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Status(failures.join("; ")))
    }
}
