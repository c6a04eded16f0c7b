//! The codec against the kernel: every request mesh sends, each answer read back through the
//! codec's own dumps and through `/proc/net/ip_vs`, and the kernel's refusals.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;

use mesh_agent::lb::ipvs::{
    Destination, Forward, IpvsSocket, Protocol, Reply, Request, Service, ServiceFlags,
};

use crate::Report;

type Outcome = Result<(), String>;

pub fn run(report: &mut Report) {
    let mut socket = match IpvsSocket::open() {
        Ok(socket) => {
            println!("  IPVS family id {}", socket.family_id());
            report.check("the kernel resolves the IPVS family", Ok::<(), String>(()));
            socket
        }
        Err(err) => {
            report.check("the kernel resolves the IPVS family", Err(err));
            return;
        }
    };
    let s = &mut socket;
    let tcp = Service::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 1), 80, "rr");
    let mut udp = Service::new(Protocol::Udp, Ipv4Addr::new(10, 0, 0, 9), 53, "rr");
    udp.flags = ServiceFlags::PERSISTENT;
    udp.timeout = 300;
    udp.netmask = Ipv4Addr::new(255, 255, 255, 0);
    let masq = Destination::new(Ipv4Addr::new(10, 0, 1, 2), 8080, Forward::Masq, 1);
    let mut routed = Destination::new(Ipv4Addr::new(10, 0, 1, 3), 8080, Forward::Route, 2);
    routed.upper_threshold = 100;
    routed.lower_threshold = 10;
    let mut fwmark = Service::new(Protocol::Tcp, Ipv4Addr::UNSPECIFIED, 0, "rr");
    fwmark.fwmark = Some(0x4d45);
    let keep_port = Destination::new(Ipv4Addr::new(10, 0, 1, 5), 0, Forward::Masq, 1);
    // /proc/net/ip_vs shows the persistence timeout in jiffies; the xtask passes the kernel's
    // CONFIG_HZ on its command line, which the kernel hands to init as MESH_HZ.
    let hz: Option<u32> = std::env::var("MESH_HZ").ok().and_then(|v| v.parse().ok());
    let udp_line = format!(
        "UDP 10.0.0.9:53 rr persistent {} FFFFFF00",
        hz.map_or("?".into(), |hz| (300 * hz).to_string())
    );
    let udp_line = udp_line.as_str();

    report.check("GET_INFO: version 1.2.1 and a connection table", info(s));
    report.check("FLUSH leaves no service", flush(s));
    report.check("NEW_SERVICE: TCP and persistent UDP read back equal", {
        add_services(s, &[&tcp, &udp])
    });
    report.check("NEW_DEST: masqueraded and routed read back equal", {
        add_dests(s, &tcp, &[&masq, &routed])
    });
    report.check(
        "/proc/net/ip_vs shows the services and destinations",
        proc_shows(&[
            (
                "TCP 10.0.0.1:80 rr",
                &["-> 10.0.1.2:8080 Masq 1", "-> 10.0.1.3:8080 Route 2"],
            ),
            (udp_line, &[]),
        ]),
    );
    report.check("SET_DEST changes a weight", set_dest(s, &tcp, &masq));
    report.check("SET_SERVICE changes the scheduler to mh", {
        set_service(s, &tcp, &udp)
    });
    report.check(
        "refusals carry the kernel's errno",
        refusals(s, &tcp, &masq),
    );
    report.check("a fwmark service with a port-0 destination", {
        add_services(s, &[&fwmark])
            .and_then(|()| add_dests(s, &fwmark, &[&keep_port]))
            .and_then(|()| {
                proc_shows(&[
                    (
                        "TCP 10.0.0.1:80 mh",
                        &["-> 10.0.1.2:8080 Masq 5", "-> 10.0.1.3:8080 Route 2"],
                    ),
                    (udp_line, &[]),
                    ("FWM 00004D45 rr", &["-> 10.0.1.5:0 Masq 1"]),
                ])
            })
    });
    report.check("DEL_DEST and DEL_SERVICE remove exactly theirs", {
        delete(s, &tcp, &routed, &[&udp, &fwmark])
    });
    report.check("a dump of 300 services spans several datagrams", many(s));
    report.check("FLUSH empties the table and /proc/net/ip_vs", {
        flush(s).and_then(|()| proc_shows(&[]))
    });
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn info(s: &mut IpvsSocket) -> Outcome {
    match s.execute(&Request::GetInfo).map_err(err)?.as_slice() {
        [Reply::Info(info)] if info.version() == "1.2.1" && info.conn_table_size > 0 => {
            println!(
                "  IPVS {} (connection table {})",
                info.version(),
                info.conn_table_size
            );
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Every service, in a stable order.
fn services(s: &mut IpvsSocket) -> Result<Vec<Service>, String> {
    let mut all: Vec<Service> = s
        .execute(&Request::GetServices)
        .map_err(err)?
        .into_iter()
        .filter_map(|r| match r {
            Reply::Service(svc) => Some(svc),
            _ => None,
        })
        .collect();
    all.sort_by_key(|s| (s.fwmark, s.addr, s.port));
    Ok(all)
}

/// A service's destinations, in address order.
pub(crate) fn dests(s: &mut IpvsSocket, svc: &Service) -> Result<Vec<Destination>, String> {
    let mut all: Vec<Destination> = s
        .execute(&Request::GetDests(svc.clone()))
        .map_err(err)?
        .into_iter()
        .filter_map(|r| match r {
            Reply::Destination { dest, .. } => Some(dest),
            _ => None,
        })
        .collect();
    all.sort_by_key(|d| (d.addr, d.port));
    Ok(all)
}

fn same<T: std::fmt::Debug + PartialEq>(what: &str, got: &[T], want: &[&T]) -> Outcome {
    let want: Vec<&T> = want.to_vec();
    let got: Vec<&T> = got.iter().collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: read back {got:?}, expected {want:?}"))
    }
}

fn flush(s: &mut IpvsSocket) -> Outcome {
    s.execute(&Request::Flush).map_err(err)?;
    same("services", &services(s)?, &[])
}

fn add_services(s: &mut IpvsSocket, svcs: &[&Service]) -> Outcome {
    for svc in svcs {
        s.execute(&Request::NewService((*svc).clone()))
            .map_err(err)?;
    }
    let got = services(s)?;
    for svc in svcs {
        if !got.contains(svc) {
            return Err(format!("{svc:?} not among {got:?}"));
        }
    }
    Ok(())
}

fn add_dests(s: &mut IpvsSocket, svc: &Service, add: &[&Destination]) -> Outcome {
    for dest in add {
        s.execute(&Request::NewDest(svc.clone(), (*dest).clone()))
            .map_err(err)?;
    }
    let mut want = add.to_vec();
    want.sort_by_key(|d| (d.addr, d.port));
    same("destinations", &dests(s, svc)?, &want)
}

fn set_dest(s: &mut IpvsSocket, svc: &Service, dest: &Destination) -> Outcome {
    let mut heavier = dest.clone();
    heavier.weight = 5;
    s.execute(&Request::SetDest(svc.clone(), heavier.clone()))
        .map_err(err)?;
    let got = dests(s, svc)?;
    match got.iter().find(|d| d.addr == dest.addr) {
        Some(d) if *d == heavier => Ok(()),
        other => Err(format!("read back {other:?}, expected {heavier:?}")),
    }
}

fn set_service(s: &mut IpvsSocket, svc: &Service, other: &Service) -> Outcome {
    let mut mh = svc.clone();
    mh.scheduler = "mh".into();
    mh.flags = ServiceFlags::SCHED_1 | ServiceFlags::SCHED_2;
    s.execute(&Request::SetService(mh.clone())).map_err(err)?;
    same("services", &services(s)?, &[&mh, other])
}

fn refusals(s: &mut IpvsSocket, svc: &Service, dest: &Destination) -> Outcome {
    let missing_svc = Service::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 99), 80, "rr");
    let missing_dest = Destination::new(Ipv4Addr::new(10, 0, 1, 99), 8080, Forward::Masq, 1);
    let mut unknown_sched = Service::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 50), 80, "rr");
    unknown_sched.scheduler = "nosuch".into();
    let cases = [
        (Request::NewService(svc.clone()), libc::EEXIST, "EEXIST"),
        (
            Request::NewDest(svc.clone(), dest.clone()),
            libc::EEXIST,
            "EEXIST",
        ),
        (
            Request::DelService(missing_svc.clone()),
            libc::ESRCH,
            "ESRCH",
        ),
        (
            Request::NewDest(missing_svc, dest.clone()),
            libc::ESRCH,
            "ESRCH",
        ),
        (
            Request::DelDest(svc.clone(), missing_dest),
            libc::ENOENT,
            "ENOENT",
        ),
        (Request::NewService(unknown_sched), libc::ENOENT, "ENOENT"),
    ];
    for (request, errno, name) in cases {
        match s.execute(&request) {
            Err(e) if e.errno() == Some(errno) => {}
            other => {
                return Err(format!(
                    "{}: got {other:?}, expected {name}",
                    request.name()
                ));
            }
        }
    }
    // A refusal leaves the socket in step: the next request is answered normally.
    services(s).map(drop)
}

fn delete(s: &mut IpvsSocket, svc: &Service, dest: &Destination, rest: &[&Service]) -> Outcome {
    let before = dests(s, svc)?;
    s.execute(&Request::DelDest(svc.clone(), dest.clone()))
        .map_err(err)?;
    let left: Vec<&Destination> = before.iter().filter(|d| d.addr != dest.addr).collect();
    same("destinations", &dests(s, svc)?, &left)?;
    s.execute(&Request::DelService(svc.clone())).map_err(err)?;
    let mut rest = rest.to_vec();
    rest.sort_by_key(|s| (s.fwmark, s.addr, s.port));
    same("services", &services(s)?, &rest)
}

fn many(s: &mut IpvsSocket) -> Outcome {
    s.execute(&Request::Flush).map_err(err)?;
    for i in 0..300u16 {
        let addr = Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1);
        s.execute(&Request::NewService(Service::new(
            Protocol::Tcp,
            addr,
            80,
            "rr",
        )))
        .map_err(err)?;
    }
    let got = services(s)?;
    if got.len() == 300 {
        Ok(())
    } else {
        Err(format!("{} services read back", got.len()))
    }
}

/// `/proc/net/ip_vs` of the calling thread's namespace, as service line → destination lines,
/// addresses in dotted form and counters left out.
pub fn proc_table() -> Result<BTreeMap<String, Vec<String>>, String> {
    let text = fs::read_to_string("/proc/thread-self/net/ip_vs").map_err(err)?;
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().skip(3) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["->", addr, forward, weight, ..] => {
                let key: &String = current.as_ref().ok_or("destination before service")?;
                let dest = format!("-> {} {forward} {weight}", hex_addr(addr)?);
                table.get_mut(key).ok_or("lost service")?.push(dest);
            }
            ["FWM", mark, rest @ ..] => {
                let key = format!("FWM {mark} {}", rest.join(" "));
                table.insert(key.clone(), Vec::new());
                current = Some(key);
            }
            [proto, addr, rest @ ..] => {
                let key = format!("{proto} {} {}", hex_addr(addr)?, rest.join(" "));
                table.insert(key.clone(), Vec::new());
                current = Some(key);
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    for dests in table.values_mut() {
        dests.sort();
    }
    Ok(table)
}

/// `0A000102:1F90` → `10.0.1.2:8080`.
fn hex_addr(text: &str) -> Result<String, String> {
    let bad = || format!("bad address {text:?}");
    let (addr, port) = text.split_once(':').ok_or_else(bad)?;
    let addr = u32::from_str_radix(addr, 16).map_err(|_| bad())?;
    let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
    Ok(format!("{}:{port}", Ipv4Addr::from(addr)))
}

pub fn proc_shows(want: &[(&str, &[&str])]) -> Outcome {
    let got = proc_table()?;
    let want: BTreeMap<String, Vec<String>> = want
        .iter()
        .map(|(svc, dests)| {
            let mut dests: Vec<String> = dests.iter().map(|d| (*d).to_owned()).collect();
            dests.sort();
            ((*svc).to_owned(), dests)
        })
        .collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("/proc/net/ip_vs shows {got:?}, expected {want:?}"))
    }
}
