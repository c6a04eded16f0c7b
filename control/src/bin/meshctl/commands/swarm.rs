//! `meshctl swarm init|join|join-token|ca|leave`.

use crate::error::CliError;
use mesh_control::cli::swarm::{InitArgs, JoinArgs, JoinTokenArgs, SwarmCommand};
use mesh_proto::{
    GetJoinTokensRequest, InitRequest, JoinRequest, LeaveRequest, NodeAvailability, NodeRole,
    RotateRootCaRequest,
};
use std::io::Write;

pub async fn run(command: SwarmCommand, host: &str) -> Result<(), CliError> {
    match command {
        SwarmCommand::Init(args) => init(args, host).await,
        SwarmCommand::Join(args) => join(args, host).await,
        SwarmCommand::JoinToken(args) => join_token(args, host).await,
        SwarmCommand::Ca { rotate } => ca(rotate, host).await,
        SwarmCommand::Leave { force } => leave(force, host).await,
    }
}

/// The command that joins a node with `token`, as `docker swarm join-token` prints it.
fn join_command(token: &str, manager: &str) -> String {
    format!("    meshctl swarm join --token {token} {manager}")
}

async fn join(args: JoinArgs, host: &str) -> Result<(), CliError> {
    let request = JoinRequest {
        remote_addr: args.remote,
        token: args.token,
        advertise_addr: args.advertise_addr.unwrap_or_default(),
        listen_addr: args.listen_addr.unwrap_or_default(),
        availability: args.availability.unwrap_or(NodeAvailability::Active) as i32,
    };
    let mut client = super::connect(host).await?;
    let response = client.swarm.join(request).await?.into_inner();
    let role = if response.role == NodeRole::Manager as i32 {
        "a manager"
    } else {
        "a worker"
    };
    writeln!(std::io::stdout(), "This node joined a swarm as {role}.")?;
    Ok(())
}

async fn join_token(args: JoinTokenArgs, host: &str) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    let manager = args.role == NodeRole::Manager;
    let request = GetJoinTokensRequest {
        rotate_worker: args.rotate && !manager,
        rotate_manager: args.rotate && manager,
    };
    let response = client.control.get_join_tokens(request).await?.into_inner();
    let tokens = response.tokens.unwrap_or_default();
    let token = if manager {
        tokens.manager
    } else {
        tokens.worker
    };
    let mut out = std::io::stdout();
    if args.quiet {
        writeln!(out, "{token}")?;
        return Ok(());
    }
    let role = if manager { "manager" } else { "worker" };
    if args.rotate {
        writeln!(out, "Successfully rotated {role} join token.\n")?;
    }
    let addr = response.managers.first().cloned().unwrap_or_default();
    writeln!(
        out,
        "To add a {role} to this swarm, run the following command:\n"
    )?;
    writeln!(out, "{}\n", join_command(&token, &addr))?;
    Ok(())
}

async fn ca(rotate: bool, host: &str) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    let mut out = std::io::stdout();
    if rotate {
        let response = client
            .control
            .rotate_root_ca(RotateRootCaRequest {})
            .await?
            .into_inner();
        writeln!(out, "Root CA rotated: {}", response.ca_cert_digest)?;
        writeln!(
            out,
            "Nodes renew their certificates under the new CA; join tokens were replaced."
        )?;
        return Ok(());
    }
    let cluster = client
        .control
        .get_cluster(mesh_proto::GetClusterRequest {})
        .await?
        .into_inner();
    let root = cluster.root_ca.unwrap_or_default();
    out.write_all(&root.ca_cert)?;
    Ok(())
}

async fn init(args: InitArgs, host: &str) -> Result<(), CliError> {
    let history = args
        .task_history_limit
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let request = InitRequest {
        advertise_addr: args.advertise_addr.unwrap_or_default(),
        listen_addr: args.listen_addr.unwrap_or_default(),
        force_new_cluster: false,
        dispatcher_heartbeat_ns: args.dispatcher_heartbeat.unwrap_or(0),
        task_history_limit: history,
        cert_expiry_ns: args.cert_expiry.unwrap_or(0),
        default_addr_pool: args.default_addr_pool,
        subnet_size: args.default_addr_pool_mask_length.unwrap_or(0),
    };
    let mut client = super::connect(host).await?;
    let response = client.swarm.init(request).await?.into_inner();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Swarm initialized: current node ({}) is now a manager.\n",
        response.node_id
    )?;
    let tokens = client
        .control
        .get_join_tokens(GetJoinTokensRequest::default())
        .await?
        .into_inner();
    let addr = tokens.managers.first().cloned().unwrap_or_default();
    let tokens = tokens.tokens.unwrap_or_default();
    writeln!(
        out,
        "To add a worker to this swarm, run the following command:\n"
    )?;
    writeln!(out, "{}\n", join_command(&tokens.worker, &addr))?;
    writeln!(
        out,
        "To add a manager to this swarm, run 'meshctl swarm join-token manager' and follow the instructions.\n"
    )?;
    Ok(())
}

async fn leave(force: bool, host: &str) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    client.swarm.leave(LeaveRequest { force }).await?;
    writeln!(std::io::stdout(), "Node left the swarm.")?;
    Ok(())
}
