//! `meshctl node ls|inspect|update|ps`.

use crate::client::Client;
use crate::error::CliError;
use crate::inspect::node_json;
use crate::listing::{TaskContext, node_rows, render, task_rows};
use crate::output::{now_nanos, write_pretty_json};
use crate::pretty;
use mesh_control::cli::node::{NodeCommand, PsArgs, PsFlags, UpdateArgs};
use mesh_proto::gather;
use mesh_proto::{
    Annotations, GetNodeRequest, InfoRequest, ListNodesRequest, ListTasksRequest, Node, NodeRole,
    NodeSpec, UpdateNodeRequest,
};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use tonic::Code;

pub async fn run(command: NodeCommand, host: &str) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    match command {
        NodeCommand::Ls { quiet, format } => ls(&mut client, quiet, format.unwrap_or(false)).await,
        NodeCommand::Inspect { pretty, nodes } => inspect(&mut client, pretty, &nodes).await,
        NodeCommand::Update(args) => update(&mut client, args).await,
        NodeCommand::Promote { nodes } => set_role(&mut client, &nodes, NodeRole::Manager).await,
        NodeCommand::Demote { nodes } => set_role(&mut client, &nodes, NodeRole::Worker).await,
        NodeCommand::Rm { force, nodes } => rm(&mut client, force, &nodes).await,
        NodeCommand::Ps(args) => ps(&mut client, args).await,
    }
}

async fn self_id(client: &mut Client) -> Result<String, CliError> {
    let info = client.swarm.info(InfoRequest {}).await?.into_inner();
    Ok(info.node_id)
}

/// Fetches a node by id, name or prefix; `self` is the local node.
async fn get_node(client: &mut Client, reference: &str) -> Result<Node, CliError> {
    let reference = if reference == "self" {
        let id = self_id(client).await?;
        if id.is_empty() {
            return Err(CliError::Invalid(
                "this node is not part of a swarm: run `meshctl swarm init` first".to_string(),
            ));
        }
        id
    } else {
        reference.to_string()
    };
    Ok(client
        .control
        .get_node(GetNodeRequest { reference })
        .await?
        .into_inner())
}

async fn ls(client: &mut Client, quiet: bool, json: bool) -> Result<(), CliError> {
    let me = self_id(client).await?;
    let listed = client.control.list_nodes(ListNodesRequest {}).await?;
    let nodes = gather(listed.into_inner()).await?.nodes;
    let rows = node_rows(&nodes, &me);
    render(&mut std::io::stdout(), &rows, quiet, json)?;
    Ok(())
}

async fn inspect(client: &mut Client, pretty: bool, references: &[String]) -> Result<(), CliError> {
    let mut nodes = Vec::with_capacity(references.len());
    for reference in references {
        nodes.push(get_node(client, reference).await?);
    }
    let mut out = std::io::stdout();
    if pretty {
        for node in &nodes {
            out.write_all(pretty::node(node).as_bytes())?;
        }
        return Ok(());
    }
    let json: Vec<_> = nodes.iter().map(node_json).collect();
    write_pretty_json(&mut out, &json)?;
    Ok(())
}

async fn update(client: &mut Client, args: UpdateArgs) -> Result<(), CliError> {
    change_spec(client, &args.node, |node| {
        let mut spec = node.spec.clone().unwrap_or_else(NodeSpec::default);
        if let Some(availability) = args.availability {
            spec.availability = availability as i32;
        }
        let annotations = spec.annotations.get_or_insert_with(Annotations::default);
        annotations.labels.extend(args.label_add.clone());
        annotations.labels.retain(|k, _| !args.label_rm.contains(k));
        mesh_control::limits::node(&spec)?;
        Ok(Some(spec))
    })
    .await?;
    writeln!(std::io::stdout(), "{}", args.node)?;
    Ok(())
}

/// Writes to a node whose version moved since it was read: its own status (heartbeats,
/// certificates, a role change under way) updates it too.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Reads the node, asks `change` for its new spec (`None`: nothing to change) and writes it back
/// at the version read; a write that lost a race with the node's own updates is redone on a
/// fresh read. Returns the node as read before the write that went through.
async fn change_spec(
    client: &mut Client,
    reference: &str,
    change: impl Fn(&Node) -> Result<Option<NodeSpec>, CliError>,
) -> Result<Option<Node>, CliError> {
    let mut attempt = 1;
    loop {
        let node = get_node(client, reference).await?;
        let Some(spec) = change(&node)? else {
            return Ok(None);
        };
        let request = UpdateNodeRequest {
            node_id: node.id.clone(),
            version: node.meta.as_ref().and_then(|m| m.version),
            spec: Some(spec),
        };
        match client.control.update_node(request).await {
            Ok(_) => return Ok(Some(node)),
            Err(status) if status.code() == Code::Aborted && attempt < CONFLICT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

async fn set_role(
    client: &mut Client,
    references: &[String],
    role: NodeRole,
) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    for reference in references {
        let changed = change_spec(client, reference, |node| {
            let mut spec = node.spec.clone().unwrap_or_default();
            if spec.desired_role == role as i32 {
                return Ok(None);
            }
            spec.desired_role = role as i32;
            Ok(Some(spec))
        })
        .await?;
        let Some(node) = changed else {
            let node = get_node(client, reference).await?;
            let name = crate::listing::hostname(&node);
            let already = if role == NodeRole::Manager {
                "already a manager"
            } else {
                "already a worker"
            };
            writeln!(out, "Node {name} is {already}.")?;
            continue;
        };
        let name = crate::listing::hostname(&node).to_string();
        let verb = if role == NodeRole::Manager {
            "promoted to a manager"
        } else {
            "demoted in the swarm"
        };
        writeln!(out, "Node {name} {verb}.")?;
    }
    Ok(())
}

async fn rm(client: &mut Client, force: bool, references: &[String]) -> Result<(), CliError> {
    for reference in references {
        let node = get_node(client, reference).await?;
        client
            .control
            .remove_node(mesh_proto::RemoveNodeRequest {
                node_id: node.id.clone(),
                force,
            })
            .await?;
        writeln!(std::io::stdout(), "{reference}")?;
    }
    Ok(())
}

/// Node id → hostname, for the NODE column.
pub async fn hostnames(client: &mut Client) -> Result<HashMap<String, String>, CliError> {
    let listed = client.control.list_nodes(ListNodesRequest {}).await?;
    let nodes = gather(listed.into_inner()).await?.nodes;
    Ok(nodes
        .iter()
        .map(|n| (n.id.clone(), crate::listing::hostname(n).to_string()))
        .collect())
}

/// Prints tasks as `ps` does.
pub async fn print_tasks(
    client: &mut Client,
    request: ListTasksRequest,
    flags: &PsFlags,
    service_names: &HashMap<String, String>,
) -> Result<(), CliError> {
    let listed = client.control.list_tasks(request).await?;
    let tasks = gather(listed.into_inner()).await?.tasks;
    let hostnames = hostnames(client).await?;
    let ctx = TaskContext {
        hostnames: &hostnames,
        service_names,
        now_nanos: now_nanos(),
        no_trunc: flags.no_trunc,
    };
    let rows = task_rows(&tasks, &ctx);
    render(
        &mut std::io::stdout(),
        &rows,
        flags.quiet,
        flags.format.unwrap_or(false),
    )?;
    Ok(())
}

async fn ps(client: &mut Client, args: PsArgs) -> Result<(), CliError> {
    let references = if args.nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        args.nodes
    };
    let mut node_ids = Vec::with_capacity(references.len());
    for reference in &references {
        node_ids.push(get_node(client, reference).await?.id);
    }
    let request = ListTasksRequest {
        node_ids,
        desired_states: args.flags.filter.iter().map(|s| *s as i32).collect(),
        ..ListTasksRequest::default()
    };
    print_tasks(client, request, &args.flags, &HashMap::new()).await
}
