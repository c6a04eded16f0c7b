//! The socket-level eBPF load balancer (`SockLb`) against the real kernel, no Docker: a client
//! namespace, three backend namespaces and a stranger on one bridge. A VIP nobody owns (and that
//! no namespace has a route to) reaches the backends from the client only, over TCP and UDP, and
//! only while the balancer is loaded and the service set.
//!
//! Pinned, the balancer outlives the process that loaded it (meshd across a restart) and the next
//! load takes it over with its entries.
//!
//! Several tests run at once, each with its own `SockLb` attached to the same cgroup2 root: that
//! they do not disturb each other is part of what is tested.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_agent::lb::ebpf::{Pins, Protocol, SockLb};
use mesh_agent::netlink::{self, netns_cookie};
use mesh_tests::netns::{Bridge, Netns};
use mesh_tests::process::{Output, run};
use mesh_tests::{require_privileged, wait_until};

/// A VIP nobody owns.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// A second one, for the port-0 (every port) service.
const WILDCARD_VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const BACKENDS: u8 = 3;
/// Connections made to see how a service spreads.
const CONNECTIONS: usize = 30;
/// Bounds every client command; the commands themselves give up after 2 s.
const COMMAND: Duration = Duration::from_secs(15);
const READY: Duration = Duration::from_secs(20);

/// Answers a UDP datagram with the backend's name, from the port it came to.
const UDP_SERVER: &str = r#"
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => $ARGV[1], Proto => "udp") or die "bind: $!";
while (1) { my $peer = $s->recv(my $buf, 512); $s->send($ARGV[0], 0, $peer) if defined $peer; }
"#;

/// Sends one datagram to ADDR PORT, with `connect` first if the third argument is 1, and prints
/// the reply and where it came from: `NAME from ADDR:PORT`.
const UDP_CLIENT: &str = r#"
use IO::Socket::INET; use Socket;
my ($addr, $port, $connect) = @ARGV;
my $s;
if ($connect) {
  $s = IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $port, Proto => "udp") or die "connect: $!";
  defined $s->send("ping") or die "send: $!";
} else {
  $s = IO::Socket::INET->new(Proto => "udp") or die "socket: $!";
  defined send($s, "ping", 0, sockaddr_in($port, inet_aton($addr))) or die "send: $!";
}
my $rin = ""; vec($rin, fileno($s), 1) = 1;
select($rin, undef, undef, 2) or die "no reply";
my $from = recv($s, my $buf, 512, 0) or die "recv: $!";
my ($p, $a) = sockaddr_in($from);
print "$buf from ", inet_ntoa($a), ":$p\n";
"#;

/// A server process in a namespace, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespaces and servers of one test; dropped servers first, the bridge last.
struct Lab {
    servers: Vec<Server>,
    client: Netns,
    backends: Vec<Netns>,
    stranger: Netns,
    _bridge: Bridge,
    busybox: PathBuf,
}

impl Lab {
    /// Backend `k` (1-based) answers TCP on 80 with `bk`, on 81 with `bk:81`, and UDP on 53
    /// with `bk`. No namespace has a default route, so a VIP that is not rewritten is unreachable.
    async fn start() -> anyhow::Result<Self> {
        let busybox = mesh_tests::image::busybox_binary().context("busybox-static")?;
        mesh_tests::skip::which("perl").context("perl (perl-base) is needed for UDP")?;
        let bridge = Bridge::for_test()?;
        let client = Netns::attach(&bridge, 1)?;
        let mut backends = Vec::new();
        for k in 1..=BACKENDS {
            backends.push(Netns::attach(&bridge, 1 + k)?);
        }
        let stranger = Netns::attach(&bridge, 2 + BACKENDS)?;
        for ns in backends.iter().chain([&client, &stranger]) {
            ns.ip(&["route", "del", "default"])?;
        }
        let mut servers = Vec::new();
        for (k, ns) in (1..).zip(&backends) {
            let name = format!("b{k}");
            let bb = busybox.to_str().context("busybox path")?;
            let tcp80 = ["nc", "-ll", "-p", "80", "-e", "echo", &name];
            servers.push(spawn(ns, bb, &tcp80)?);
            let name81 = format!("{name}:81");
            let tcp81 = ["nc", "-ll", "-p", "81", "-e", "echo", &name81];
            servers.push(spawn(ns, bb, &tcp81)?);
            servers.push(spawn(ns, "perl", &["-e", UDP_SERVER, &name, "53"])?);
        }
        let lab = Self {
            servers,
            client,
            backends,
            stranger,
            _bridge: bridge,
            busybox,
        };
        for (k, ns) in (1..).zip(&lab.backends) {
            let (addr, want) = (ns.addr().to_string(), format!("b{k}"));
            wait_until(READY, &format!("backend {want} listens"), async || {
                let tcp = lab.tcp(&lab.client, &addr, 80).await?.stdout;
                let tcp81 = lab.tcp(&lab.client, &addr, 81).await?.stdout;
                let udp = lab.udp(&lab.client, &addr, 53, false).await?.stdout;
                Ok(tcp.trim() == want
                    && tcp81.trim() == format!("{want}:81")
                    && udp.starts_with(&want))
            })
            .await?;
        }
        ensure!(lab.servers.len() == 3 * usize::from(BACKENDS));
        Ok(lab)
    }

    fn backend(&self, k: usize, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.backends[k - 1].addr(), port)
    }

    fn all_backends(&self, port: u16) -> Vec<SocketAddrV4> {
        (1..=self.backends.len())
            .map(|k| self.backend(k, port))
            .collect()
    }

    async fn cookie(&self, ns: &Netns) -> anyhow::Result<u64> {
        let path = netlink::Netns::from_path(ns.path());
        Ok(netns_cookie(&path).await?)
    }

    /// One TCP connection from `ns` with busybox nc (2 s connect timeout).
    async fn tcp(&self, ns: &Netns, addr: &str, port: u16) -> anyhow::Result<Output> {
        let bb = self.busybox.to_str().context("busybox path")?;
        let net = format!("--net={}", ns.path());
        let port = port.to_string();
        run(
            "nsenter",
            &[&net, bb, "nc", "-w", "2", addr, &port],
            COMMAND,
        )
        .await
    }

    /// One UDP request from `ns`, connected or sent with `sendto`.
    async fn udp(
        &self,
        ns: &Netns,
        addr: &str,
        port: u16,
        connect: bool,
    ) -> anyhow::Result<Output> {
        let net = format!("--net={}", ns.path());
        let (port, connect) = (port.to_string(), if connect { "1" } else { "0" });
        let args = [&net, "perl", "-e", UDP_CLIENT, addr, &port, connect];
        run("nsenter", &args, COMMAND).await
    }

    /// Makes `CONNECTIONS` TCP connections from the client and returns who answered; every one
    /// must succeed.
    async fn spread(&self, vip: Ipv4Addr, port: u16) -> anyhow::Result<BTreeSet<String>> {
        let mut answers = BTreeSet::new();
        for i in 0..CONNECTIONS {
            let out = self.tcp(&self.client, &vip.to_string(), port).await?;
            let out = out.ok(&format!("connection {i} to {vip}:{port}"))?;
            answers.insert(out.stdout.trim().to_owned());
        }
        Ok(answers)
    }
}

fn spawn(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<Server> {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program} in {}", ns.name()))?;
    Ok(Server(child))
}

fn names(ks: &[usize], suffix: &str) -> BTreeSet<String> {
    ks.iter().map(|k| format!("b{k}{suffix}")).collect()
}

/// Asserts that a connection attempt failed without reaching any backend.
fn not_reached(out: &Output, what: &str) -> anyhow::Result<()> {
    ensure!(
        !out.success() && !out.stdout.contains('b'),
        "{what}: expected a failure, got exit {} with {:?}",
        out.code,
        out.stdout
    );
    Ok(())
}

#[tokio::test]
async fn tcp_spreads_over_backends_and_follows_changes() -> anyhow::Result<()> {
    require_privileged!();
    let lab = Lab::start().await?;
    let mut lb = SockLb::load()?;
    let client = lab.cookie(&lab.client).await?;
    ensure!(client == lab.cookie(&lab.client).await?, "cookie is stable");

    lb.set_service(client, VIP, 80, Protocol::Tcp, &lab.all_backends(80))?;
    let seen = lab.spread(VIP, 80).await?;
    ensure!(seen == names(&[1, 2, 3], ""), "answers: {seen:?}");

    // Backend 2 leaves: no new connection reaches it.
    lb.set_service(
        client,
        VIP,
        80,
        Protocol::Tcp,
        &[lab.backend(1, 80), lab.backend(3, 80)],
    )?;
    let seen = lab.spread(VIP, 80).await?;
    ensure!(seen == names(&[1, 3], ""), "after removing b2: {seen:?}");

    // No backends: connect() is refused at once, not left to time out.
    lb.set_service(client, VIP, 80, Protocol::Tcp, &[])?;
    let start = Instant::now();
    let out = lab.tcp(&lab.client, &VIP.to_string(), 80).await?;
    let took = start.elapsed();
    not_reached(&out, "no backends")?;
    ensure!(
        out.stderr.contains("not permitted") && took < Duration::from_secs(2),
        "no backends: {:?} after {took:?}",
        out.stderr
    );

    // Another port of the VIP, and UDP to the same port, were never set.
    lb.set_service(client, VIP, 80, Protocol::Tcp, &[lab.backend(3, 80)])?;
    let out = lab.tcp(&lab.client, &VIP.to_string(), 81).await?;
    not_reached(&out, "an unset port")?;
    let out = lab.udp(&lab.client, &VIP.to_string(), 80, false).await?;
    not_reached(&out, "UDP to a TCP service")?;
    ensure!(lab.spread(VIP, 80).await? == names(&[3], ""));

    lb.remove_service(client, VIP, 80, Protocol::Tcp)?;
    let out = lab.tcp(&lab.client, &VIP.to_string(), 80).await?;
    not_reached(&out, "removed service")?;
    ensure!(lb.entries()? == 0, "{} entries left", lb.entries()?);
    Ok(())
}

#[tokio::test]
async fn a_port_zero_service_takes_every_port_and_an_exact_port_wins() -> anyhow::Result<()> {
    require_privileged!();
    let lab = Lab::start().await?;
    let mut lb = SockLb::load()?;
    let client = lab.cookie(&lab.client).await?;

    // Backends with port 0 keep the port the client asked for.
    lb.set_service(client, WILDCARD_VIP, 0, Protocol::Tcp, &lab.all_backends(0))?;
    ensure!(lab.spread(WILDCARD_VIP, 80).await? == names(&[1, 2, 3], ""));
    ensure!(lab.spread(WILDCARD_VIP, 81).await? == names(&[1, 2, 3], ":81"));

    // An exact entry for port 81 goes first: to backend 2's port 80.
    lb.set_service(
        client,
        WILDCARD_VIP,
        81,
        Protocol::Tcp,
        &[lab.backend(2, 80)],
    )?;
    ensure!(lab.spread(WILDCARD_VIP, 81).await? == names(&[2], ""));
    ensure!(lab.spread(WILDCARD_VIP, 80).await? == names(&[1, 2, 3], ""));

    lb.remove_sandbox(client)?;
    ensure!(lb.entries()? == 0, "{} entries left", lb.entries()?);
    let out = lab.tcp(&lab.client, &WILDCARD_VIP.to_string(), 80).await?;
    not_reached(&out, "after remove_sandbox")?;
    Ok(())
}

#[tokio::test]
async fn udp_replies_come_from_the_vip() -> anyhow::Result<()> {
    require_privileged!();
    let lab = Lab::start().await?;
    let mut lb = SockLb::load()?;
    let client = lab.cookie(&lab.client).await?;
    lb.set_service(client, VIP, 53, Protocol::Udp, &lab.all_backends(53))?;

    let vip = VIP.to_string();
    for connect in [false, true] {
        let mut seen = BTreeSet::new();
        for _ in 0..CONNECTIONS {
            let out = lab.udp(&lab.client, &vip, 53, connect).await?;
            let out = out.ok(&format!("UDP to the VIP (connect: {connect})"))?;
            let (name, from) = out
                .stdout
                .trim()
                .split_once(" from ")
                .with_context(|| format!("odd reply {:?}", out.stdout))?;
            ensure!(from == "10.99.0.10:53", "reply from {from}, not the VIP");
            seen.insert(name.to_owned());
        }
        ensure!(seen == names(&[1, 2, 3], ""), "connect {connect}: {seen:?}");
    }
    ensure!(lb.entries()? > 0);

    // No backends: sendto() fails at once too.
    lb.set_service(client, VIP, 53, Protocol::Udp, &[])?;
    let out = lab.udp(&lab.client, &vip, 53, false).await?;
    ensure!(
        !out.success() && out.stderr.contains("not permitted"),
        "sendto with no backends: {out:?}"
    );

    // Removing the service also removes the reverse entries of the sockets that used it.
    lb.remove_service(client, VIP, 53, Protocol::Udp)?;
    ensure!(lb.entries()? == 0, "{} entries left", lb.entries()?);
    Ok(())
}

#[tokio::test]
async fn only_registered_namespaces_are_balanced_each_by_its_own_instance() -> anyhow::Result<()> {
    require_privileged!();
    let lab = Lab::start().await?;
    let client = lab.cookie(&lab.client).await?;
    let stranger = lab.cookie(&lab.stranger).await?;
    ensure!(client != stranger, "two namespaces share cookie {client}");

    let mut mine = SockLb::load()?;
    mine.set_service(client, VIP, 80, Protocol::Tcp, &[lab.backend(1, 80)])?;
    let out = lab.tcp(&lab.stranger, &VIP.to_string(), 80).await?;
    not_reached(&out, "a namespace nobody registered")?;

    // A second instance (another meshd) balancing the stranger's view of the same VIP.
    let mut theirs = SockLb::load()?;
    theirs.set_service(stranger, VIP, 80, Protocol::Tcp, &[lab.backend(2, 80)])?;
    let out = lab.tcp(&lab.stranger, &VIP.to_string(), 80).await?;
    ensure!(out.stdout.trim() == "b2", "stranger: {out:?}");
    ensure!(lab.spread(VIP, 80).await? == names(&[1], ""));

    // Dropping one instance detaches only its programs.
    let before = mine.entries()?;
    ensure!(before > 0);
    drop(mine);
    let out = lab.tcp(&lab.client, &VIP.to_string(), 80).await?;
    not_reached(&out, "client after its balancer was dropped")?;
    let out = lab.tcp(&lab.stranger, &VIP.to_string(), 80).await?;
    ensure!(
        out.stdout.trim() == "b2",
        "stranger after the other drop: {out:?}"
    );
    drop(theirs);
    let out = lab.tcp(&lab.stranger, &VIP.to_string(), 80).await?;
    not_reached(&out, "stranger after its balancer was dropped")?;
    Ok(())
}

/// Removes a test's pins when dropped, also when the test fails half-way.
struct PinsGuard(String);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        mesh_tests::overlay::remove_pins(&self.0);
    }
}

#[tokio::test]
async fn a_pinned_balancer_outlives_its_owner_and_is_taken_over() -> anyhow::Result<()> {
    require_privileged!();
    let lab = Lab::start().await?;
    let client = lab.cookie(&lab.client).await?;
    let prefix = format!(
        "{}{:x}-lb",
        mesh_tests::netns::TEST_PREFIX,
        std::process::id()
    );
    let _guard = PinsGuard(prefix.clone());
    let pins = Pins::for_prefix(&prefix);

    let mut first = SockLb::load_pinned(&pins)?;
    first.set_service(client, VIP, 80, Protocol::Tcp, &lab.all_backends(80))?;
    let entries = first.entries()?;
    // The process that loaded it goes (as a SIGKILLed meshd does): its links and maps stay.
    drop(first);
    let seen = lab.spread(VIP, 80).await?;
    ensure!(
        seen == names(&[1, 2, 3], ""),
        "with its loader gone: {seen:?}"
    );

    // The next load takes over the maps with their entries, and its programs replace the old.
    let mut second = SockLb::load_pinned(&pins)?;
    ensure!(
        second.entries()? == entries && second.sandboxes() == BTreeSet::from([client]),
        "taken over: {} entries (had {entries}), sandboxes {:?}",
        second.entries()?,
        second.sandboxes()
    );
    ensure!(lab.spread(VIP, 80).await? == names(&[1, 2, 3], ""));
    second.set_service(client, VIP, 80, Protocol::Tcp, &[lab.backend(2, 80)])?;
    let seen = lab.spread(VIP, 80).await?;
    ensure!(
        seen == names(&[2], ""),
        "changed after the take-over: {seen:?}"
    );
    let links = std::fs::read_dir(pins.dir())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("link_"))
        .count();
    ensure!(links == 3, "{links} pinned links, not one per program");

    // Unpinned (leaving the swarm), it goes with its owner.
    second.unpin()?;
    ensure!(
        !pins.dir().exists(),
        "{} is still there",
        pins.dir().display()
    );
    drop(second);
    let out = lab.tcp(&lab.client, &VIP.to_string(), 80).await?;
    not_reached(&out, "client after the unpinned balancer was dropped")?;
    Ok(())
}
