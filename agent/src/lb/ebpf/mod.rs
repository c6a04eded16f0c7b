//! The socket-level eBPF load balancer for service VIPs (`ebpf/sock_lb.bpf.c`).
//!
//! cgroup sock_addr programs rewrite `VIP:port` to a backend when a socket connects (TCP, connected
//! UDP) or sends without connecting (UDP), and give UDP replies the VIP back as their source. A
//! connection stays on its backend for its whole life, packets cost nothing extra after connect,
//! and the lookup is a few hash lookups whatever the number of services.
//!
//! Each [`SockLb`] is its own copy of the programs and maps, attached to the cgroup2 root beside
//! any other meshd's copy (cgroup links, which share a hook as `BPF_F_ALLOW_MULTI` does). It acts
//! only on sockets of the network namespaces it was given (by netns cookie, see
//! [`crate::netlink::netns_cookie`]); every other socket passes through unchanged.
//!
//! meshd loads it pinned ([`SockLb::load_pinned`], see [`Pins`]): the links and maps outlive the
//! process, so service VIPs keep balancing while meshd is down or restarting, and the next start
//! re-adopts the maps, reads back what they hold and attaches its programs in place of the old
//! ones. Loaded unpinned ([`SockLb::load`]), dropping it detaches the programs and frees the maps.

mod backend;
mod cgroup;
mod maps;
mod pin;
mod registry;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, MapData, MapError};
use aya::pin::PinError;
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError};
use aya::sys::SyscallError;
use aya::{Ebpf, EbpfLoader, Pod};
use tracing::{debug, info, warn};

use crate::netlink::NetlinkError;
use cgroup::cgroup2_root;
use maps::{
    Backend, BackendBytes, IPPROTO_TCP, IPPROTO_UDP, MAP_SPECS, REVNAT, RevNat, RevNatBytes,
    RevNatKeyBytes, SERVICES, SLOTS, Service, ServiceBytes, ServiceKey, ServiceKeyBytes, SlotKey,
    SlotKeyBytes,
};
pub use pin::Pins;
use registry::{Registry, TableRef};

/// The programs of the object, all `cgroup/*4` sock_addr hooks.
const PROGRAMS: [&str; 3] = ["lb_connect4", "lb_sendmsg4", "lb_recvmsg4"];

/// The transport a service is balanced for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("loading the socket load balancer's eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("no cgroup2 file system is mounted (none in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the BPF file system for pinning: {0}")]
    Bpffs(#[source] NetlinkError),
    #[error("pinning the link of {program} at {}: {source}", .path.display())]
    Pin {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("eBPF program {program}'s link: {source}")]
    Link {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("{}", join(.0))]
    Teardown(Vec<LbError>),
}

fn join(errors: &[LbError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} teardown step(s) failed: {}", all.len(), all.join("; "))
}

/// Every error of a teardown that kept going, as one.
fn collected(errors: Vec<LbError>) -> Result<(), LbError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LbError::Teardown(errors))
    }
}

fn map_error(map: &'static str) -> impl FnOnce(MapError) -> LbError {
    move |source| LbError::Map { map, source }
}

/// A map delete that treats a missing key as done.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<(), LbError> {
    match result {
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other.map_err(map_error(map)),
    }
}

/// The loaded, attached programs and their maps.
pub struct SockLb {
    /// Holds the programs and, unpinned, their cgroup links: dropping it detaches them. Declared
    /// first so that it drops before the maps.
    ebpf: Ebpf,
    /// The links, when pinned: they stay attached after this is dropped, until unpinned.
    links: Vec<PinnedLink>,
    pins: Option<Pins>,
    services: HashMap<MapData, ServiceKeyBytes, ServiceBytes>,
    slots: HashMap<MapData, SlotKeyBytes, BackendBytes>,
    revnat: HashMap<MapData, RevNatKeyBytes, RevNatBytes>,
    registry: Registry,
}

impl SockLb {
    /// Loads the programs and attaches them to the cgroup2 root (found in /proc/self/mountinfo),
    /// so that they see the sockets of every process on the machine. Nothing is pinned: dropping
    /// it detaches them.
    pub fn load() -> Result<Self, LbError> {
        Self::open(&host_cgroup2()?, None)
    }

    /// Loads the programs and attaches them to the cgroup2 directory `cgroup` (and so to the
    /// processes in its subtree), unpinned. On failure nothing stays attached.
    pub fn load_at(cgroup: &Path) -> Result<Self, LbError> {
        Self::open(cgroup, None)
    }

    /// Loads the programs with their links and maps pinned in `pins`, attached to the cgroup2
    /// root: what an earlier run pinned there is re-adopted (the maps with their entries, read
    /// back into the bookkeeping), and the new links replace the old ones, so that some copy of
    /// the programs is attached at every moment.
    pub fn load_pinned(pins: &Pins) -> Result<Self, LbError> {
        Self::open(&host_cgroup2()?, Some(pins))
    }

    /// [`SockLb::load_pinned`] on the cgroup2 directory `cgroup`.
    pub fn load_pinned_at(cgroup: &Path, pins: &Pins) -> Result<Self, LbError> {
        Self::open(cgroup, Some(pins))
    }

    fn open(cgroup: &Path, pins: Option<&Pins>) -> Result<Self, LbError> {
        let dir = File::open(cgroup).map_err(|source| LbError::Io {
            path: cgroup.to_owned(),
            source,
        })?;
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.bpf.o"));
        let mut loader = EbpfLoader::new();
        let mut adopted = false;
        if let Some(pins) = pins {
            pins.prepare()?;
            adopted = pins.exist();
            for spec in &MAP_SPECS {
                loader.map_pin_path(spec.name, pins.map(spec.name));
            }
        }
        let mut ebpf = loader.load(object).map_err(LbError::Object)?;
        let services = take_map(&mut ebpf, SERVICES)?;
        let slots = take_map(&mut ebpf, SLOTS)?;
        let revnat = take_map(&mut ebpf, REVNAT)?;
        // aya attaches with BPF_LINK_CREATE from Linux 5.7 on (the programs need 5.7 anyway, for
        // `bpf_get_netns_cookie`). A cgroup link always shares its hook the way BPF_F_ALLOW_MULTI
        // does, and the kernel refuses the flag itself on a link (EINVAL, aya issue #1078), so
        // `Single` (no flag) is what gives side-by-side attachment here.
        //
        // An error returns early and drops `ebpf` and the links taken so far, which detaches what
        // was attached already; links pinned by an earlier run stay as they were.
        let mut taken = Vec::new();
        for name in PROGRAMS {
            let failed = |source| LbError::Program {
                program: name,
                source,
            };
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(LbError::Missing(name))?
                .try_into()
                .map_err(failed)?;
            program.load().map_err(failed)?;
            let id = program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(failed)?;
            if pins.is_some() {
                let link = program.take_link(id).map_err(failed)?;
                let link = FdLink::try_from(link).map_err(|source| LbError::Link {
                    program: name,
                    source,
                })?;
                taken.push((name, link));
            }
        }
        let links = match pins {
            Some(pins) => pin_links(pins, taken)?,
            None => Vec::new(),
        };
        let mut lb = Self {
            ebpf,
            links,
            pins: pins.cloned(),
            services,
            slots,
            revnat,
            registry: Registry::default(),
        };
        lb.readopt();
        info!(cgroup = %cgroup.display(), pinned = pins.is_some(), adopted, sandboxes = lb.registry.sandboxes().len(), "socket load balancer attached");
        Ok(lb)
    }

    /// Reads back what the maps hold (an earlier run's entries, when pinned) into the
    /// bookkeeping, and deletes what is of no use: half-written tables and their services (set
    /// again from scratch by the next sync), and tables no service uses.
    fn readopt(&mut self) {
        let services: Vec<(ServiceKey, Service)> = self
            .services
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (ServiceKey::from_bytes(&k), Service::from_bytes(&v)))
            .collect();
        let slots: Vec<(SlotKey, SocketAddrV4)> = self
            .slots
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (SlotKey::from_bytes(&k), Backend::addr_of(&v)))
            .collect();
        if services.is_empty() && slots.is_empty() {
            return;
        }
        let rebuilt = Registry::rebuild(services, slots);
        let mut errors = Vec::new();
        for key in &rebuilt.broken {
            if let Err(err) = removed(self.services.remove(&key.to_bytes()), SERVICES) {
                errors.push(err);
            }
        }
        for (table_id, slot) in &rebuilt.unused_slots {
            let key = SlotKey {
                table_id: *table_id,
                slot: *slot,
            };
            if let Err(err) = removed(self.slots.remove(&key.to_bytes()), SLOTS) {
                errors.push(err);
            }
        }
        if !rebuilt.broken.is_empty() || !rebuilt.unused_slots.is_empty() {
            warn!(
                broken = rebuilt.broken.len(),
                unused_slots = rebuilt.unused_slots.len(),
                "deleted half-written entries an earlier run left"
            );
        }
        if let Err(err) = collected(errors) {
            warn!(error = %err, "cannot delete entries an earlier run left");
        }
        self.registry = rebuilt.registry;
    }

    /// Removes the pins (leaving the swarm): the programs detach and the maps go once this is
    /// dropped. Nothing to do when loaded unpinned.
    pub fn unpin(&mut self) -> Result<(), LbError> {
        match self.pins.take() {
            Some(pins) => pins.remove(),
            None => Ok(()),
        }
    }

    /// What is set for the sandbox with `netns_cookie`: each VIP's port-0 TCP service (as
    /// [`crate::lb::LoadBalancer::set_vip`] sets them) with its backends' addresses.
    pub fn vips_of(&self, netns_cookie: u64) -> BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> {
        self.registry
            .services_of(netns_cookie)
            .into_iter()
            .filter(|k| k.port() == 0 && k.proto == IPPROTO_TCP)
            .filter_map(|k| {
                let backends = self.registry.backends(&k)?;
                Some((k.vip(), backends.iter().map(|b| *b.ip()).collect()))
            })
            .collect()
    }

    /// The netns cookies of every sandbox with a service set.
    pub fn sandboxes(&self) -> BTreeSet<u64> {
        self.registry.sandboxes()
    }

    /// Sets (or replaces) one service as the sandbox with `netns_cookie` sees it: connections to
    /// `vip:port` over `proto` go to one of `backends`, chosen through a Maglev table. Port 0
    /// stands for every port of the VIP not set on its own; a backend port of 0 keeps the port the
    /// client asked for (both together are what a Swarm VIP does). No backends make `connect()`
    /// and `sendto()` fail at once with `EPERM`. If writing the new setting fails, the previous one
    /// stays in force; an error deleting the table it replaced comes after the new one took effect.
    pub fn set_service(
        &mut self,
        netns_cookie: u64,
        vip: Ipv4Addr,
        port: u16,
        proto: Protocol,
        backends: &[SocketAddrV4],
    ) -> Result<(), LbError> {
        let key = ServiceKey::new(netns_cookie, vip, port, proto.number());
        let Some(plan) = self.registry.plan_set(key, backends) else {
            return Ok(());
        };
        if let Some((table, slots)) = &plan.new_table {
            self.write_table(*table, slots)?;
        }
        let written = self
            .services
            .insert(key.to_bytes(), plan.service.to_bytes(), 0)
            .map_err(map_error(SERVICES));
        if let Err(err) = written {
            if let Some((table, _)) = &plan.new_table {
                // Best effort: the error that matters is the one returned.
                let _ = self.delete_table(*table);
            }
            return Err(err);
        }
        let count = plan.backends.len();
        let table = plan.service.table_id;
        let released = self.registry.commit_set(plan);
        debug!(netns.cookie = netns_cookie, %vip, port, %proto, backends = count, table, "service set");
        released.map_or(Ok(()), |old| self.delete_table(old))
    }

    /// Removes one service of one sandbox (nothing to do if it is not set).
    pub fn remove_service(
        &mut self,
        netns_cookie: u64,
        vip: Ipv4Addr,
        port: u16,
        proto: Protocol,
    ) -> Result<(), LbError> {
        let key = ServiceKey::new(netns_cookie, vip, port, proto.number());
        let mut errors = Vec::new();
        self.remove_key(&key, &mut errors)?;
        if proto == Protocol::Udp {
            self.delete_revnat(netns_cookie, Some(&key), &mut errors);
        }
        collected(errors)
    }

    /// Removes every service of a sandbox (its task is gone), trying every step and returning all
    /// the errors together.
    pub fn remove_sandbox(&mut self, netns_cookie: u64) -> Result<(), LbError> {
        let mut errors = Vec::new();
        for key in self.registry.services_of(netns_cookie) {
            if let Err(err) = self.remove_key(&key, &mut errors) {
                errors.push(err);
            }
        }
        self.delete_revnat(netns_cookie, None, &mut errors);
        collected(errors)
    }

    /// The number of entries in all the maps: services, table slots and UDP reverse entries.
    pub fn entries(&self) -> Result<usize, LbError> {
        Ok(count(&self.services, SERVICES)?
            + count(&self.slots, SLOTS)?
            + count(&self.revnat, REVNAT)?)
    }

    /// Deletes the service entry, then the table it leaves unused. Fails (keeping the service)
    /// only when the service entry cannot be deleted; slot errors go to `errors`.
    fn remove_key(&mut self, key: &ServiceKey, errors: &mut Vec<LbError>) -> Result<(), LbError> {
        if !self.registry.contains(key) {
            return Ok(());
        }
        removed(self.services.remove(&key.to_bytes()), SERVICES)?;
        if let Some(table) = self.registry.remove(key)
            && let Err(err) = self.delete_table(table)
        {
            errors.push(err);
        }
        Ok(())
    }

    /// Fills a table's slots; on error deletes what it wrote.
    fn write_table(&mut self, table: TableRef, slots: &[SocketAddrV4]) -> Result<(), LbError> {
        for (slot, backend) in (0u32..).zip(slots) {
            let key = SlotKey {
                table_id: table.id,
                slot,
            };
            let value = Backend::new(*backend).to_bytes();
            if let Err(source) = self.slots.insert(key.to_bytes(), value, 0) {
                let _ = self.delete_slots(table.id, slot);
                return Err(LbError::Map { map: SLOTS, source });
            }
        }
        Ok(())
    }

    fn delete_table(&mut self, table: TableRef) -> Result<(), LbError> {
        self.delete_slots(table.id, table.size.get())
    }

    /// Deletes slots `0..count` of a table, trying every one.
    fn delete_slots(&mut self, table_id: u32, count: u32) -> Result<(), LbError> {
        let errors = (0..count)
            .filter_map(|slot| {
                let key = SlotKey { table_id, slot }.to_bytes();
                removed(self.slots.remove(&key), SLOTS).err()
            })
            .collect();
        collected(errors)
    }

    /// Deletes the UDP reverse entries of a sandbox, or of one of its services.
    fn delete_revnat(
        &mut self,
        netns_cookie: u64,
        service: Option<&ServiceKey>,
        errors: &mut Vec<LbError>,
    ) {
        let mut stale = Vec::new();
        for entry in self.revnat.iter() {
            match entry {
                Ok((key, value)) => {
                    if RevNat::from_bytes(&value).belongs_to(netns_cookie, service) {
                        stale.push(key);
                    }
                }
                Err(source) => {
                    errors.push(LbError::Map {
                        map: REVNAT,
                        source,
                    });
                    break;
                }
            }
        }
        for key in stale {
            if let Err(err) = removed(self.revnat.remove(&key), REVNAT) {
                errors.push(err);
            }
        }
    }
}

// The daemon keeps it in its async tasks, behind a lock.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SockLb>();
};

impl fmt::Debug for SockLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockLb")
            .field("programs", &self.ebpf.programs().count())
            .field("links", &self.links.len())
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

/// The cgroup2 root of this mount namespace (a copy of the host's: cgroup mounts are shared).
fn host_cgroup2() -> Result<PathBuf, LbError> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let mountinfo = fs::read_to_string(MOUNTINFO).map_err(|source| LbError::Io {
        path: MOUNTINFO.into(),
        source,
    })?;
    cgroup2_root(&mountinfo).ok_or(LbError::NoCgroup2)
}

/// Pins each new link under a temporary name, then moves it over the old one's pin: the old link
/// detaches as its pin goes, after the new one is attached. If pinning fails, the new links
/// detach (they are dropped) and the old ones stay.
fn pin_links(pins: &Pins, links: Vec<(&'static str, FdLink)>) -> Result<Vec<PinnedLink>, LbError> {
    let mut pinned = Vec::new();
    for (name, link) in links {
        let path = pins.new_link(name);
        let _ = fs::remove_file(&path);
        match link.pin(&path) {
            Ok(link) => pinned.push((name, link)),
            Err(source) => {
                for (name, _) in &pinned {
                    let _ = fs::remove_file(pins.new_link(name));
                }
                return Err(LbError::Pin {
                    program: name,
                    path,
                    source,
                });
            }
        }
    }
    let mut links = Vec::new();
    for (name, link) in pinned {
        let (from, to) = (pins.new_link(name), pins.link(name));
        fs::rename(&from, &to).map_err(|source| LbError::Io {
            path: to.clone(),
            source,
        })?;
        // The pin's path moved: the handle is re-opened from where it is now.
        drop(link);
        links.push(PinnedLink::from_pin(&to).map_err(|source| LbError::Link {
            program: name,
            source,
        })?);
    }
    Ok(links)
}

fn take_map<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, LbError> {
    let map = ebpf.take_map(name).ok_or(LbError::Missing(name))?;
    HashMap::try_from(map).map_err(map_error(name))
}

fn count<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<usize, LbError> {
    map.keys()
        .try_fold(0, |n, key| key.map(|_| n + 1).map_err(map_error(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_errors_are_reported_together() {
        assert!(collected(Vec::new()).is_ok());
        let err = collected(vec![LbError::Missing("a"), LbError::Missing("b")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 teardown step(s) failed: eBPF object has no a; eBPF object has no b"
        );
    }
}
