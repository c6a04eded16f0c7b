//! What tests observe across a cluster: `node ls` rows by hostname, who the leader is, and the running
//! containers of a service on every node's dockerd.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::node::Node;

/// One node as `meshctl node ls --format json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    /// `Ready`, `Down`, `Unknown`, …
    pub status: String,
    /// `Active`, `Pause` or `Drain`.
    pub availability: String,
    /// `Leader`, `Reachable`, `Unreachable`, or empty on a worker.
    pub manager_status: String,
}

impl NodeRow {
    fn from_json(row: &Value) -> Self {
        let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
        Self {
            id: text("ID"),
            hostname: text("Hostname"),
            status: text("Status"),
            availability: text("Availability"),
            manager_status: text("ManagerStatus"),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.status.eq_ignore_ascii_case("ready")
    }

    pub fn is_down(&self) -> bool {
        self.status.eq_ignore_ascii_case("down")
    }

    pub fn is_leader(&self) -> bool {
        self.manager_status.eq_ignore_ascii_case("leader")
    }
}

/// `node ls` as `node` answers it.
pub async fn node_rows(node: &Node) -> anyhow::Result<Vec<NodeRow>> {
    let rows = node.meshctl_json(&["node", "ls"]).await?;
    Ok(rows.iter().map(NodeRow::from_json).collect())
}

/// The hostname `node` names as Leader in `node ls`, if it names exactly one.
pub async fn leader_seen_by(node: &Node) -> anyhow::Result<Option<String>> {
    let rows = node_rows(node).await?;
    let leaders: Vec<&NodeRow> = rows.iter().filter(|r| r.is_leader()).collect();
    Ok(match leaders.as_slice() {
        [one] => Some(one.hostname.clone()),
        _ => None,
    })
}

impl Cluster {
    /// `node ls` as the first manager with a running meshd answers it.
    pub async fn node_rows(&self) -> anyhow::Result<Vec<NodeRow>> {
        node_rows(self.live_manager()?).await
    }

    /// The row of the node named `hostname`.
    pub async fn node_row(&self, hostname: &str) -> anyhow::Result<NodeRow> {
        let rows = self.node_rows().await?;
        rows.into_iter()
            .find(|r| r.hostname == hostname)
            .with_context(|| format!("{hostname} is missing from node ls"))
    }

    /// Waits until `node ls` (on a live manager) shows `hostname` with `status` (`Ready`, `Down`).
    pub async fn wait_node_status(
        &self,
        hostname: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("{hostname} to be {status}");
        crate::wait_until(timeout, &what, async || {
            let row = self.node_row(hostname).await?;
            Ok(row.status.eq_ignore_ascii_case(status))
        })
        .await
    }

    /// Waits until every manager with a running meshd names the same single Leader, other than any
    /// in `not`, and returns its hostname.
    pub async fn wait_leader(&self, not: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let what = format!("one leader (not one of {not:?}) agreed by every live manager");
        crate::wait_for(timeout, &what, async || {
            let mut agreed: Option<String> = None;
            for node in self.nodes().iter().filter(|n| is_live_manager(n)) {
                let Some(leader) = leader_seen_by(node).await? else {
                    return Ok(None);
                };
                if not.contains(&leader.as_str()) || agreed.as_ref().is_some_and(|a| *a != leader) {
                    return Ok(None);
                }
                agreed = Some(leader);
            }
            Ok(agreed)
        })
        .await
    }

    /// Running containers of `service` on every node (meshd alive or not), by hostname.
    pub async fn running_by_node(
        &self,
        service: &str,
    ) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let mut all = BTreeMap::new();
        for node in self.nodes() {
            let ids = node.containers(service, false).await?;
            all.insert(node.hostname().to_owned(), ids);
        }
        Ok(all)
    }

    /// How many containers of `service` run on the nodes whose meshd runs (a killed node's orphans
    /// are not counted).
    pub async fn running_on_live_nodes(&self, service: &str) -> anyhow::Result<usize> {
        let mut total = 0;
        for node in self.nodes().iter().filter(|n| n.meshd_running()) {
            total += node.containers(service, false).await?.len();
        }
        Ok(total)
    }
}

fn is_live_manager(node: &Node) -> bool {
    node.role() == crate::cluster::Role::Manager && node.meshd_running()
}

/// One HTTP/1.0 request to `addr` from the test process (the host, outside the cluster): the
/// body's last line, or `None` when nothing answered. Blocking: call it from `spawn_blocking`.
pub fn http_get(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply
        .starts_with("HTTP/1.")
        .then(|| reply.lines().last().unwrap_or_default().trim().to_owned())
}
