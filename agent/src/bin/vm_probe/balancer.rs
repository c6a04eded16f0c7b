//! mesh's IPVS load balancer as meshd runs it — [`IpvsLb`] over the real [`NetnsTables`], so
//! IPVS and iptables run inside a sandbox namespace — checked through a second IPVS socket in the
//! sandbox, its iptables rules and its `/proc/net/ip_vs`, and by traffic through the VIP.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_agent::lb::ipvs::{IpvsLb, IpvsSocket, MARK_CHAIN, NetnsTables, Reply, Request};
use mesh_agent::lb::{LoadBalancer, Sandbox};
use mesh_agent::netlink::{Netns, run_in_netns};

use crate::Report;
use crate::codec::{dests, proc_table};
use crate::topology::{self, BACKENDS, TCP_PORTS, UDP_PORT, VIP, VIP2};

type Outcome = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn backend(name: &str) -> Ipv4Addr {
    BACKENDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, addr)| *addr)
        .expect("a known backend")
}

pub async fn run(report: &mut Report) {
    let topology = match topology::build().await {
        Ok(topology) => topology,
        Err(e) => return report.check("a sandbox and three backends on a bridge", Err(e)),
    };
    report.check("the backends' TCP and UDP servers", topology::serve());
    let sandbox = match Sandbox::of(&topology.sandbox).await {
        Ok(sandbox) => sandbox,
        Err(e) => return report.check("the sandbox's netns cookie", Err(e)),
    };
    let observer = run_in_netns(&topology.sandbox, "observe", IpvsSocket::open);
    let mut observer = match observer.map_err(err).and_then(|s| s.map_err(err)) {
        Ok(observer) => observer,
        Err(e) => return report.check("an IPVS socket in the sandbox", Err(e)),
    };
    let mut probe = Probe {
        lb: IpvsLb::new(NetnsTables),
        sandbox,
        observer: &mut observer,
    };
    let ns = topology.sandbox.clone();
    let (b5, b6, b7) = (backend("b5"), backend("b6"), backend("b7"));

    report.check(
        "set_vip: a fwmark service, port-0 masqueraded tasks, a mark rule",
        probe.set(VIP, &[b5, b6], 3),
    );
    report.check("the VIP lives in the sandbox's IPVS, not the host's", {
        host_is_empty()
            .and_then(|()| probe.proc_shows(&["-> 10.0.1.5:0 Masq 1", "-> 10.0.1.6:0 Masq 1"]))
    });
    for port in TCP_PORTS {
        report.check(
            &format!("TCP to VIP:{port} alternates between b5 and b6"),
            spread(&ns, port, Proto::Tcp, &["b5", "b6"]),
        );
    }
    report.check("UDP to the VIP is answered from the VIP, by b5 and b6", {
        spread(&ns, UDP_PORT, Proto::Udp, &["b5", "b6"])
    });
    report.check(
        "re-programming b5,b6 to b6,b7 adds b7 and deletes b5 only",
        probe.set(VIP, &[b6, b7], 3),
    );
    report.check("TCP to the VIP now alternates between b6 and b7", {
        spread(&ns, TCP_PORTS[0], Proto::Tcp, &["b6", "b7"])
    });
    report.check(
        "an emptied VIP keeps its service and mark",
        probe.set(VIP, &[], 1),
    );
    report.check("TCP to an emptied VIP is refused at once", refused(&ns));
    report.check("remove_vip deletes the service and the mark rule", {
        probe.remove(VIP)
    });
    report.check("remove_sandbox flushes IPVS and removes the mark chain", {
        probe
            .set(VIP, &[b5], 2)
            .and_then(|()| probe.set(VIP2, &[b6, b7], 5))
            .and_then(|()| probe.remove_all(&ns))
    });
}

struct Probe<'a> {
    lb: IpvsLb<NetnsTables>,
    sandbox: Sandbox,
    observer: &'a mut IpvsSocket,
}

impl Probe<'_> {
    /// Sets `vip` to `backends`, then checks the sandbox's IPVS table and mark rules hold exactly
    /// what the load balancer says, `entries` in all.
    fn set(&mut self, vip: Ipv4Addr, backends: &[Ipv4Addr], entries: usize) -> Outcome {
        self.lb.set_vip(&self.sandbox, vip, backends).map_err(err)?;
        self.expect(entries)
    }

    fn remove(&mut self, vip: Ipv4Addr) -> Outcome {
        self.lb.remove_vip(&self.sandbox, vip).map_err(err)?;
        if self.lb.mark_of(vip).is_some() {
            return Err("the mark is still held".into());
        }
        self.expect(0)
    }

    fn remove_all(&mut self, ns: &Netns) -> Outcome {
        self.lb.remove_sandbox(&self.sandbox).map_err(err)?;
        let left = table(self.observer)?;
        if !left.is_empty() {
            return Err(format!("IPVS still holds {left:?}"));
        }
        let rules = iptables(ns, &["-S"])?;
        if rules.iter().any(|r| r.contains(MARK_CHAIN)) {
            return Err(format!("mangle still holds {rules:?}"));
        }
        Ok(())
    }

    /// The sandbox's services (by mark) and destinations against the load balancer's view.
    fn expect(&mut self, entries: usize) -> Outcome {
        let got = table(self.observer)?;
        let mut want = BTreeMap::new();
        let mut marks = Vec::new();
        for vip in [VIP, VIP2] {
            let Some(mark) = self.lb.mark_of(vip) else {
                continue;
            };
            marks.push(format!(
                "-A {MARK_CHAIN} -d {vip}/32 -j MARK --set-xmark {mark:#x}/0xffffffff"
            ));
            want.insert(mark, (self.lb.service(mark), Vec::new()));
        }
        for (mark, (_, dests)) in &got {
            let listed = want
                .get_mut(mark)
                .ok_or(format!("unknown mark {mark:#x}"))?;
            listed.1.clone_from(dests);
        }
        if got.len() != want.len() || got.iter().any(|(m, (svc, _))| want[m].0 != *svc) {
            return Err(format!("services {got:?}, expected {want:?}"));
        }
        for (svc, dests) in got.values() {
            if dests
                .iter()
                .any(|d| *d != IpvsLb::<NetnsTables>::destination(d.addr))
            {
                return Err(format!("destinations of {svc:?}: {dests:?}"));
            }
        }
        let count: usize = got.values().map(|(_, d)| 1 + d.len()).sum();
        let counted = self.lb.entries().map_err(err)?;
        if (count, counted) != (entries, entries) {
            return Err(format!(
                "{count} entries in IPVS, {counted} counted, {entries} expected"
            ));
        }
        let rules = iptables(&self.sandbox.netns, &["-S", MARK_CHAIN])?;
        let mut rules: Vec<String> = rules.into_iter().filter(|r| r.starts_with("-A")).collect();
        rules.sort();
        marks.sort();
        if rules != marks {
            return Err(format!("mark rules {rules:?}, expected {marks:?}"));
        }
        let output = iptables(&self.sandbox.netns, &["-S", "OUTPUT"])?;
        if !output.contains(&format!("-A OUTPUT -j {MARK_CHAIN}")) {
            return Err(format!("OUTPUT does not jump to {MARK_CHAIN}: {output:?}"));
        }
        Ok(())
    }

    /// The sandbox's `/proc/net/ip_vs` lists the VIP's service with these destinations.
    fn proc_shows(&self, dests: &[&str]) -> Outcome {
        let mark = self.lb.mark_of(VIP).ok_or("no mark")?;
        let got = run_in_netns(&self.sandbox.netns, "read /proc", proc_table).map_err(err)??;
        let want: BTreeMap<String, Vec<String>> = [(
            format!("FWM {mark:08X} rr"),
            dests.iter().map(|d| (*d).to_owned()).collect(),
        )]
        .into();
        if got == want {
            Ok(())
        } else {
            Err(format!("/proc/net/ip_vs shows {got:?}, expected {want:?}"))
        }
    }
}

type Table = BTreeMap<
    u32,
    (
        mesh_agent::lb::ipvs::Service,
        Vec<mesh_agent::lb::ipvs::Destination>,
    ),
>;

/// Every fwmark service of the socket's namespace with its destinations.
fn table(socket: &mut IpvsSocket) -> Result<Table, String> {
    let mut table = Table::new();
    for reply in socket.execute(&Request::GetServices).map_err(err)? {
        let Reply::Service(svc) = reply else { continue };
        let mark = svc
            .fwmark
            .ok_or(format!("a service without a mark: {svc:?}"))?;
        let dests = dests(socket, &svc)?;
        table.insert(mark, (svc, dests));
    }
    Ok(table)
}

fn host_is_empty() -> Outcome {
    let mut host = IpvsSocket::open().map_err(err)?;
    let left = table(&mut host)?;
    let services = host.execute(&Request::GetServices).map_err(err)?;
    if left.is_empty() && services.is_empty() {
        Ok(())
    } else {
        Err(format!("the host's IPVS holds {services:?}"))
    }
}

/// `iptables -t mangle ARGS` in `ns`: its output lines.
fn iptables(ns: &Netns, args: &[&str]) -> Result<Vec<String>, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = run_in_netns(ns, "iptables", move || {
        Command::new("iptables")
            .args(["-w", "-t", "mangle"])
            .args(&args)
            .output()
    })
    .map_err(err)?
    .map_err(err)?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[derive(Clone, Copy)]
enum Proto {
    Tcp,
    Udp,
}

/// Four requests to the VIP on `port`: round robin answers from each of `names` twice.
fn spread(ns: &Netns, port: u16, proto: Proto, names: &[&str]) -> Outcome {
    let to = SocketAddrV4::new(VIP, port);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..2 * names.len() {
        let answer = match proto {
            Proto::Tcp => topology::tcp_ask(ns, to)?,
            Proto::Udp => topology::udp_ask(ns, to)?,
        };
        *answers.entry(answer).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = names.iter().map(|n| ((*n).to_owned(), 2)).collect();
    println!("  {to}: {answers:?}");
    if answers == want {
        Ok(())
    } else {
        Err(format!("answers {answers:?}, expected {want:?}"))
    }
}

/// A connection to the emptied VIP fails with "connection refused" well before a timeout.
fn refused(ns: &Netns) -> Outcome {
    let started = Instant::now();
    let outcome = topology::tcp_ask(ns, SocketAddrV4::new(VIP, TCP_PORTS[0]));
    let took = started.elapsed();
    println!("  empty VIP: {outcome:?} after {took:.1?}");
    match outcome {
        Err(e) if e.contains("refused") && took < Duration::from_secs(1) => Ok(()),
        other => Err(format!("{other:?} after {took:.1?}")),
    }
}
