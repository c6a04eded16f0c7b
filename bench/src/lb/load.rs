//! The request/response server and load generator that `bench lb` runs inside its namespaces,
//! as hidden `mesh-bench lb-server` and `mesh-bench lb-client`. Plain blocking sockets, one
//! thread per connection in flight, so that each exchange costs the tool a few syscalls and the
//! kernel's path is what is measured.
//!
//! A request is 32 bytes whose first byte says whether the server closes after answering
//! (`C`, HTTP/1.0) or waits for the next request (`K`); the answer is 64 bytes whose first byte
//! names the server, so that the client can tell how a VIP spread its requests.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

/// What a server prints once it listens.
pub(super) const LISTENING: &str = "listening";
const REQUEST: usize = 32;
const RESPONSE: usize = 64;
const CLOSE: u8 = b'C';
const KEEP: u8 = b'K';
/// Bounds each connect and each read, so that the client always stops on time.
const IO_LIMIT: Duration = Duration::from_secs(2);
/// Requests before this are not counted: ARP, the first connections, thread start.
const WARM_UP: Duration = Duration::from_millis(500);

#[derive(clap::Args)]
pub struct LbServerArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The digit this server answers with (first byte of every response).
    #[arg(long)]
    id: u8,
    /// Threads accepting and serving connections, one connection at a time each.
    #[arg(long)]
    threads: usize,
    /// Seconds after which the server exits by itself.
    #[arg(long)]
    lifetime: u64,
}

#[derive(clap::Args)]
pub struct LbClientArgs {
    /// The address to send requests to; given several times, each thread takes them in turn
    /// (with `--persistent`, thread `i` keeps to target `i` modulo their number).
    #[arg(long, required = true)]
    target: Vec<SocketAddr>,
    /// Seconds to measure, after a 0.5 s warm-up.
    #[arg(long)]
    seconds: f64,
    /// Connections in flight at once, one thread each.
    #[arg(long)]
    concurrency: usize,
    /// Keep each connection for many requests instead of one connection per request.
    #[arg(long)]
    persistent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A new connection per request, closed by the server after its answer (HTTP/1.0).
    Close,
    /// One connection per client thread for the whole run.
    Persistent,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Close => "new connection per request",
            Self::Persistent => "persistent connections",
        })
    }
}

/// What the client measured, as it prints it.
#[derive(Debug)]
pub(super) struct Report {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Answers per server id.
    pub by_server: BTreeMap<String, u64>,
}

impl Report {
    /// Reads the JSON line [`lb_client`] prints.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("lb-client printed {line:?}"))?;
        let number = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("lb-client's report has no {key}: {line}"))
        };
        let count = |key: &str| {
            v[key]
                .as_u64()
                .with_context(|| format!("lb-client's report has no {key}: {line}"))
        };
        let by_server = v["by_server"]
            .as_object()
            .context("lb-client's report has no by_server")?
            .iter()
            .map(|(id, n)| Ok((id.clone(), n.as_u64().context("odd by_server count")?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            requests: count("requests")?,
            errors: count("errors")?,
            first_error: v["first_error"].as_str().map(str::to_owned),
            seconds: number("seconds")?,
            p50_us: number("p50_us")?,
            p99_us: number("p99_us")?,
            by_server,
        })
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Each server's share of the answers in percent, `34/33/33`.
    pub fn spread(&self) -> String {
        let shares: Vec<String> = self
            .by_server
            .values()
            .map(|n| format!("{:.0}", 100.0 * *n as f64 / self.requests as f64))
            .collect();
        shares.join("/")
    }
}

/// The hidden `mesh-bench lb-server`: answers requests until its lifetime is over.
pub fn lb_server(args: LbServerArgs) -> anyhow::Result<()> {
    ensure!(args.threads > 0, "--threads must be positive");
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("{LISTENING}");
    io::stdout().flush()?;
    let lifetime = Duration::from_secs(args.lifetime);
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        std::process::exit(0);
    });
    let listener = Arc::new(listener);
    let mut response = [b' '; RESPONSE];
    response[0] = b'0' + args.id % 10;
    response[RESPONSE - 1] = b'\n';
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let listener = Arc::clone(&listener);
            std::thread::spawn(move || -> io::Result<()> {
                loop {
                    let (stream, _) = listener.accept()?;
                    // A client that misbehaves costs only its own connection.
                    let _ = serve(stream, &response);
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))?
            .context("accept")?;
    }
    Ok(())
}

fn serve(mut stream: TcpStream, response: &[u8; RESPONSE]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = [0u8; REQUEST];
    loop {
        match stream.read_exact(&mut request) {
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        stream.write_all(response)?;
        if request[0] != KEEP {
            // Dropping the stream closes it: the server side keeps the TIME_WAIT, as with HTTP/1.0.
            return Ok(());
        }
    }
}

/// One client thread's figures.
#[derive(Default)]
struct Tally {
    nanos: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    by_server: [u64; 10],
}

/// The hidden `mesh-bench lb-client`: keeps `concurrency` exchanges in flight for `seconds`
/// after a warm-up and prints one JSON [`Report`].
pub fn lb_client(args: LbClientArgs) -> anyhow::Result<()> {
    ensure!(
        args.concurrency > 0 && args.seconds > 0.0,
        "--concurrency and --seconds must be positive"
    );
    let mode = if args.persistent {
        Mode::Persistent
    } else {
        Mode::Close
    };
    let start = Instant::now();
    let counted = start + WARM_UP;
    let end = counted + Duration::from_secs_f64(args.seconds);
    let targets = Arc::new(args.target);
    let threads: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let targets = Arc::clone(&targets);
            std::thread::spawn(move || drive(&targets, i, mode, counted, end))
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        total.nanos.extend(tally.nanos);
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
        for (sum, n) in total.by_server.iter_mut().zip(tally.by_server) {
            *sum += n;
        }
    }
    let seconds = Instant::now()
        .min(end)
        .duration_since(counted)
        .as_secs_f64();
    total.nanos.sort_unstable();
    let at = |q: f64| {
        let i = ((total.nanos.len().saturating_sub(1)) as f64 * q).round() as usize;
        total.nanos.get(i).map_or(0.0, |&n| n as f64 / 1e3)
    };
    let by_server: BTreeMap<String, u64> = (0..10)
        .filter(|&id| total.by_server[id] > 0)
        .map(|id| (id.to_string(), total.by_server[id]))
        .collect();
    let report = json!({
        "requests": total.nanos.len(),
        "errors": total.errors,
        "first_error": total.first_error,
        "seconds": seconds,
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "by_server": by_server,
    });
    println!("{report}");
    Ok(())
}

/// Client thread `thread`: exchanges until `end`, counting those that start at `counted` or
/// later.
fn drive(
    targets: &[SocketAddr],
    thread: usize,
    mode: Mode,
    counted: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    for turn in thread.. {
        let begun = Instant::now();
        if begun >= end {
            break;
        }
        // A persistent connection ignores it once connected.
        let target = targets[turn % targets.len()];
        let result = exchange(&mut conn, target, mode);
        let took = begun.elapsed();
        match result {
            Ok(server) if begun >= counted => {
                tally
                    .nanos
                    .push(took.as_nanos().try_into().unwrap_or(u64::MAX));
                tally.by_server[usize::from(server)] += 1;
            }
            Ok(_) => {}
            Err(err) => {
                conn = None;
                if begun >= counted {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| err.to_string());
                }
                // Do not spin on a refusing target.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tally
}

/// One request and its response; returns the id of the server that answered.
fn exchange(conn: &mut Option<TcpStream>, target: SocketAddr, mode: Mode) -> io::Result<u8> {
    let stream = match conn {
        Some(stream) => stream,
        None => {
            let stream = TcpStream::connect_timeout(&target, IO_LIMIT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_LIMIT))?;
            conn.insert(stream)
        }
    };
    let request = [if mode == Mode::Persistent {
        KEEP
    } else {
        CLOSE
    }; REQUEST];
    stream.write_all(&request)?;
    let mut response = [0u8; RESPONSE];
    stream.read_exact(&mut response)?;
    if mode == Mode::Close {
        // HTTP/1.0: the answer ends when the server closes.
        let mut more = [0u8; 1];
        if stream.read(&mut more)? != 0 {
            return Err(io::Error::other("the server sent more than one response"));
        }
        *conn = None;
    }
    match response[0] {
        id @ b'0'..=b'9' => Ok(id - b'0'),
        other => Err(io::Error::other(format!("odd response byte {other:#x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One server thread, one client thread each way, on loopback.
    #[test]
    fn client_counts_answers_of_a_server_in_both_modes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut response = [b' '; RESPONSE];
        response[0] = b'7';
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let _ = serve(stream.unwrap(), &response);
            }
        });
        for mode in [Mode::Close, Mode::Persistent] {
            let now = Instant::now();
            let tally = drive(&[addr], 0, mode, now, now + Duration::from_millis(200));
            assert_eq!(tally.errors, 0, "{mode}: {:?}", tally.first_error);
            assert!(!tally.nanos.is_empty(), "{mode}: no exchange");
            assert_eq!(tally.by_server[7], tally.nanos.len() as u64, "{mode}");
        }
    }
}
