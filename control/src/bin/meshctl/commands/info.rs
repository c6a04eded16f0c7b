//! `meshctl info`: what the local daemon is (as `docker info`'s swarm part), and its overlay
//! gossip member: members, endpoints and datagram counters, including those dropped unread.

use std::io::Write;

use mesh_proto::{InfoRequest, InfoResponse};
use serde_json::{Value, json};

use crate::error::CliError;

pub async fn run(host: &str, json: bool) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    let info = client.swarm.info(InfoRequest {}).await?.into_inner();
    let mut out = std::io::stdout();
    if json {
        writeln!(out, "{}", to_json(&info))?;
        return Ok(());
    }
    let value = to_json(&info);
    writeln!(out, "Server Version: {}", info.version)?;
    writeln!(
        out,
        "Swarm: {}",
        value["Swarm"]["LocalNodeState"].as_str().unwrap_or("")
    )?;
    if !info.node_id.is_empty() {
        writeln!(out, " NodeID: {}", info.node_id)?;
        writeln!(out, " Is Manager: {}", info.is_manager)?;
        writeln!(out, " ClusterID: {}", info.cluster_id)?;
        writeln!(out, " Node Address: {}", info.node_addr)?;
    }
    if let Some(raft) = &info.raft {
        writeln!(out, " Raft:")?;
        writeln!(out, "  ID: {}", raft.id)?;
        writeln!(out, "  Term: {}", raft.term)?;
        writeln!(out, "  Leader: {}", raft.leader)?;
        writeln!(out, "  Voters: {}", raft.voters.len())?;
        writeln!(out, "  Applied index: {}", raft.applied_index)?;
        writeln!(out, " Refused calls (port 2377): {}", info.refused_calls)?;
    }
    match &info.gossip {
        Some(g) => {
            writeln!(out, "Gossip:")?;
            writeln!(out, " Members: {}", g.members)?;
            writeln!(out, " Endpoints: {}", g.endpoints)?;
            writeln!(out, " Datagrams received: {}", g.received)?;
            writeln!(out, " Datagrams sent: {}", g.sent)?;
            writeln!(out, " Dropped (unknown key): {}", g.dropped_unknown_key)?;
            writeln!(out, " Dropped (bad seal): {}", g.dropped_bad_seal)?;
            writeln!(out, " Dropped (malformed): {}", g.dropped_malformed)?;
        }
        None => writeln!(out, "Gossip: not running")?,
    }
    if info.lb_backend.is_empty() {
        writeln!(out, "Load balancer: none")?;
    } else {
        writeln!(
            out,
            "Load balancer: {} ({} map entries)",
            info.lb_backend, info.lb_entries
        )?;
    }
    Ok(())
}

fn to_json(info: &InfoResponse) -> Value {
    let member = !info.node_id.is_empty();
    let gossip = info.gossip.as_ref().map(|g| {
        json!({
            "Members": g.members,
            "Endpoints": g.endpoints,
            "Received": g.received,
            "Sent": g.sent,
            "DroppedUnknownKey": g.dropped_unknown_key,
            "DroppedBadSeal": g.dropped_bad_seal,
            "DroppedMalformed": g.dropped_malformed,
        })
    });
    json!({
        "ServerVersion": info.version,
        "GitCommit": info.commit,
        "Swarm": {
            "LocalNodeState": if member { "active" } else { "inactive" },
            "NodeID": info.node_id,
            "NodeAddr": info.node_addr,
            "ControlAvailable": info.is_manager,
            "ClusterID": info.cluster_id,
            "Raft": info.raft.as_ref().map(|r| json!({
                "ID": r.id,
                "Term": r.term,
                "Leader": r.leader,
                "Voters": r.voters,
                "Learners": r.learners,
                "AppliedIndex": r.applied_index,
            })),
            "RefusedCalls": info.refused_calls,
        },
        "Gossip": gossip,
        "LoadBalancer": (!info.lb_backend.is_empty()).then(|| json!({
            "Backend": info.lb_backend,
            "Entries": info.lb_entries,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::GossipInfo;

    #[test]
    fn json_names_the_gossip_counters() {
        let info = InfoResponse {
            node_id: "n1".into(),
            gossip: Some(GossipInfo {
                members: 3,
                dropped_unknown_key: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = to_json(&info);
        assert_eq!(value["Swarm"]["LocalNodeState"], "active");
        assert!(value["Swarm"]["Raft"].is_null(), "a worker has no raft");
        assert_eq!(value["Gossip"]["Members"], 3);
        assert_eq!(value["Gossip"]["DroppedUnknownKey"], 7);
    }

    #[test]
    fn json_names_a_managers_raft_state_and_refusals() {
        let info = InfoResponse {
            node_id: "n1".into(),
            is_manager: true,
            raft: Some(mesh_proto::RaftInfo {
                id: 7,
                term: 3,
                leader: 7,
                voters: vec![7, 9],
                learners: vec![],
                applied_index: 42,
            }),
            refused_calls: 5,
            ..Default::default()
        };
        let value = to_json(&info);
        assert_eq!(value["Swarm"]["Raft"]["Term"], 3);
        assert_eq!(value["Swarm"]["Raft"]["Voters"], json!([7, 9]));
        assert_eq!(value["Swarm"]["RefusedCalls"], 5);
    }

    #[test]
    fn outside_a_swarm_there_is_no_gossip() {
        let value = to_json(&InfoResponse::default());
        assert_eq!(value["Swarm"]["LocalNodeState"], "inactive");
        assert!(value["Gossip"].is_null());
    }
}
