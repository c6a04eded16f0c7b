//! What an IPVS table holds, in mesh's terms: virtual services and their destinations (IPv4 only).

use std::net::Ipv4Addr;

use super::uapi::{
    IP_VS_SVC_F_ONEPACKET, IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2,
    IP_VS_SVC_F_SCHED3,
};

/// The transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A virtual service: what clients connect to. The address family is always `AF_INET`.
///
/// A service is identified by `fwmark` when it has one (then `protocol`, `addr` and `port` are not
/// sent, and the kernel reports them as TCP, 0.0.0.0 and 0), and otherwise by protocol, address
/// and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub fwmark: Option<u32>,
    /// The scheduler module's name without its `ip_vs_` prefix: "rr", "wrr", "mh", "sh", …
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity: clients within one netmask stick to one destination.
    pub netmask: Ipv4Addr,
}

impl Service {
    /// A non-persistent service on `addr:port` with no flags.
    pub fn new(protocol: Protocol, addr: Ipv4Addr, port: u16, scheduler: &str) -> Self {
        Self {
            protocol,
            addr,
            port,
            fwmark: None,
            scheduler: scheduler.to_owned(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: Ipv4Addr::BROADCAST,
        }
    }
}

/// `IP_VS_SVC_F_*`: a virtual service's flags. The kernel's internal "hashed" bit is never
/// included (it is dropped when parsing the kernel's replies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    pub const PERSISTENT: Self = Self(IP_VS_SVC_F_PERSISTENT);
    pub const ONE_PACKET: Self = Self(IP_VS_SVC_F_ONEPACKET);
    /// Scheduler-specific; for "sh" and "mh" it means "fall back to another destination when
    /// the chosen one is unavailable".
    pub const SCHED_1: Self = Self(IP_VS_SVC_F_SCHED1);
    /// Scheduler-specific; for "sh" and "mh" it means "hash the source port too".
    pub const SCHED_2: Self = Self(IP_VS_SVC_F_SCHED2);
    pub const SCHED_3: Self = Self(IP_VS_SVC_F_SCHED3);

    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// How packets reach a destination (`IP_VS_CONN_F_*` forwarding methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// NAT: the destination address and port are rewritten (`IP_VS_CONN_F_MASQ`).
    Masq,
    /// IP-in-IP encapsulation (`IP_VS_CONN_F_TUNNEL`).
    Tunnel,
    /// Direct routing: the frame is sent to the destination unchanged (`IP_VS_CONN_F_DROUTE`).
    Route,
}

/// A real server behind a virtual service. Its address family is always `AF_INET`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub forward: Forward,
    /// 0 stops new connections; the kernel rejects weights above `i32::MAX`.
    pub weight: u32,
    /// Active connections above which no new ones are scheduled here; 0 means no limit.
    pub upper_threshold: u32,
    /// Active connections below which an overloaded destination takes new ones again.
    pub lower_threshold: u32,
}

impl Destination {
    /// A destination without connection thresholds.
    pub fn new(addr: Ipv4Addr, port: u16, forward: Forward, weight: u32) -> Self {
        Self {
            addr,
            port,
            forward,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// A destination's connection counters, as the kernel reports them in a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    pub active: u32,
    pub inactive: u32,
    pub persistent: u32,
}

/// The kernel's answer to `IPVS_CMD_GET_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`: 0x010201 is 1.2.1.
    pub version_code: u32,
    /// Buckets in the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// The version as "major.minor.patch".
    pub fn version(&self) -> String {
        let v = self.version_code;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

/// A generic-netlink family, as the controller describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub id: u16,
    pub name: String,
    pub version: u32,
}
