//! The IPVS service load balancer, balancing the way Docker Swarm does: IPVS runs in each task's
//! sandbox (its own network namespace); every VIP is a firewall-mark service, selected by a rule
//! in the sandbox's mangle table that marks what the sandbox sends to the VIP; the service's
//! running tasks are its masqueraded destinations on port 0, which keeps the port the client
//! asked for. One service thus balances every port of the VIP, TCP and UDP alike.
//!
//! Changing a VIP's backends adds and deletes only the destinations that changed, so connections
//! to the others are untouched. A VIP without backends keeps its service, and IPVS answers each
//! new connection with ICMP port unreachable: it is refused at once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use tracing::debug;

use super::fwmark::FwmarkPool;
use super::types::{Destination, Forward, Protocol, Service, ServiceFlags};
use super::{IpvsError, Reply, Request};
use crate::lb::{BackendError, LoadBalancer, Sandbox};

/// The scheduler of every VIP's service: round robin, as Swarm's.
pub const SCHEDULER: &str = "rr";

/// One sandbox's IPVS table and marking rules.
pub trait SandboxTable: Send {
    /// Runs one IPVS request in the sandbox's network namespace.
    fn execute(&mut self, request: &Request) -> Result<Vec<Reply>, IpvsError>;
    /// Marks with `mark` what the sandbox sends to `vip` (nothing to do if it is marked so).
    fn mark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError>;
    /// Stops marking with `mark` what the sandbox sends to `vip` (nothing to do if it is not).
    fn unmark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError>;
    /// Removes every marking rule mesh set in the sandbox.
    fn clear_marks(&mut self) -> Result<(), IpvsError>;
}

/// Opens sandboxes' tables.
pub trait SandboxTables: Send {
    type Table: SandboxTable;
    /// Opens the table of `sandbox`, with none of the marking rules an earlier run may have left.
    fn open(&mut self, sandbox: &Sandbox) -> Result<Self::Table, IpvsError>;
}

/// A VIP as programmed in one sandbox.
struct Vip {
    mark: u32,
    backends: BTreeSet<Ipv4Addr>,
}

struct Opened<T> {
    table: T,
    vips: BTreeMap<Ipv4Addr, Vip>,
}

/// Balances service VIPs with IPVS in each sandbox.
pub struct IpvsLb<S: SandboxTables> {
    tables: S,
    scheduler: String,
    marks: FwmarkPool,
    /// By netns cookie.
    sandboxes: HashMap<u64, Opened<S::Table>>,
}

impl<S: SandboxTables> IpvsLb<S> {
    /// Round-robin services, marks from [`FwmarkPool::default`].
    pub fn new(tables: S) -> Self {
        Self::with(tables, SCHEDULER, FwmarkPool::default())
    }

    /// Services with another scheduler ("mh", "wrr", …) or marks from another pool.
    pub fn with(tables: S, scheduler: &str, marks: FwmarkPool) -> Self {
        Self {
            tables,
            scheduler: scheduler.to_owned(),
            marks,
            sandboxes: HashMap::new(),
        }
    }

    /// The service of the VIP that holds `mark`. With Maglev hashing ("mh"), the source port is
    /// hashed too (each sandbox is a single client address) and a destination that is gone falls
    /// back to another.
    pub fn service(&self, mark: u32) -> Service {
        service_for(&self.scheduler, mark)
    }

    /// A task as a destination: masqueraded, port 0 (the port the client asked for), weight 1.
    pub fn destination(addr: Ipv4Addr) -> Destination {
        task_destination(addr)
    }

    /// The mark `vip` holds on this node, if some sandbox balances it.
    pub fn mark_of(&self, vip: Ipv4Addr) -> Option<u32> {
        self.marks.mark_of(vip)
    }

    fn set(
        &mut self,
        sandbox: &Sandbox,
        vip: Ipv4Addr,
        backends: &[Ipv4Addr],
    ) -> Result<(), IpvsError> {
        let opened = match self.sandboxes.entry(sandbox.cookie) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let mut table = self.tables.open(sandbox)?;
                // Only this node programs IPVS in its tasks' sandboxes: what is there is left from
                // an earlier run.
                table.execute(&Request::Flush)?;
                debug!(netns.cookie = sandbox.cookie, "IPVS sandbox opened");
                entry.insert(Opened {
                    table,
                    vips: BTreeMap::new(),
                })
            }
        };
        let wanted: BTreeSet<Ipv4Addr> = backends.iter().copied().collect();
        if let Some(current) = opened.vips.get_mut(&vip) {
            let service = service_for(&self.scheduler, current.mark);
            // Additions first, so that a task replaced by another leaves no moment without one.
            let added: Vec<Ipv4Addr> = wanted.difference(&current.backends).copied().collect();
            for addr in added {
                let request = Request::NewDest(service.clone(), task_destination(addr));
                tolerate(opened.table.execute(&request), libc::EEXIST)?;
                current.backends.insert(addr);
            }
            let gone: Vec<Ipv4Addr> = current.backends.difference(&wanted).copied().collect();
            for addr in gone {
                let request = Request::DelDest(service.clone(), task_destination(addr));
                tolerate(opened.table.execute(&request), libc::ENOENT)?;
                current.backends.remove(&addr);
            }
            debug!(netns.cookie = sandbox.cookie, %vip, backends = wanted.len(), "IPVS VIP changed");
            return Ok(());
        }
        let mark = self.marks.acquire(vip)?;
        let service = service_for(&self.scheduler, mark);
        if let Err(err) = create(&mut opened.table, &service, &wanted, vip, mark) {
            self.marks.release(vip);
            return Err(err);
        }
        debug!(netns.cookie = sandbox.cookie, %vip, mark, backends = wanted.len(), "IPVS VIP set");
        opened.vips.insert(
            vip,
            Vip {
                mark,
                backends: wanted,
            },
        );
        Ok(())
    }

    /// Unmarks the VIP, then deletes its service (with its destinations). The VIP is forgotten,
    /// and its mark freed, once its service is gone.
    fn remove(&mut self, sandbox: &Sandbox, vip: Ipv4Addr) -> Result<(), IpvsError> {
        let Some(opened) = self.sandboxes.get_mut(&sandbox.cookie) else {
            return Ok(());
        };
        let Some(mark) = opened.vips.get(&vip).map(|v| v.mark) else {
            return Ok(());
        };
        let mut errors = Vec::new();
        if let Err(err) = opened.table.unmark(vip, mark) {
            errors.push(err);
        }
        let request = Request::DelService(service_for(&self.scheduler, mark));
        match tolerate(opened.table.execute(&request), libc::ESRCH) {
            Ok(()) => {
                opened.vips.remove(&vip);
                self.marks.release(vip);
                debug!(netns.cookie = sandbox.cookie, %vip, "IPVS VIP removed");
            }
            Err(err) => errors.push(err),
        }
        collected(errors)
    }

    /// Removes the sandbox's marking rules and flushes its table; its marks are freed and the
    /// namespace let go whatever fails.
    fn remove_all(&mut self, sandbox: &Sandbox) -> Result<(), IpvsError> {
        let Some(mut opened) = self.sandboxes.remove(&sandbox.cookie) else {
            return Ok(());
        };
        let mut errors = Vec::new();
        if let Err(err) = opened.table.clear_marks() {
            errors.push(err);
        }
        if let Err(err) = opened.table.execute(&Request::Flush) {
            errors.push(err);
        }
        for vip in opened.vips.keys() {
            self.marks.release(*vip);
        }
        debug!(
            netns.cookie = sandbox.cookie,
            vips = opened.vips.len(),
            "IPVS sandbox removed"
        );
        collected(errors)
    }

    /// IPVS services and destinations programmed, over every sandbox.
    fn count(&self) -> usize {
        self.sandboxes
            .values()
            .flat_map(|o| o.vips.values())
            .map(|vip| 1 + vip.backends.len())
            .sum()
    }
}

fn service_for(scheduler: &str, mark: u32) -> Service {
    let mut service = Service::new(Protocol::Tcp, Ipv4Addr::UNSPECIFIED, 0, scheduler);
    service.fwmark = Some(mark);
    if scheduler == "mh" {
        service.flags = ServiceFlags::SCHED_1 | ServiceFlags::SCHED_2;
    }
    service
}

fn task_destination(addr: Ipv4Addr) -> Destination {
    Destination::new(addr, 0, Forward::Masq, 1)
}

/// Creates the service and its destinations, then the rule that sends the VIP's traffic to it;
/// on error deletes the service again.
fn create<T: SandboxTable>(
    table: &mut T,
    service: &Service,
    backends: &BTreeSet<Ipv4Addr>,
    vip: Ipv4Addr,
    mark: u32,
) -> Result<(), IpvsError> {
    table.execute(&Request::NewService(service.clone()))?;
    let filled = backends.iter().try_for_each(|addr| {
        let request = Request::NewDest(service.clone(), task_destination(*addr));
        table.execute(&request).map(drop)
    });
    let done = filled.and_then(|()| table.mark(vip, mark));
    if done.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = table.execute(&Request::DelService(service.clone()));
    }
    done
}

/// A request's outcome, with the kernel's `errno` meaning it was done already.
fn tolerate(result: Result<Vec<Reply>, IpvsError>, errno: i32) -> Result<(), IpvsError> {
    match result {
        Err(err) if err.errno() == Some(errno) => Ok(()),
        other => other.map(drop),
    }
}

fn collected(mut errors: Vec<IpvsError>) -> Result<(), IpvsError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(IpvsError::Teardown(errors)),
    }
}

impl<S: SandboxTables> LoadBalancer for IpvsLb<S> {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn set_vip(
        &mut self,
        sandbox: &Sandbox,
        vip: Ipv4Addr,
        backends: &[Ipv4Addr],
    ) -> Result<(), BackendError> {
        Ok(self.set(sandbox, vip, backends)?)
    }

    fn remove_vip(&mut self, sandbox: &Sandbox, vip: Ipv4Addr) -> Result<(), BackendError> {
        Ok(self.remove(sandbox, vip)?)
    }

    fn remove_sandbox(&mut self, sandbox: &Sandbox) -> Result<(), BackendError> {
        Ok(self.remove_all(sandbox)?)
    }

    fn entries(&self) -> Result<usize, BackendError> {
        Ok(self.count())
    }
}
