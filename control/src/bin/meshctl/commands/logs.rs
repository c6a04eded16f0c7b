//! `meshctl service logs`: streams a service's (or a task's) container output with docker's
//! `name.slot.task@node    | ` prefix; stderr lines go to stderr.

use super::node::hostnames;
use super::service::get_service;
use crate::client::Client;
use crate::error::CliError;
use crate::output::short_id;
use mesh_control::cli::logs::{LogsArgs, Tail};
use mesh_proto::service_spec::Mode;
use mesh_proto::{LogMessage, ServiceLogsRequest};
use std::collections::HashMap;
use std::io::Write;
use tokio_stream::StreamExt;

/// The prefix docker puts before each line: `web.1.abcdef123456@node-1    | `.
pub fn prefix(message: &LogMessage, node: &str, slot_width: usize, no_trunc: bool) -> String {
    let task = if no_trunc {
        message.task_id.as_str()
    } else {
        short_id(&message.task_id)
    };
    let (slot, padding) = if message.slot == 0 {
        (message.node_id.clone(), String::new())
    } else {
        let slot = message.slot.to_string();
        let padding = " ".repeat(slot_width.saturating_sub(slot.len()));
        (slot, padding)
    };
    format!(
        "{}.{slot}.{task}{padding}@{node}    | ",
        message.service_name
    )
}

pub async fn logs(client: &mut Client, args: LogsArgs) -> Result<(), CliError> {
    if args.tail == Tail::Lines(0) && !args.follow {
        return Ok(());
    }
    // Slots are padded to the width of the replica count; a task reference has no service here.
    let slot_width = match get_service(client, &args.reference).await {
        Ok(service) => match service.spec.and_then(|s| s.mode) {
            Some(Mode::Replicated(r)) => r.replicas.max(1).to_string().len(),
            _ => 1,
        },
        Err(CliError::Status(_)) => 1,
        Err(error) => return Err(error),
    };
    let mut nodes: HashMap<String, String> = hostnames(client).await?;
    let request = ServiceLogsRequest {
        reference: args.reference.clone(),
        follow: args.follow,
        tail: match args.tail {
            Tail::All => 0,
            Tail::Lines(n) => n,
        },
        timestamps: args.timestamps,
    };
    let mut stream = client.control.service_logs(request).await?.into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(message) = stream.next().await {
        let message = message?;
        if !nodes.contains_key(&message.node_id) {
            nodes = hostnames(client).await?;
        }
        let node = nodes
            .get(&message.node_id)
            .cloned()
            .unwrap_or_else(|| message.node_id.clone());
        let prefix = prefix(&message, &node, slot_width, args.no_trunc);
        let out: &mut dyn Write = if message.stderr {
            &mut stderr
        } else {
            &mut stdout
        };
        let data = message.data.strip_suffix(b"\n").unwrap_or(&message.data);
        for line in data.split(|b| *b == b'\n') {
            out.write_all(prefix.as_bytes())?;
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let message = LogMessage {
            task_id: "abcdefghijklmnopqrstuvwxy".into(),
            node_id: "node0123456789".into(),
            slot: 3,
            service_name: "web".into(),
            ..LogMessage::default()
        };
        assert_eq!(
            prefix(&message, "host-1", 2, false),
            "web.3.abcdefghijkl @host-1    | "
        );
        assert_eq!(
            prefix(&message, "host-1", 1, true),
            "web.3.abcdefghijklmnopqrstuvwxy@host-1    | "
        );
        let global = LogMessage { slot: 0, ..message };
        assert_eq!(
            prefix(&global, "host-1", 1, false),
            "web.node0123456789.abcdefghijkl@host-1    | "
        );
    }
}
