//! Part 2 of `bench lb`: how long programming 1 to 10,000 services takes through [`SockLb`] and
//! through iptables in kube-proxy's layout. With the most services in place, one more service is
//! added on its own; it is part 1's VIP, and new connections to it are measured there and then.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_agent::lb::ebpf::{Protocol, SockLb};

use super::load::{Mode, Report};
use super::rules::{Iptables, KubeRules, Service, SingleCommands};
use super::{BACKEND_PORTS, Lab, LbArgs, PORT, SIZES, VIP, VIP_PORTS, checked, service_vip};

/// Distinct backend sets (by backend port) in the second eBPF column: 100 Maglev tables of 509
/// slots fill about a fifth of the 2^18-slot map.
const DISTINCT_SETS: usize = 100;
const LARGEST: usize = SIZES[SIZES.len() - 1];

/// Setting up and tearing down one service count.
#[derive(Clone, Copy)]
struct Timed {
    add: Duration,
    remove: Duration,
}

struct Programmed {
    services: usize,
    ebpf_shared: Timed,
    ebpf_distinct: Duration,
    nft: Timed,
    legacy: Timed,
}

pub(super) struct Programming {
    sizes: Vec<Programmed>,
    /// One more `set_service` with the most services in place.
    ebpf_one_more: Duration,
    /// One more service with single iptables commands, per backend.
    iptables_one_more: Vec<(Iptables, SingleCommands)>,
    /// What starting a command under nsenter costs every iptables figure.
    nsenter: Duration,
    /// New connections to the VIP as the last of the most services, per path.
    pub crowd: Vec<(String, Report)>,
}

pub(super) async fn programming(lab: &Lab, args: &LbArgs) -> anyhow::Result<Programming> {
    let shared = lab.all_backends(PORT);
    let (mut firsts, mut crowd, mut iptables_one_more) = (Vec::new(), Vec::new(), Vec::new());
    let mut ebpf_one_more = None;
    for n in SIZES {
        eprintln!("part 2: {n} services through SockLb and iptables-nft");
        let services: Vec<Service> = (0..n)
            .map(|i| Service::new(service_vip(i), &shared))
            .collect();
        let last = (n == LARGEST).then_some(args);
        let (ebpf_shared, more) = program_ebpf(lab, &services, last).await?;
        if let Some((took, report)) = more {
            ebpf_one_more = Some(took);
            crowd.push((format!("(a) eBPF, VIP among {}", n + 1), report));
        }
        let distinct: Vec<Service> = (0..n)
            .map(|i| {
                let port = 8000 + (i % DISTINCT_SETS) as u16;
                Service::new(service_vip(i), &lab.all_backends(port))
            })
            .collect();
        let (ebpf_distinct, _) = program_ebpf(lab, &distinct, None).await?;
        let (nft, more) = program_iptables(lab, Iptables::Nft, &services, last).await?;
        if let Some((single, report)) = more {
            let label = format!("(b) {}, VIP's rule after {n}", Iptables::Nft.name());
            crowd.push((label, report));
            iptables_one_more.push((Iptables::Nft, single));
        }
        firsts.push((n, ebpf_shared, ebpf_distinct.add, nft));
    }
    // Last: an emptied legacy nat table stays registered, conntrack and all, until the namespace
    // goes, and would weigh on every case after it.
    let mut legacy = Vec::new();
    for n in SIZES {
        eprintln!("part 2: {n} services through iptables-legacy");
        let services: Vec<Service> = (0..n)
            .map(|i| Service::new(service_vip(i), &shared))
            .collect();
        let last = (n == LARGEST).then_some(args);
        let (timed, more) = program_iptables(lab, Iptables::Legacy, &services, last).await?;
        if let Some((single, report)) = more {
            let label = format!("(b) {}, VIP's rule after {n}", Iptables::Legacy.name());
            crowd.push((label, report));
            iptables_one_more.push((Iptables::Legacy, single));
        }
        legacy.push(timed);
    }
    let sizes = firsts
        .into_iter()
        .zip(legacy)
        .map(
            |((services, ebpf_shared, ebpf_distinct, nft), legacy)| Programmed {
                services,
                ebpf_shared,
                ebpf_distinct,
                nft,
                legacy,
            },
        )
        .collect();
    let mut nsenter = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        lab.run("true", &[], None, Duration::from_secs(10)).await?;
        nsenter = nsenter.min(start.elapsed());
    }
    Ok(Programming {
        sizes,
        ebpf_one_more: ebpf_one_more.context("the largest size never ran")?,
        iptables_one_more,
        nsenter,
        crowd,
    })
}

/// Sets every service in a fresh [`SockLb`], one `set_service` each, then removes them all with
/// `remove_sandbox`. With `last`, sets part 1's VIP on top first, times that, and measures new
/// connections to it.
async fn program_ebpf(
    lab: &Lab,
    services: &[Service],
    last: Option<&LbArgs>,
) -> anyhow::Result<(Timed, Option<(Duration, Report)>)> {
    let mut lb = SockLb::load()?;
    let start = Instant::now();
    for s in services {
        lb.set_service(lab.cookie, s.vip, PORT, Protocol::Tcp, &s.backends)?;
    }
    let add = start.elapsed();
    let more = match last {
        Some(args) => {
            let backends = lab.all_backends(PORT);
            let start = Instant::now();
            lb.set_service(lab.cookie, VIP, PORT, Protocol::Tcp, &backends)?;
            let took = start.elapsed();
            let vip = [SocketAddrV4::new(VIP, PORT)];
            eprintln!(
                "part 1: the VIP among {} services through SockLb",
                services.len() + 1
            );
            let report = lab.load(&vip, BACKEND_PORTS, Mode::Close, args).await?;
            Some((took, checked(report, Mode::Close, backends.len())?))
        }
        None => None,
    };
    let entries = lb.entries()?;
    ensure!(
        entries > services.len(),
        "{entries} map entries for {} services",
        services.len()
    );
    let start = Instant::now();
    lb.remove_sandbox(lab.cookie)?;
    let remove = start.elapsed();
    ensure!(lb.entries()? == 0, "{} entries left", lb.entries()?);
    Ok((Timed { add, remove }, more))
}

/// Restores every service in one `iptables-restore --noflush`, then empties the nat table. With
/// `last`, adds part 1's VIP on top first with single commands, and measures new connections to
/// it.
async fn program_iptables(
    lab: &Lab,
    iptables: Iptables,
    services: &[Service],
    last: Option<&LbArgs>,
) -> anyhow::Result<(Timed, Option<(SingleCommands, Report)>)> {
    let add = lab.restore(iptables, &KubeRules::new(services, 0)).await?;
    let measured = async {
        let Some(args) = last else {
            return Ok(None);
        };
        let backends = lab.all_backends(PORT);
        let vip = [Service::new(VIP, &backends)];
        let single = lab
            .add_singly(iptables, &KubeRules::new(&vip, services.len()))
            .await?;
        let n = services.len();
        eprintln!(
            "part 1: the VIP's rule after {n} through {}",
            iptables.name()
        );
        let report = lab
            .load(
                &[SocketAddrV4::new(VIP, PORT)],
                VIP_PORTS,
                Mode::Close,
                args,
            )
            .await?;
        anyhow::Ok(Some((
            single,
            checked(report, Mode::Close, backends.len())?,
        )))
    }
    .await;
    let remove = lab.clear_nat(iptables).await?;
    Ok((Timed { add, remove }, measured?))
}

impl Programming {
    pub fn print(&self) {
        println!();
        println!(
            "part 2: programming N ClusterIP services (TCP, port 80, 3 backends each) for the \
             client namespace. eBPF: one SockLb::set_service per service, all with the same 3 \
             backends (one shared Maglev table of 509 slots) or over {DISTINCT_SETS} distinct \
             backend sets (min(N, {DISTINCT_SETS}) tables); removal: one remove_sandbox. \
             iptables: kube-proxy's nat layout (per service 1 KUBE-SERVICES rule, a KUBE-SVC \
             chain picking one of 3 KUBE-SEP chains with -m statistic, each with a DNAT) in one \
             `iptables-restore --noflush`; removal: an `iptables-restore` of an empty nat table"
        );
        println!(
            "{:>9} {:>12} {:>14} {:>14} {:>16} | {:>11} {:>14} {:>16}",
            "services",
            "eBPF 1 set",
            "eBPF distinct",
            "iptables-nft",
            "iptables-legacy",
            "eBPF rm",
            "iptables-nft",
            "iptables-legacy"
        );
        for p in &self.sizes {
            println!(
                "{:>9} {:>12} {:>14} {:>14} {:>16} | {:>11} {:>14} {:>16}",
                p.services,
                shown(p.ebpf_shared.add),
                shown(p.ebpf_distinct),
                shown(p.nft.add),
                shown(p.legacy.add),
                shown(p.ebpf_shared.remove),
                shown(p.nft.remove),
                shown(p.legacy.remove)
            );
        }
        println!(
            "one more service (part 1's VIP) with {LARGEST} in place: eBPF one set_service {}",
            shown(self.ebpf_one_more)
        );
        for (iptables, single) in &self.iptables_one_more {
            println!(
                "  {}: its single `-t nat -A KUBE-SERVICES …` {}; the whole service as {} \
                 single -N/-A commands {}",
                iptables.name(),
                shown(single.append),
                single.commands,
                shown(single.all)
            );
        }
        println!(
            "every iptables figure includes starting it under nsenter: {} for `nsenter … true`",
            shown(self.nsenter)
        );
    }
}

fn shown(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}
