//! `cargo xtask bench metrics`: what one scrape of `meshd --metrics-addr` costs on a manager —
//! reading the store's tasks by state and rendering every metric as text — at 0, 1,000 and
//! 10,000 tasks (the target: a median under 5 ms at 1,000; the p99 is printed too, and on a
//! shared machine it mostly measures the scheduler), beside an empty registry rendered by the same
//! crate in the same run, the floor any scrape pays.
//!
//! In-process and without root: the same code a scrape runs ([`count_tasks`] and
//! [`Metrics::render`]), with instruments that have recorded as a busy node's would (every
//! netlink call and load balancer operation observed, 100 service VIPs of 10 backends each).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mesh_agent::gossip::GossipStats;
use mesh_agent::metrics::{GossipSample, Metrics, Sample};
use mesh_control::metrics::{ManagerSample, count_tasks};
use mesh_control::store::{MemoryStore, Tables};
use mesh_proto::{StoreSnapshot, Task, TaskState, TaskStatus};
use prometheus_client::registry::Registry;
use prost::Message;

/// Renders timed per case.
const ROUNDS: usize = 1000;
/// The target at 1,000 tasks.
const TARGET: Duration = Duration::from_millis(5);

/// A store holding `tasks` tasks spread over the states a live cluster has.
fn store_with(tasks: usize) -> MemoryStore {
    let states = [
        TaskState::Running,
        TaskState::Running,
        TaskState::Running,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Pending,
    ];
    let snapshot = StoreSnapshot {
        tasks: (0..tasks)
            .map(|i| Task {
                id: format!("task{i:021}"),
                service_id: format!("service{}", i % 100),
                slot: (i / 100) as u64 + 1,
                status: Some(TaskStatus {
                    state: states[i % states.len()] as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let memory = MemoryStore::new();
    memory.restore(Tables::decode(&snapshot.encode_to_vec()).expect("a snapshot we encoded"));
    memory
}

/// A metrics registry whose instruments have recorded as a busy node's would.
fn busy_metrics() -> Metrics {
    let metrics = Metrics::new();
    for i in 0..1000 {
        let seconds = f64::from(i) * 0.00001;
        metrics.control.commit_latency.observe(seconds * 10.0);
        metrics.control.apply_latency.observe(seconds);
        let started = Instant::now();
        metrics.kernel.lb_update("ebpf", "set_vip", started);
        metrics.kernel.lb_update("ebpf", "remove_vip", started);
    }
    metrics
}

/// The scrape's node state besides the tasks: 100 VIPs, gossip, a manager.
fn sample(tasks_by_state: BTreeMap<String, u64>) -> Sample {
    Sample {
        manager: Some(ManagerSample {
            tasks_by_state,
            raft_term: 7,
            raft_commit_index: 123_456,
            raft_last_log_index: 123_456,
            is_leader: true,
            agent_sessions: 10,
        }),
        refused_calls: Some(3),
        vip_backends: (0..100u8)
            .map(|i| (Ipv4Addr::new(10, 0, i, 2), 10))
            .collect(),
        gossip: Some(GossipSample {
            members: 10,
            suspects: Some(0),
            stats: GossipStats::default(),
        }),
        resident_memory_bytes: mesh_agent::metrics::resident_memory_bytes(),
    }
}

struct Figures {
    median: Duration,
    p99: Duration,
    bytes: usize,
}

fn time(mut render: impl FnMut() -> String) -> Figures {
    let mut bytes = render().len();
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            bytes = std::hint::black_box(render()).len();
            started.elapsed()
        })
        .collect();
    times.sort();
    Figures {
        median: times[ROUNDS / 2],
        p99: times[ROUNDS * 99 / 100],
        bytes,
    }
}

fn print(what: &str, f: &Figures) {
    println!(
        "{what:<44} {:>10.3} {:>10.3} {:>9}",
        f.median.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.bytes
    );
}

pub fn metrics() -> anyhow::Result<()> {
    println!(
        "one scrape, {ROUNDS} rounds each ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:<44} {:>10} {:>10} {:>9}",
        "", "median ms", "p99 ms", "bytes"
    );
    let empty = Registry::default();
    print(
        "baseline: an empty registry",
        &time(|| {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &empty);
            text
        }),
    );
    let metrics = busy_metrics();
    let mut at_1000 = None::<Figures>;
    for tasks in [0, 1000, 10_000] {
        let memory = store_with(tasks);
        let figures = time(|| metrics.render(sample(count_tasks(&memory))));
        print(&format!("mesh: {tasks} tasks (count + render)"), &figures);
        if tasks == 1000 {
            at_1000 = Some(figures);
        }
    }
    let median = at_1000.map(|f| f.median).unwrap_or_default();
    let verdict = if median < TARGET { "met" } else { "MISSED" };
    println!(
        "target: a scrape at 1,000 tasks under {} ms: {verdict} (median {:.3} ms)",
        TARGET.as_millis(),
        median.as_secs_f64() * 1e3
    );
    anyhow::ensure!(
        median < TARGET,
        "a scrape at 1,000 tasks took {median:?} (median)"
    );
    Ok(())
}
