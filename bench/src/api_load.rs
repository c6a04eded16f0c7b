//! `cargo xtask bench api-load`: the control API's latency while the manager creates and schedules
//! a 100,000-replica service, beside its latency when idle, and the manager's memory per task.
//!
//! Real nodes (namespaces with their own dockerd and meshd, one manager and two workers), driven
//! over the manager's local socket by a gRPC client in this process. The executor is real Docker,
//! so 100,000 containers cannot run here: the service is constrained to a node label no node has.
//! Every task then goes through the whole manager pipeline — the replicated orchestrator creates
//! it, the allocator moves it to PENDING, the scheduler decides it has no suitable node and
//! records why, each step in batches through Raft — but no agent starts a container. Every
//! [`CHECK_EVERY`] the run pauses its timed calls to count the decided tasks with one (untimed)
//! listing of them all; it ends when all 100,000 are decided.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use mesh_proto::control_client::ControlClient;
use mesh_proto::gather;
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, ContainerSpec, CreateServiceRequest, GetServiceRequest, ListNodesRequest,
    ListServicesRequest, ListTasksRequest, Placement, ReplicatedService, ServiceSpec, TaskSpec,
    TaskState,
};
use mesh_tests::{BUSYBOX_IMAGE, Cluster};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::run::{LIMIT, SERVICE, build};

/// The replicas of the service under load: the largest one service may have.
const REPLICAS: u64 = 100_000;
/// A small service the probes read, beside the big one.
const PROBE: &str = "probe";
/// Calls timed while idle.
const IDLE_CALLS: usize = 600;
/// Pause between timed calls: about a hundred calls a second, as a busy operator's scripts.
const PACE: Duration = Duration::from_millis(10);
/// How often the decided tasks are counted.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long the scheduling of the 100,000 may take at most.
const LOAD_LIMIT: Duration = Duration::from_secs(1800);

pub async fn api_load(release: bool) -> anyhow::Result<()> {
    let Some(profile) = build(release, &["api-load"])? else {
        return Ok(());
    };
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .quiet()
        .start()
        .await?;
    let manager = cluster.manager();
    let pid = manager
        .meshd_pid()
        .context("the manager's meshd is not running")?;
    let mut client = connect(manager.socket()).await?;
    client
        .create_service(CreateServiceRequest {
            spec: Some(spec(PROBE, 0)),
        })
        .await
        .context("create the probe service")?;

    let idle_rss = memory_kib(pid, "VmRSS")?;
    let mut idle = Vec::with_capacity(IDLE_CALLS);
    for call in 0..IDLE_CALLS {
        idle.push(timed_call(&mut client, call).await?);
        tokio::time::sleep(PACE).await;
    }

    let started = Instant::now();
    client
        .create_service(CreateServiceRequest {
            spec: Some(spec(SERVICE, REPLICAS)),
        })
        .await
        .context("create the 100,000-replica service")?;
    let create = started.elapsed();
    let mut busy = Vec::new();
    let mut checked = Instant::now();
    let mut decided = 0;
    let load = loop {
        if checked.elapsed() >= CHECK_EVERY {
            decided = decided_tasks(&mut client).await?;
            checked = Instant::now();
            if decided == REPLICAS as usize {
                break started.elapsed();
            }
        }
        if started.elapsed() > LOAD_LIMIT {
            bail!("{decided} of {REPLICAS} tasks decided after {LOAD_LIMIT:?}");
        }
        busy.push(timed_call(&mut client, busy.len()).await?);
        tokio::time::sleep(PACE).await;
    };
    let loaded_rss = memory_kib(pid, "VmRSS")?;
    let peak_rss = memory_kib(pid, "VmHWM")?;

    println!(
        "control API under load: 1 manager + 2 workers (namespaces, own dockerd and meshd), \
         meshd {profile} build"
    );
    println!(
        "a {REPLICAS}-replica service constrained to no node: every task created, allocated and \
         decided (\"no suitable node\") by the manager, in batches; no container started"
    );
    println!(
        "calls: {} in turn, one every ~{} ms, over the local socket",
        CALLS.join(", "),
        PACE.as_millis()
    );
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9}",
        "", "calls", "p50", "p99", "max"
    );
    let mut rows = vec![
        ("idle".to_string(), idle.clone()),
        (format!("creating + scheduling {REPLICAS}"), busy.clone()),
    ];
    // Under load, each call on its own: what each one costs with 100,000 tasks in the store.
    for (kind, name) in CALLS.iter().enumerate() {
        let of_kind = busy
            .iter()
            .skip(kind)
            .step_by(CALLS.len())
            .copied()
            .collect();
        rows.push((format!("  of which {name}"), of_kind));
    }
    for (what, mut samples) in rows {
        if samples.is_empty() {
            continue;
        }
        let (p50, p99, max) = percentiles(&mut samples);
        println!(
            "{what:<34} {:>7} {:>6.2} ms {:>6.2} ms {:>6.2} ms",
            samples.len(),
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    println!(
        "CreateService of {REPLICAS} replicas answered in {:.1} ms; all {REPLICAS} tasks found \
         decided {:.1} s after it (counted every {} s)",
        ms(create),
        load.as_secs_f64(),
        CHECK_EVERY.as_secs()
    );
    let per_task = |rss: u64| (rss.saturating_sub(idle_rss) * 1024) as f64 / REPLICAS as f64;
    println!(
        "manager RSS: {:.1} MiB idle, {:.1} MiB with the {REPLICAS} tasks ({:.0} bytes per task), \
         peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        per_task(loaded_rss),
        peak_rss as f64 / 1024.0,
    );
    cluster.close()
}

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: BUSYBOX_IMAGE.into(),
                args: vec!["sleep".into(), "1000000".into()],
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: vec!["node.labels.mesh-bench==never".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas })),
        endpoint: None,
        ..Default::default()
    }
}

pub(crate) async fn connect(socket: &Path) -> anyhow::Result<ControlClient<Channel>> {
    let path: PathBuf = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    // gRPC's default 4 MiB decoding limit, as meshctl's: lists arrive in chunks well under it.
    Ok(ControlClient::new(channel))
}

/// The calls timed, in turn.
const CALLS: [&str; 4] = [
    "ListServices",
    "GetService probe",
    "GetService bench",
    "ListNodes",
];

/// One read call, the `n`th of the rotation ([`CALLS`]), timed; an error ends the benchmark.
async fn timed_call(client: &mut ControlClient<Channel>, n: usize) -> anyhow::Result<Duration> {
    let get = |reference: &str| GetServiceRequest {
        reference: reference.into(),
    };
    let start = Instant::now();
    let result = tokio::time::timeout(LIMIT, async {
        match n % CALLS.len() {
            0 => match client.list_services(ListServicesRequest {}).await {
                Ok(listed) => gather(listed.into_inner()).await.map(drop),
                Err(status) => Err(status),
            },
            1 => client.get_service(get(PROBE)).await.map(drop),
            2 => client.get_service(get(SERVICE)).await.map(drop),
            _ => match client.list_nodes(ListNodesRequest {}).await {
                Ok(listed) => gather(listed.into_inner()).await.map(drop),
                Err(status) => Err(status),
            },
        }
    })
    .await;
    let elapsed = start.elapsed();
    match result {
        Ok(Ok(())) => Ok(elapsed),
        // Before it is created (while idle), the big service is not found: an answer all the same.
        Ok(Err(status)) if n % CALLS.len() == 2 && status.code() == tonic::Code::NotFound => {
            Ok(elapsed)
        }
        Ok(Err(status)) => bail!("call {n} failed: {}", status.message()),
        Err(_) => bail!("call {n} did not answer within {LIMIT:?}"),
    }
}

/// The big service's tasks the scheduler has decided: pending with its reason recorded.
async fn decided_tasks(client: &mut ControlClient<Channel>) -> anyhow::Result<usize> {
    let service = client
        .get_service(GetServiceRequest {
            reference: SERVICE.into(),
        })
        .await?
        .into_inner();
    let tasks = client
        .list_tasks(ListTasksRequest {
            service_ids: vec![service.id],
            ..Default::default()
        })
        .await?
        .into_inner();
    let tasks = gather(tasks).await?.tasks;
    let decided = tasks.iter().filter(|t| {
        t.status.as_ref().is_some_and(|s| {
            s.state == TaskState::Pending as i32 && s.err.starts_with("no suitable node")
        })
    });
    Ok(decided.count())
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    (at(0.50), at(0.99), at(1.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A size of process `pid` from `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn memory_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("meshd {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
