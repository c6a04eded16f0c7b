//! The metrics as a scraper sees them: rendered, parsed by a Prometheus text parser, and served
//! over HTTP within the server's limits.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_control::metrics::ManagerSample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::http::{Limits, Scrape, serve_with};
use super::*;
use crate::gossip::GossipStats;

fn sample() -> Sample {
    Sample {
        manager: Some(ManagerSample {
            tasks_by_state: BTreeMap::from([("running".into(), 2), ("failed".into(), 1)]),
            raft_term: 3,
            raft_commit_index: 42,
            raft_last_log_index: 43,
            is_leader: true,
            agent_sessions: 2,
        }),
        refused_calls: Some(7),
        vip_backends: BTreeMap::from([(Ipv4Addr::new(10, 0, 1, 2), 2)]),
        gossip: Some(GossipSample {
            members: 3,
            suspects: Some(1),
            stats: GossipStats {
                received: 10,
                sent: 11,
                dropped_bad_seal: 4,
                ..Default::default()
            },
        }),
        resident_memory_bytes: resident_memory_bytes(),
    }
}

/// Every sample of the scrape, `name{labels}` → value, as a Prometheus text parser reads it.
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the scrape parses");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let key = if labels.is_empty() {
                s.metric
            } else {
                format!("{}{{{}}}", s.metric, labels.join(","))
            };
            Some((key, value))
        })
        .collect()
}

#[test]
fn a_render_parses_and_says_what_the_node_is() {
    let metrics = Metrics::new();
    metrics.control.leader_changes.inc();
    metrics.control.commit_latency.observe(0.002);
    metrics.control.apply_latency.observe(0.0003);
    metrics.control.monitor_stalls.observe(1.5);
    metrics.kernel.lb_update("ebpf", "set_vip", Instant::now());
    let text = metrics.render(sample());
    let values = parse(&text);
    let want = [
        ("mesh_tasks{state=\"running\"}", 2.0),
        ("mesh_tasks{state=\"failed\"}", 1.0),
        ("mesh_raft_term", 3.0),
        ("mesh_raft_commit_index", 42.0),
        ("mesh_raft_last_log_index", 43.0),
        ("mesh_raft_leader", 1.0),
        ("mesh_dispatcher_sessions", 2.0),
        ("mesh_manager_refused_calls_total", 7.0),
        ("mesh_service_vip_backends{vip=\"10.0.1.2\"}", 2.0),
        ("mesh_gossip_members", 3.0),
        ("mesh_gossip_suspects", 1.0),
        ("mesh_gossip_datagrams_received_total", 10.0),
        (
            "mesh_gossip_datagrams_rejected_total{reason=\"bad_seal\"}",
            4.0,
        ),
        (
            "mesh_gossip_datagrams_rejected_total{reason=\"unknown_key\"}",
            0.0,
        ),
        ("mesh_raft_leader_changes_total", 1.0),
        ("mesh_dispatcher_heartbeat_misses_total", 0.0),
    ];
    for (name, value) in want {
        assert_eq!(values.get(name), Some(&value), "{name} in\n{text}");
    }
    assert!(
        values["mesh_process_resident_memory_bytes"] > 1_000_000.0,
        "{text}"
    );
    // Histograms come with their buckets, sum and count.
    for histogram in [
        "mesh_raft_commit_latency_seconds",
        "mesh_raft_apply_latency_seconds",
        "mesh_dispatcher_monitor_stalls_seconds",
    ] {
        assert!(
            text.contains(&format!("{histogram}_count 1")),
            "{histogram} in\n{text}"
        );
        assert!(
            text.contains(&format!("{histogram}_bucket{{le=\"0.0001\"}}")),
            "{text}"
        );
    }
    assert!(
        text.contains(
            "mesh_kernel_lb_update_duration_seconds_count{backend=\"ebpf\",op=\"set_vip\"} 1"
        ),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn a_worker_has_no_manager_series() {
    let metrics = Metrics::new();
    let values = parse(&metrics.render(Sample::default()));
    assert!(
        !values.keys().any(|k| k.starts_with("mesh_tasks")),
        "{values:?}"
    );
    assert!(!values.contains_key("mesh_raft_term"), "{values:?}");
}

fn text_scrape(body: &'static str) -> Scrape {
    Arc::new(move || Box::pin(async move { body.to_owned() }))
}

async fn server(limits: Limits) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve_with(
        listener,
        text_scrape("mesh_up 1\n# EOF\n"),
        stopped,
        limits,
    ));
    (addr, stop)
}

/// The server's whole answer; empty when it closed (or reset) the connection unanswered.
async fn request(addr: std::net::SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if stream.write_all(head.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("the server answers or closes");
    match read {
        Ok(_) => String::from_utf8_lossy(&response).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test]
async fn the_server_answers_get_metrics_and_nothing_else() {
    let (addr, _stop) = server(Limits::DEFAULT).await;
    let ok = request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    assert!(ok.contains("application/openmetrics-text"), "{ok}");
    assert!(ok.ends_with("mesh_up 1\n# EOF\n"), "{ok}");
    let missing = request(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = request(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.contains("allow: GET, HEAD"), "{post}");
    let garbage = request(addr, "\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        garbage.starts_with("HTTP/1.1 400") || garbage.is_empty(),
        "{garbage}"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let refused = request(addr, &huge).await;
    assert!(!refused.contains("200 OK"), "{refused}");
}

#[tokio::test]
async fn slow_clients_and_floods_are_bounded() {
    let limits = Limits {
        connections: 4,
        header_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_secs(1),
    };
    let (addr, _stop) = server(limits).await;
    // Four clients that send nothing hold every slot...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so a fifth is closed at once, unanswered.
    let flood = request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(flood, "");
    // A client that never finishes its request head is dropped after the header timeout.
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read_to_end(&mut buf))
        .await
        .expect("the idle client was dropped");
    assert!(read.is_ok());
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
    // Once they are gone, scrapes are served again.
    let mut served = String::new();
    for _ in 0..50 {
        served = request(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if !served.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
}
