//! What the benchmark does to the cluster once every task runs: a tenth of the nodes lost at
//! once, then the leader killed and started again.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_proto::control_client::ControlClient;
use mesh_proto::{
    ListNodesRequest, ListServicesRequest, ListTasksRequest, NodeState, TaskState, gather,
};
use mesh_tests::{Cluster, Node};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::agent::Counters;
use super::{POLL, probe};

/// The share of the nodes lost at once.
pub const LOST_SHARE: u32 = 10;
/// How long the lost nodes' tasks may take to run elsewhere before the run fails.
const RESCHEDULE_LIMIT: Duration = Duration::from_secs(180);
/// How often the loss shows the leader's task counts by state: where the replacements wait.
const LOSS_SHOWN: Duration = Duration::from_secs(5);
/// How long a restarted manager may take to be back before the run fails.
const RESTART_LIMIT: Duration = Duration::from_secs(300);

/// The wait before the next poll: [`POLL`], or twice what the last poll took. At half a million
/// tasks a `service ls` is a pass over every task; polled back to back, the benchmark's own reads
/// would take most of the leader's time and slow what it measures.
fn pause(took: Duration) -> Duration {
    POLL.max(took * 2)
}

/// The leader's task counts by state (its `mesh_tasks` metric), to say where tasks stopped.
async fn task_states(node: &Node) -> String {
    match probe::body(node).await {
        Ok(body) => states_of(&body),
        Err(_) => "the leader's metrics did not answer".into(),
    }
}

fn states_of(body: &str) -> String {
    let states: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("mesh_tasks{state=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, count)| *count != "0")
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    format!("tasks by state: {}", states.join(", "))
}

/// Tasks wanted running and reported running, over every service (`service ls`'s count).
async fn running(client: &mut ControlClient<Channel>) -> anyhow::Result<u64> {
    let listed = gather(
        client
            .list_services(ListServicesRequest {})
            .await?
            .into_inner(),
    )
    .await?;
    Ok(listed.running_tasks.values().sum())
}

/// Whether every node of `ids` is listed down.
async fn all_down(client: &mut ControlClient<Channel>, ids: &[String]) -> anyhow::Result<bool> {
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let listed = gather(client.list_nodes(ListNodesRequest {}).await?.into_inner()).await?;
    let down = listed
        .nodes
        .iter()
        .filter(|n| ids.contains(n.id.as_str()))
        .filter(|n| n.status.as_ref().map(|s| s.state) == Some(NodeState::Down as i32))
        .count();
    Ok(down == ids.len())
}

/// How long losing the nodes took to undo.
pub struct Loss {
    pub lost: usize,
    /// Until the managers marked every lost node down.
    pub down: Duration,
    /// Until none of the lost nodes' tasks is wanted running any more and `tasks` tasks run
    /// again (on the other nodes).
    pub rescheduled: Duration,
}

/// Loses one node in [`LOST_SHARE`] at once: their sessions end with no goodbye (their tasks,
/// connections and heartbeats stop together, as when their machines lose power). Times until the
/// leader has marked them down and until their tasks run elsewhere.
pub async fn lose_nodes(
    client: &mut ControlClient<Channel>,
    leader: &Node,
    nodes: &[(String, JoinHandle<()>)],
    tasks: u64,
) -> anyhow::Result<Loss> {
    let lost: Vec<&(String, JoinHandle<()>)> = nodes
        .iter()
        .skip(LOST_SHARE as usize - 1)
        .step_by(LOST_SHARE as usize)
        .collect();
    let listed = gather(client.list_nodes(ListNodesRequest {}).await?.into_inner()).await?;
    let names: BTreeSet<&str> = lost.iter().map(|(name, _)| name.as_str()).collect();
    let ids: Vec<String> = listed
        .nodes
        .iter()
        .filter(|n| {
            let name = n.description.as_ref().map_or("", |d| d.hostname.as_str());
            names.contains(name)
        })
        .map(|n| n.id.clone())
        .collect();
    if ids.len() != lost.len() {
        bail!(
            "{} of the {} nodes to lose are listed",
            ids.len(),
            lost.len()
        );
    }
    let on_lost = ListTasksRequest {
        node_ids: ids.clone(),
        desired_states: vec![TaskState::Running as i32],
        ..Default::default()
    };
    let before = gather(client.list_tasks(on_lost.clone()).await?.into_inner()).await?;
    eprintln!(
        "losing {} nodes at once ({} tasks on them)",
        lost.len(),
        before.tasks.len()
    );
    let started = Instant::now();
    for (_, node) in &lost {
        node.abort();
    }
    let mut down = None;
    let mut left = before.tasks.len();
    let mut last_shown = Instant::now();
    // Each poll is a read the leader answers while it replaces the tasks, and a state is seen at
    // most a poll (and its pause) late: the cheap reads go first, and the lost nodes' tasks (a
    // hundred thousand at first) are listed only when they could all be replaced. Listed at
    // every poll, they took the leader seconds a time, and the loss's figures were seconds late.
    loop {
        let polled = Instant::now();
        if last_shown.elapsed() >= LOSS_SHOWN {
            eprintln!(
                "  {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                task_states(leader).await
            );
            last_shown = Instant::now();
        }
        if down.is_none() && all_down(client, &ids).await? {
            down = Some(started.elapsed());
        }
        // A lost node's task is counted running until it is no longer wanted: while one is
        // wanted on a lost node and its replacement is too, `service ls` counts fewer than all.
        // Once none is wanted on the lost nodes (for good: a node down is given no task), the
        // count read after says whether every replacement runs.
        if down.is_some() && running(client).await? >= tasks {
            if left > 0 {
                let listed = gather(client.list_tasks(on_lost.clone()).await?.into_inner()).await?;
                left = listed.tasks.len();
            }
            if left == 0 && running(client).await? >= tasks {
                break;
            }
        }
        if started.elapsed() > RESCHEDULE_LIMIT {
            bail!(
                "{left} tasks still wanted on lost nodes and {} of {tasks} running \
                 {RESCHEDULE_LIMIT:?} after losing {} nodes ({})",
                running(client).await?,
                lost.len(),
                task_states(leader).await
            );
        }
        tokio::time::sleep(pause(polled.elapsed())).await;
    }
    Ok(Loss {
        lost: lost.len(),
        down: down.context("the lost nodes were never all down")?,
        rescheduled: started.elapsed(),
    })
}

/// How long a manager killed at this size took to come back.
pub struct Restart {
    /// From starting meshd again to its metrics saying it leads (with one manager: its log
    /// opened, its snapshot loaded and an election won).
    pub leading: Option<Duration>,
    /// From starting meshd again to its answering `node ls` with everything it had applied
    /// before (its snapshot loaded and its log replayed).
    pub back: Duration,
    /// With one manager: until `nodes` nodes have opened their sessions again and `tasks`
    /// tasks run.
    pub ready: Option<Duration>,
}

/// SIGKILLs the leader (`cluster.nodes()[leader]`) and starts it again.
pub async fn restart_leader(
    cluster: &mut Cluster,
    leader: usize,
    nodes: usize,
    tasks: u64,
    counters: &Counters,
) -> anyhow::Result<Restart> {
    let applied = probe::scrape(&cluster.nodes()[leader]).await?.commit_index;
    let node = &mut cluster.nodes_mut()[leader];
    eprintln!(
        "killing {}'s meshd (the leader, {applied:.0} entries applied) and starting it again",
        node.hostname()
    );
    node.kill_meshd();
    let started = Instant::now();
    // Watched from beside the restart, which holds the node until `node ls` answers.
    let url = node.metrics_url().context("the leader serves no metrics")?;
    let mut watch = tokio::spawn(async move {
        loop {
            if let Ok((200, body)) = mesh_tests::node::http_get(&url, "/metrics").await
                && probe::metric(&body, "mesh_raft_leader") == Some(1.0)
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    node.restart_meshd().await?;
    loop {
        if probe::scrape(node)
            .await
            .is_ok_and(|s| s.commit_index >= applied)
        {
            break;
        }
        if started.elapsed() > RESTART_LIMIT {
            bail!(
                "{} not back {RESTART_LIMIT:?} after its restart",
                node.hostname()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = started.elapsed();
    // Back is not leading: the committed index it had is read from its log before it wins an
    // election. With several managers another one may lead by now, and the restarted one never
    // does again; alone, it leads once its election is done.
    let several = cluster.nodes().len() > 1;
    let wait = if several {
        Duration::from_secs(1)
    } else {
        RESTART_LIMIT.saturating_sub(back)
    };
    let leading = match tokio::time::timeout(wait, &mut watch).await {
        Ok(Ok(leading)) => Some(leading),
        _ => {
            watch.abort();
            None
        }
    };
    if several {
        return Ok(Restart {
            leading,
            back,
            ready: None,
        });
    }
    let node = &cluster.nodes()[leader];
    let mut client = crate::api_load::connect(node.socket()).await?;
    loop {
        let polled = Instant::now();
        // Ready in the store proves nothing here (the restart kept it): the sessions count.
        // A leader busy with thousands of reconnections may leave a scrape unanswered a while.
        let sessions = probe::scrape(node).await.map_or(0, |s| s.sessions as usize);
        if sessions >= nodes && running(&mut client).await.unwrap_or(0) >= tasks {
            break;
        }
        if started.elapsed() > RESTART_LIMIT {
            bail!(
                "{sessions} of {nodes} nodes with a session {RESTART_LIMIT:?} after the \
                 manager's restart ({}; sessions failed at: {})",
                task_states(node).await,
                counters.take_failures()
            );
        }
        tokio::time::sleep(pause(polled.elapsed())).await;
    }
    Ok(Restart {
        leading,
        back,
        ready: Some(started.elapsed()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_wait_twice_what_the_last_took() {
        assert_eq!(pause(Duration::from_millis(10)), POLL);
        assert_eq!(
            pause(Duration::from_millis(400)),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn task_states_name_the_states_with_tasks() {
        let body = "# TYPE mesh_tasks gauge\nmesh_tasks{state=\"new\"} 0\n\
                    mesh_tasks{state=\"pending\"} 12\nmesh_tasks{state=\"running\"} 900\n\
                    mesh_sessions 5\n";
        assert_eq!(states_of(body), "tasks by state: pending 12, running 900");
    }
}
