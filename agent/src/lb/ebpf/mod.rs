//! The socket-level eBPF load balancer for service VIPs (`ebpf/sock_lb.bpf.c`).
//!
//! cgroup sock_addr programs rewrite `VIP:port` to a backend when a socket connects (TCP, connected
//! UDP) or sends without connecting (UDP), and give UDP replies the VIP back as their source. A
//! connection stays on its backend for its whole life, packets cost nothing extra after connect,
//! and the lookup is a few hash lookups whatever the number of services.
//!
//! Each [`SockLb`] is its own copy of the programs and maps, attached to the cgroup2 root beside
//! any other meshd's copy (cgroup links, which share a hook as `BPF_F_ALLOW_MULTI` does) and never
//! pinned. It acts only on sockets of the
//! network namespaces it was given (by netns cookie, see [`crate::netlink::netns_cookie`]); every
//! other socket passes through unchanged. Dropping it detaches the programs and frees the maps.

mod backend;
mod cgroup;
mod maps;
mod registry;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError};
use aya::sys::SyscallError;
use aya::{Ebpf, Pod};
use tracing::{debug, info};

use cgroup::cgroup2_root;
use maps::{
    Backend, BackendBytes, IPPROTO_TCP, IPPROTO_UDP, REVNAT, RevNat, RevNatBytes, RevNatKeyBytes,
    SERVICES, SLOTS, ServiceBytes, ServiceKey, ServiceKeyBytes, SlotKey, SlotKeyBytes,
};
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
    /// Holds the programs and their cgroup links: dropping it detaches them. Declared first so
    /// that it drops before the maps.
    ebpf: Ebpf,
    services: HashMap<MapData, ServiceKeyBytes, ServiceBytes>,
    slots: HashMap<MapData, SlotKeyBytes, BackendBytes>,
    revnat: HashMap<MapData, RevNatKeyBytes, RevNatBytes>,
    registry: Registry,
}

impl SockLb {
    /// Loads the programs and attaches them to the cgroup2 root (found in /proc/self/mountinfo),
    /// so that they see the sockets of every process on the machine.
    pub fn load() -> Result<Self, LbError> {
        const MOUNTINFO: &str = "/proc/self/mountinfo";
        let mountinfo = fs::read_to_string(MOUNTINFO).map_err(|source| LbError::Io {
            path: MOUNTINFO.into(),
            source,
        })?;
        let root = cgroup2_root(&mountinfo).ok_or(LbError::NoCgroup2)?;
        Self::load_at(&root)
    }

    /// Loads the programs and attaches them to the cgroup2 directory `cgroup` (and so to the
    /// processes in its subtree). On failure nothing stays attached.
    pub fn load_at(cgroup: &Path) -> Result<Self, LbError> {
        let dir = File::open(cgroup).map_err(|source| LbError::Io {
            path: cgroup.to_owned(),
            source,
        })?;
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.bpf.o"));
        let mut ebpf = Ebpf::load(object).map_err(LbError::Object)?;
        let services = take_map(&mut ebpf, SERVICES)?;
        let slots = take_map(&mut ebpf, SLOTS)?;
        let revnat = take_map(&mut ebpf, REVNAT)?;
        // aya attaches with BPF_LINK_CREATE from Linux 5.7 on (the programs need 5.7 anyway, for
        // `bpf_get_netns_cookie`). A cgroup link always shares its hook the way BPF_F_ALLOW_MULTI
        // does, and the kernel refuses the flag itself on a link (EINVAL, aya issue #1078), so
        // `Single` (no flag) is what gives side-by-side attachment here.
        //
        // An error returns early and drops `ebpf`, which detaches what was attached already.
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
            program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(failed)?;
        }
        info!(cgroup = %cgroup.display(), "socket load balancer attached");
        Ok(Self {
            ebpf,
            services,
            slots,
            revnat,
            registry: Registry::default(),
        })
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
            .finish_non_exhaustive()
    }
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
