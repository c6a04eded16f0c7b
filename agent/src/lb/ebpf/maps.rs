//! The map keys and values of `ebpf/sock_lb.bpf.c`, mirrored as `#[repr(C)]` types whose sizes are
//! asserted against the C side's, and written to the maps as byte arrays in the C layout.
//!
//! Addresses and ports are kept in network byte order (as the kernel hands them to the program);
//! cookies, table ids and slot numbers in the host's order.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Names of the maps in the object.
pub(super) const SERVICES: &str = "lb_services";
pub(super) const SLOTS: &str = "lb_slots";
pub(super) const REVNAT: &str = "lb_revnat";

/// What a map of the object is, as the kernel reports it: a pinned map an earlier run left is
/// re-used only when it still matches (a meshd of another layout may have pinned it).
pub(super) struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The maps of `sock_lb.bpf.c`, as declared there.
pub(super) const MAP_SPECS: [MapSpec; 3] = [
    MapSpec {
        name: SERVICES,
        key_size: 16,
        value_size: 8,
        max_entries: 65536,
    },
    MapSpec {
        name: SLOTS,
        key_size: 8,
        value_size: 8,
        max_entries: 1 << 18,
    },
    MapSpec {
        name: REVNAT,
        key_size: 16,
        value_size: 16,
        max_entries: 65536,
    },
];

pub(super) const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
pub(super) const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

/// `struct lb_service_key`: a service as one sandbox (network namespace) sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ServiceKey {
    pub netns_cookie: u64,
    pub vip: [u8; 4],
    /// Big-endian; 0 matches every port of the VIP.
    pub port: [u8; 2],
    pub proto: u8,
    pub pad: u8,
}

/// `struct lb_service`: the Maglev table that balances a service; size 0 refuses connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Service {
    pub table_id: u32,
    pub table_size: u32,
}

/// `struct lb_slot_key`: one slot of one Maglev table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotKey {
    pub table_id: u32,
    pub slot: u32,
}

/// `struct lb_backend`: where a slot sends a socket; port 0 keeps the port the client asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Backend {
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub pad: [u8; 2],
}

/// `struct lb_revnat`: what a UDP socket's replies from a backend are made to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RevNat {
    pub netns_cookie: u64,
    pub vip: [u8; 4],
    pub port: [u8; 2],
    pub service_port: [u8; 2],
}

/// The sizes `_Static_assert`ed in `sock_lb.bpf.c`; aya also checks them against the object's
/// maps when it opens them.
const _: () = {
    assert!(size_of::<ServiceKey>() == 16);
    assert!(size_of::<Service>() == 8);
    assert!(size_of::<SlotKey>() == 8);
    assert!(size_of::<Backend>() == 8);
    assert!(size_of::<RevNat>() == 16);
    // `struct lb_revnat_key` is only read back here, as bytes.
};

pub(super) type ServiceKeyBytes = [u8; 16];
pub(super) type ServiceBytes = [u8; 8];
pub(super) type SlotKeyBytes = [u8; 8];
pub(super) type BackendBytes = [u8; 8];
pub(super) type RevNatKeyBytes = [u8; 16];
pub(super) type RevNatBytes = [u8; 16];

impl ServiceKey {
    pub fn new(netns_cookie: u64, vip: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self {
            netns_cookie,
            vip: vip.octets(),
            port: port.to_be_bytes(),
            proto,
            pad: 0,
        }
    }

    pub fn from_bytes(b: &ServiceKeyBytes) -> Self {
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[0..8]);
        Self {
            netns_cookie: u64::from_ne_bytes(cookie),
            vip: [b[8], b[9], b[10], b[11]],
            port: [b[12], b[13]],
            proto: b[14],
            pad: 0,
        }
    }

    /// The VIP and port (0: every port) this key stands for.
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.vip)
    }

    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }

    pub fn to_bytes(self) -> ServiceKeyBytes {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.netns_cookie.to_ne_bytes());
        b[8..12].copy_from_slice(&self.vip);
        b[12..14].copy_from_slice(&self.port);
        b[14] = self.proto;
        b
    }
}

impl Service {
    pub fn from_bytes(b: &ServiceBytes) -> Self {
        Self {
            table_id: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            table_size: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(self) -> ServiceBytes {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.table_id.to_ne_bytes());
        b[4..8].copy_from_slice(&self.table_size.to_ne_bytes());
        b
    }
}

impl SlotKey {
    pub fn from_bytes(b: &SlotKeyBytes) -> Self {
        Self {
            table_id: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            slot: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(self) -> SlotKeyBytes {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.table_id.to_ne_bytes());
        b[4..8].copy_from_slice(&self.slot.to_ne_bytes());
        b
    }
}

impl Backend {
    pub fn new(addr: SocketAddrV4) -> Self {
        Self {
            addr: addr.ip().octets(),
            port: addr.port().to_be_bytes(),
            pad: [0; 2],
        }
    }

    /// Where a slot's bytes send a socket.
    pub fn addr_of(b: &BackendBytes) -> SocketAddrV4 {
        SocketAddrV4::new(
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        )
    }

    pub fn to_bytes(self) -> BackendBytes {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.addr);
        b[4..6].copy_from_slice(&self.port);
        b
    }
}

impl RevNat {
    pub fn from_bytes(b: &RevNatBytes) -> Self {
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[0..8]);
        Self {
            netns_cookie: u64::from_ne_bytes(cookie),
            vip: [b[8], b[9], b[10], b[11]],
            port: [b[12], b[13]],
            service_port: [b[14], b[15]],
        }
    }

    /// Whether this entry belongs to the sandbox and, if given, to the service `key` (entries are
    /// only made for UDP).
    pub fn belongs_to(&self, netns_cookie: u64, service: Option<&ServiceKey>) -> bool {
        self.netns_cookie == netns_cookie
            && service.is_none_or(|k| {
                k.proto == IPPROTO_UDP && k.vip == self.vip && k.port == self.service_port
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_is_laid_out_as_in_c() {
        let key = ServiceKey::new(
            0x0102_0304_0506_0708,
            Ipv4Addr::new(10, 99, 0, 10),
            80,
            IPPROTO_TCP,
        );
        let b = key.to_bytes();
        assert_eq!(&b[0..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&b[8..12], &[10, 99, 0, 10], "VIP in network order");
        assert_eq!(&b[12..14], &[0, 80], "port in network order");
        assert_eq!(&b[14..16], &[6, 0]);
    }

    #[test]
    fn values_are_laid_out_as_in_c() {
        let svc = Service {
            table_id: 7,
            table_size: 509,
        };
        let b = svc.to_bytes();
        assert_eq!(&b[0..4], &7u32.to_ne_bytes());
        assert_eq!(&b[4..8], &509u32.to_ne_bytes());
        let slot = SlotKey {
            table_id: 7,
            slot: 300,
        };
        assert_eq!(&slot.to_bytes()[4..8], &300u32.to_ne_bytes());
        let backend = Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 8080));
        assert_eq!(backend.to_bytes(), [10, 0, 0, 3, 0x1f, 0x90, 0, 0]);
        let keep_port = Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 0));
        assert_eq!(&keep_port.to_bytes()[4..6], &[0, 0]);
    }

    #[test]
    fn keys_and_values_read_back_as_written() {
        let key = ServiceKey::new(7, Ipv4Addr::new(10, 99, 0, 10), 53, IPPROTO_UDP);
        assert_eq!(ServiceKey::from_bytes(&key.to_bytes()), key);
        assert_eq!(key.vip(), Ipv4Addr::new(10, 99, 0, 10));
        assert_eq!(key.port(), 53);
        let svc = Service {
            table_id: 3,
            table_size: 251,
        };
        assert_eq!(Service::from_bytes(&svc.to_bytes()), svc);
        let slot = SlotKey {
            table_id: 3,
            slot: 250,
        };
        assert_eq!(SlotKey::from_bytes(&slot.to_bytes()), slot);
        let at = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 8080);
        assert_eq!(Backend::addr_of(&Backend::new(at).to_bytes()), at);
    }

    #[test]
    fn revnat_entries_match_their_sandbox_and_service() {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&42u64.to_ne_bytes());
        raw[8..12].copy_from_slice(&[10, 99, 0, 10]);
        raw[12..14].copy_from_slice(&53u16.to_be_bytes());
        raw[14..16].copy_from_slice(&0u16.to_be_bytes());
        let rev = RevNat::from_bytes(&raw);
        assert_eq!(rev.port, [0, 53]);
        let vip = Ipv4Addr::new(10, 99, 0, 10);
        let wildcard = ServiceKey::new(42, vip, 0, IPPROTO_UDP);
        let exact = ServiceKey::new(42, vip, 53, IPPROTO_UDP);
        let other_vip = ServiceKey::new(42, Ipv4Addr::new(10, 99, 0, 11), 0, IPPROTO_UDP);
        let tcp = ServiceKey::new(42, vip, 0, IPPROTO_TCP);
        assert!(rev.belongs_to(42, None));
        assert!(rev.belongs_to(42, Some(&wildcard)));
        assert!(
            !rev.belongs_to(42, Some(&exact)),
            "recorded for the wildcard"
        );
        assert!(!rev.belongs_to(42, Some(&other_vip)));
        assert!(
            !rev.belongs_to(42, Some(&tcp)),
            "TCP sockets have no reverse entries"
        );
        assert!(!rev.belongs_to(43, None));
    }
}
