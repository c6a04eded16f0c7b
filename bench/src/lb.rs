//! `cargo xtask bench lb`: a service VIP through mesh's socket load balancer ([`SockLb`]) against
//! the same VIP through iptables DNAT rules as kube-proxy writes them, and against one backend
//! reached directly (the physical limit), all on the same namespaces: a client and three backends
//! on one bridge. Part 1 (here) measures short TCP request/response exchanges from the client, a
//! new connection per request (HTTP/1.0) and persistent connections, with a load generator and
//! servers of our own ([`load`]). Part 2 ([`programming`]) times programming 1 to 10,000 services
//! into each, in kube-proxy's layout for iptables ([`rules`]).

mod load;
mod programming;
mod rules;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use mesh_agent::lb::ebpf::{Protocol, SockLb};
use mesh_agent::netlink::{self, netns_cookie};
use mesh_tests::netns::{Bridge, Netns};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::run::{spawn_in, this_program};
pub use load::{LbClientArgs, LbServerArgs, lb_client, lb_server};
use load::{Mode, Report};
use programming::programming;
use rules::{Iptables, KubeRules, Service};

/// The VIP of part 1, in a range no namespace has an address in.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Routed to the client's eth0 so that DNAT sees it and an unrewritten packet stays on the bridge.
const VIP_ROUTE: &str = "10.96.0.0/15";
const PORT: u16 = 80;
const BACKENDS: u8 = 3;
/// Service counts of part 2; the largest is also the crowd the VIP sits in at the end of part 1.
const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
/// Servers exit by themselves after this, should the benchmark die without killing them.
const SERVER_LIFETIME: Duration = Duration::from_secs(900);
const START_LIMIT: Duration = Duration::from_secs(20);
/// Client ports of the cases whose sockets connect to a backend's address (directly, or rewritten
/// by SockLb at connect) and of those whose sockets connect to the VIP (rewritten by DNAT). The
/// kernel gives the two kinds different TCP timestamp offsets (it hashes the addresses), so a SYN
/// of one kind reusing a port that a backend still holds in TIME_WAIT from the other kind fails
/// PAWS and waits a 1 s retransmission; disjoint ranges keep that artefact out.
const BACKEND_PORTS: &str = "20000 39999";
const VIP_PORTS: &str = "40000 59999";
#[derive(clap::Args)]
pub struct LbArgs {
    /// Build this program (load generator and SockLb programming) in release mode and run that.
    #[arg(long)]
    release: bool,
    /// Seconds of load per case (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Client connections in flight at once, one thread each.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Rounds over part 1's basic cases, in a rotating order; the median round is shown.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub async fn lb(args: LbArgs) -> anyhow::Result<()> {
    if args.release {
        let (seconds, concurrency) = (args.seconds.to_string(), args.concurrency.to_string());
        let rounds = args.rounds.to_string();
        let again = [
            "lb",
            "--seconds",
            &seconds,
            "--concurrency",
            &concurrency,
            "--rounds",
            &rounds,
        ];
        return crate::run::again_in_release(&[], &again, &[]);
    }
    ensure!(
        args.concurrency > 0 && args.seconds > 0.0 && args.rounds > 0,
        "--concurrency, --seconds and --rounds must be positive"
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let lab = Lab::start(args.concurrency).await?;
    let mut paths = data_path(&lab, &args).await?;
    let mut programming = programming(&lab, &args).await?;
    drop(lab);
    let crowd = std::mem::take(&mut programming.crowd);
    paths
        .rows
        .extend(crowd.into_iter().map(|(label, report)| Row {
            label,
            close: vec![report],
            persistent: Vec::new(),
        }));
    print_header(&args, &load)?;
    paths.print(&args);
    programming.print();
    Ok(())
}

/// A client and three backend namespaces on one bridge, each backend running [`lb_server`] on
/// port 80. No namespace has a default route. Dropped servers first, the bridge last.
struct Lab {
    servers: Vec<Child>,
    client: Netns,
    backends: Vec<Netns>,
    _bridge: Bridge,
    cookie: u64,
    exe: String,
}

impl Lab {
    async fn start(concurrency: usize) -> anyhow::Result<Self> {
        let exe = this_program()?;
        let bridge = Bridge::for_test()?;
        let client = Netns::attach(&bridge, 1)?;
        let mut backends = Vec::new();
        for k in 1..=BACKENDS {
            backends.push(Netns::attach(&bridge, 1 + k)?);
        }
        for ns in backends.iter().chain([&client]) {
            ns.ip(&["route", "del", "default"])?;
        }
        client.ip(&["route", "add", VIP_ROUTE, "dev", "eth0"])?;
        let cookie = netns_cookie(&netlink::Netns::from_path(client.path())).await?;
        let mut lab = Self {
            servers: Vec::new(),
            client,
            backends,
            _bridge: bridge,
            cookie,
            exe,
        };
        // Persistent connections to one backend directly need a thread each there.
        let threads = concurrency.to_string();
        let lifetime = SERVER_LIFETIME.as_secs().to_string();
        for (id, ns) in (1..).zip(&lab.backends) {
            let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).to_string();
            let id = format!("{id}");
            let args = [
                "lb-server",
                "--listen",
                &listen,
                "--id",
                &id,
                "--threads",
                &threads,
                "--lifetime",
                &lifetime,
            ];
            let server = ready(spawn_in(
                &ns.path(),
                &lab.exe,
                &args,
                Stdio::piped(),
                Stdio::inherit(),
            )?)
            .await?;
            lab.servers.push(server);
        }
        Ok(lab)
    }

    fn backend(&self, k: usize, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.backends[k].addr(), port)
    }

    fn all_backends(&self, port: u16) -> Vec<SocketAddrV4> {
        (0..self.backends.len())
            .map(|k| self.backend(k, port))
            .collect()
    }

    /// Runs [`lb_client`] in the client namespace against `targets`, from client `ports`.
    async fn load(
        &self,
        targets: &[SocketAddrV4],
        ports: &str,
        mode: Mode,
        args: &LbArgs,
    ) -> anyhow::Result<Report> {
        self.client_ports(ports).await?;
        let (seconds, concurrency) = (args.seconds.to_string(), args.concurrency.to_string());
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let mut client = vec![
            "lb-client",
            "--seconds",
            &seconds,
            "--concurrency",
            &concurrency,
        ];
        for target in &targets {
            client.extend(["--target", target]);
        }
        if mode == Mode::Persistent {
            client.push("--persistent");
        }
        let limit = Duration::from_secs_f64(args.seconds) + Duration::from_secs(60);
        let out = self.run(&self.exe, &client, None, limit).await?;
        Report::parse(&out)
    }

    /// Sets the client's ephemeral port range (`"FIRST LAST"`).
    async fn client_ports(&self, range: &str) -> anyhow::Result<()> {
        let setting = format!("net.ipv4.ip_local_port_range={range}");
        let limit = Duration::from_secs(10);
        self.run("sysctl", &["-q", "-w", &setting], None, limit)
            .await
            .map(drop)
    }

    /// Runs `program args…` in the client namespace with `stdin`, failing unless it exits 0;
    /// returns its stdout.
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let shown = format!("{program} {}", args.join(" "));
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.client.path()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {program} under nsenter"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await?;
        }
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("`{shown}` did not finish within {limit:?}"))??;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("`{shown}` failed ({}): {}", out.status, stderr.trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Waits for a server's first line, which it prints once it listens.
async fn ready(mut server: Child) -> anyhow::Result<Child> {
    let stdout = server.stdout.take().context("server stdout")?;
    let (mut reader, mut line) = (BufReader::new(stdout), String::new());
    let read = reader.read_line(&mut line);
    tokio::time::timeout(START_LIMIT, read)
        .await
        .context("lb-server did not start listening")??;
    ensure!(line.trim() == load::LISTENING, "lb-server printed {line:?}");
    Ok(server)
}

/// Part 1's basic cases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Ebpf,
    Iptables,
    OneBackend,
    AllBackends,
}

impl Case {
    const ALL: [Self; 4] = [
        Self::Ebpf,
        Self::Iptables,
        Self::OneBackend,
        Self::AllBackends,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ebpf => "(a) VIP via eBPF SockLb",
            Self::Iptables => "(b) VIP via iptables-nft DNAT",
            Self::OneBackend => "(c) one backend directly",
            Self::AllBackends => "(d) 3 backends directly, in turn",
        }
    }
}

/// One line of part 1: a report per round, for each kind of connection.
struct Row {
    label: String,
    close: Vec<Report>,
    persistent: Vec<Report>,
}

struct Paths {
    rows: Vec<Row>,
}

async fn data_path(lab: &Lab, args: &LbArgs) -> anyhow::Result<Paths> {
    let mut rows: Vec<Row> = Case::ALL
        .iter()
        .map(|case| Row {
            label: case.label().to_owned(),
            close: Vec::new(),
            persistent: Vec::new(),
        })
        .collect();
    for round in 0..args.rounds {
        // Each round starts with another case, so that drifting load elsewhere on the machine
        // does not always hit the same one first.
        for step in 0..Case::ALL.len() {
            let index = (round + step) % Case::ALL.len();
            let case = Case::ALL[index];
            for mode in [Mode::Close, Mode::Persistent] {
                eprintln!("part 1, round {}, {mode}: {}", round + 1, case.label());
                let report = measure(lab, case, mode, args).await?;
                let row = &mut rows[index];
                match mode {
                    Mode::Close => row.close.push(report),
                    Mode::Persistent => row.persistent.push(report),
                }
            }
        }
    }
    Ok(Paths { rows })
}

async fn measure(lab: &Lab, case: Case, mode: Mode, args: &LbArgs) -> anyhow::Result<Report> {
    let vip = [SocketAddrV4::new(VIP, PORT)];
    let backends = lab.all_backends(PORT);
    let report = match case {
        Case::Ebpf => {
            let mut lb = SockLb::load()?;
            lb.set_service(lab.cookie, VIP, PORT, Protocol::Tcp, &backends)?;
            lab.load(&vip, BACKEND_PORTS, mode, args).await
        }
        Case::Iptables => {
            let rules = KubeRules::new(&[Service::new(VIP, &backends)], 0);
            lab.restore(Iptables::Nft, &rules).await?;
            let report = lab.load(&vip, VIP_PORTS, mode, args).await;
            lab.clear_nat(Iptables::Nft).await?;
            report
        }
        Case::OneBackend => lab.load(&backends[..1], BACKEND_PORTS, mode, args).await,
        Case::AllBackends => lab.load(&backends, BACKEND_PORTS, mode, args).await,
    };
    let reached = if case == Case::OneBackend {
        1
    } else {
        backends.len()
    };
    checked(report?, mode, reached)
}

/// Fails a case that had errors or whose answers did not come from `backends` distinct backends.
/// Persistent connections are too few for that: with them, any of the backends will do.
fn checked(report: Report, mode: Mode, backends: usize) -> anyhow::Result<Report> {
    let reached = report.by_server.len();
    ensure!(report.requests > 0, "no request succeeded: {report:?}");
    ensure!(
        report.errors * 1000 <= report.requests,
        "more than 0.1 % of requests failed: {report:?}"
    );
    let expected = match mode {
        Mode::Close => reached == backends,
        Mode::Persistent => (1..=backends).contains(&reached),
    };
    ensure!(
        expected,
        "{reached} backends answered, expected {backends}: {report:?}"
    );
    Ok(report)
}

impl Paths {
    fn print(&self, args: &LbArgs) {
        println!();
        println!(
            "part 1: TCP request/response (32-byte request, 64-byte response) from the client \
             namespace, {} client threads (one connection in flight each), {} s per case, {} \
             rounds in rotating order: the round with the median rate is shown, with the range \
             of the rates. spread: each backend's share of the answers. vs (d): new connections \
             per second against (d). Client ports {} for the DNAT cases, {} for the others (a \
             backend's TIME_WAIT would drop reused ports of the other kind, see VIP_PORTS). The \
             last rows, one round each, add part 1's VIP as one more service to part 2's largest \
             set",
            args.concurrency,
            args.seconds,
            args.rounds,
            VIP_PORTS.replace(' ', "-"),
            BACKEND_PORTS.replace(' ', "-")
        );
        println!(
            "{:<44} {:>67} | {:>60}",
            "", "new connection per request (HTTP/1.0)", "persistent connections"
        );
        println!("{:<44} {} {:>7} | {}", "path", HEADINGS, "vs (d)", HEADINGS);
        let reference = self
            .rows
            .iter()
            .find(|row| row.label.starts_with("(d)"))
            .and_then(|row| median(&row.close))
            .map_or(f64::NAN, Report::rate);
        for row in &self.rows {
            let Some(close) = median(&row.close) else {
                continue;
            };
            let versus = format!("{:.0} %", 100.0 * close.rate() / reference);
            let mut line = format!("{:<44} {} {versus:>7} |", row.label, figures(&row.close));
            if row.persistent.is_empty() {
                line.push_str("   (rules meet only a connection's first packet)");
            } else {
                line.push(' ');
                line.push_str(&figures(&row.persistent));
            }
            println!("{line}");
        }
        for row in &self.rows {
            for report in row.close.iter().chain(&row.persistent) {
                if let Some(err) = &report.first_error {
                    println!("{}: first error of {}: {err}", row.label, report.errors);
                }
            }
        }
    }
}

const HEADINGS: &str = "    req/s       (range)   p50 µs   p99 µs errors   spread %";

/// The report of the round with the median rate.
fn median(reports: &[Report]) -> Option<&Report> {
    let mut sorted: Vec<&Report> = reports.iter().collect();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted.get(sorted.len() / 2).copied()
}

/// The median round's figures, the range of the rates, and the errors of all rounds.
fn figures(reports: &[Report]) -> String {
    let Some(r) = median(reports) else {
        return String::new();
    };
    let rates = reports.iter().map(Report::rate);
    let (low, high) = rates.fold((f64::MAX, 0.0_f64), |(l, h), x| (l.min(x), h.max(x)));
    let range = if reports.len() > 1 {
        format!("({low:.0}-{high:.0})")
    } else {
        String::new()
    };
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    format!(
        "{:>9.0} {range:>13} {:>8.1} {:>8.1} {errors:>6} {:>10}",
        r.rate(),
        r.p50_us,
        r.p99_us,
        r.spread()
    )
}

/// The address of service `i` in part 2 (and of the crowd in part 1): 10.97.x.y.
fn service_vip(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).unwrap_or(u32::MAX) & 0xffff;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 0)) | i)
}

fn print_header(args: &LbArgs, load: &str) -> anyhow::Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .to_owned(),
            )
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let iptables = std::process::Command::new(Iptables::Nft.name())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "service load balancing: kernel {}, {cpus} CPUs ({model}), {iptables}, mesh-bench {profile} \
         build (its load generator and SockLb calls); a client and {BACKENDS} backend namespaces on one bridge, VIP {VIP}:{PORT}; load \
         {} client threads; load average {load} at the start",
        kernel.trim(),
        args.concurrency
    );
    Ok(())
}
