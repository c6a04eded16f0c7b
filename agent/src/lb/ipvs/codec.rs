//! Requests to the IPVS family, encoded as the kernel's `ip_vs_ctl.c` parses them.
//!
//! A frame is `nlmsghdr` (16 bytes) + `genlmsghdr` (4 bytes) + attributes. Service and
//! destination attributes travel inside the nests `IPVS_CMD_ATTR_SERVICE` and
//! `IPVS_CMD_ATTR_DEST`, marked `NLA_F_NESTED` as current libnl marks them (the kernel accepts
//! nests with or without the flag). Integers are in host byte order except ports and the
//! netmask, which are in network byte order.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, Nla,
};

use super::IpvsError;
use super::types::{Destination, Forward, Protocol, Service};
use super::uapi::*;

/// One request to the IPVS family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    NewService(Service),
    /// Changes the scheduler, flags, timeout and netmask of the service with this identity.
    SetService(Service),
    DelService(Service),
    /// Dumps every service.
    GetServices,
    NewDest(Service, Destination),
    /// Changes the forwarding method, weight and thresholds of the destination at this address.
    SetDest(Service, Destination),
    DelDest(Service, Destination),
    /// Dumps the destinations of one service.
    GetDests(Service),
    /// Deletes every service and destination.
    Flush,
    GetInfo,
}

impl Request {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NewService(_) => "add service",
            Self::SetService(_) => "edit service",
            Self::DelService(_) => "delete service",
            Self::GetServices => "list services",
            Self::NewDest(..) => "add destination",
            Self::SetDest(..) => "edit destination",
            Self::DelDest(..) => "delete destination",
            Self::GetDests(_) => "list destinations",
            Self::Flush => "flush",
            Self::GetInfo => "get info",
        }
    }

    /// The `IPVS_CMD_*` command.
    pub fn command(&self) -> u8 {
        match self {
            Self::NewService(_) => IPVS_CMD_NEW_SERVICE,
            Self::SetService(_) => IPVS_CMD_SET_SERVICE,
            Self::DelService(_) => IPVS_CMD_DEL_SERVICE,
            Self::GetServices => IPVS_CMD_GET_SERVICE,
            Self::NewDest(..) => IPVS_CMD_NEW_DEST,
            Self::SetDest(..) => IPVS_CMD_SET_DEST,
            Self::DelDest(..) => IPVS_CMD_DEL_DEST,
            Self::GetDests(_) => IPVS_CMD_GET_DEST,
            Self::Flush => IPVS_CMD_FLUSH,
            Self::GetInfo => IPVS_CMD_GET_INFO,
        }
    }

    /// Whether the kernel answers with a dump (ended by `NLMSG_DONE`) rather than an ack.
    /// `IPVS_CMD_GET_INFO` has no dump handler, so it is an ordinary request.
    pub fn is_dump(&self) -> bool {
        matches!(self, Self::GetServices | Self::GetDests(_))
    }

    /// The netlink flags: `NLM_F_REQUEST | NLM_F_ACK`, plus `NLM_F_DUMP` for dumps.
    pub fn flags(&self) -> u16 {
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        if self.is_dump() {
            flags | NLM_F_DUMP
        } else {
            flags
        }
    }

    /// The generic-netlink message body: `genlmsghdr` and the attributes.
    pub fn payload(&self) -> Result<Vec<u8>, IpvsError> {
        let attrs = self.attrs()?;
        Ok(genl_payload(self.command(), IPVS_GENL_VERSION, &attrs))
    }

    /// The whole netlink message for the IPVS family whose id the controller gave.
    pub fn frame(&self, family: u16, seq: u32) -> Result<Vec<u8>, IpvsError> {
        Ok(netlink_frame(family, self.flags(), seq, &self.payload()?))
    }

    fn attrs(&self) -> Result<Vec<Attr>, IpvsError> {
        Ok(match self {
            Self::NewService(svc) | Self::SetService(svc) => vec![service_nest(svc, true)?],
            Self::DelService(svc) | Self::GetDests(svc) => vec![service_nest(svc, false)?],
            Self::NewDest(svc, dest) | Self::SetDest(svc, dest) => {
                vec![service_nest(svc, false)?, dest_nest(dest, true)]
            }
            Self::DelDest(svc, dest) => vec![service_nest(svc, false)?, dest_nest(dest, false)],
            Self::GetServices | Self::Flush | Self::GetInfo => Vec::new(),
        })
    }
}

/// `CTRL_CMD_GETFAMILY` for the family `name`, sent to the controller (`GENL_ID_CTRL`).
pub fn get_family_frame(name: &str, seq: u32) -> Vec<u8> {
    let attrs = [Attr::string(CTRL_ATTR_FAMILY_NAME, name)];
    let payload = genl_payload(CTRL_CMD_GETFAMILY, GENL_CTRL_VERSION, &attrs);
    netlink_frame(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, &payload)
}

/// The service's identity (family, then fwmark or protocol/address/port) and, for a full entry,
/// everything `IPVS_CMD_NEW_SERVICE` requires besides.
fn service_nest(svc: &Service, full: bool) -> Result<Attr, IpvsError> {
    let mut attrs = vec![Attr::u16(IPVS_SVC_ATTR_AF, AF_INET)];
    match svc.fwmark {
        Some(mark) => attrs.push(Attr::u32(IPVS_SVC_ATTR_FWMARK, mark)),
        None => attrs.extend([
            Attr::u16(IPVS_SVC_ATTR_PROTOCOL, protocol_number(svc.protocol)),
            Attr::inet_addr(IPVS_SVC_ATTR_ADDR, svc.addr),
            Attr::be16(IPVS_SVC_ATTR_PORT, svc.port),
        ]),
    }
    if full {
        check_scheduler(&svc.scheduler)?;
        let mut flags = Vec::with_capacity(8);
        flags.extend_from_slice(&svc.flags.bits().to_ne_bytes());
        flags.extend_from_slice(&u32::MAX.to_ne_bytes()); // mask: every flag is as given
        attrs.extend([
            Attr::string(IPVS_SVC_ATTR_SCHED_NAME, &svc.scheduler),
            Attr::bytes(IPVS_SVC_ATTR_FLAGS, flags),
            Attr::u32(IPVS_SVC_ATTR_TIMEOUT, svc.timeout),
            Attr::bytes(IPVS_SVC_ATTR_NETMASK, svc.netmask.octets().to_vec()),
        ]);
    }
    Ok(Attr::nested(IPVS_CMD_ATTR_SERVICE, attrs))
}

/// The destination's identity (address, port, family) and, for a full entry, its forwarding
/// method, weight and thresholds.
fn dest_nest(dest: &Destination, full: bool) -> Attr {
    let mut attrs = vec![
        Attr::inet_addr(IPVS_DEST_ATTR_ADDR, dest.addr),
        Attr::be16(IPVS_DEST_ATTR_PORT, dest.port),
        Attr::u16(IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET),
    ];
    if full {
        attrs.extend([
            Attr::u32(IPVS_DEST_ATTR_FWD_METHOD, forward_number(dest.forward)),
            Attr::u32(IPVS_DEST_ATTR_WEIGHT, dest.weight),
            Attr::u32(IPVS_DEST_ATTR_U_THRESH, dest.upper_threshold),
            Attr::u32(IPVS_DEST_ATTR_L_THRESH, dest.lower_threshold),
        ]);
    }
    Attr::nested(IPVS_CMD_ATTR_DEST, attrs)
}

/// The kernel looks schedulers up by name and takes at most 15 bytes before the NUL.
fn check_scheduler(name: &str) -> Result<(), IpvsError> {
    if name.is_empty() || name.len() > IP_VS_SCHEDNAME_MAXLEN || name.contains('\0') {
        return Err(IpvsError::InvalidScheduler {
            name: name.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn protocol_number(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
    }
}

pub(super) fn forward_number(forward: Forward) -> u32 {
    match forward {
        Forward::Masq => IP_VS_CONN_F_MASQ,
        Forward::Tunnel => IP_VS_CONN_F_TUNNEL,
        Forward::Route => IP_VS_CONN_F_DROUTE,
    }
}

fn genl_payload(cmd: u8, version: u8, attrs: &[Attr]) -> Vec<u8> {
    let mut payload = vec![0; GENL_HDRLEN + attrs.buffer_len()];
    payload[0] = cmd;
    payload[1] = version;
    // payload[2..4] is genlmsghdr.reserved, zero.
    attrs.emit(&mut payload[GENL_HDRLEN..]);
    payload
}

fn netlink_frame(message_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    let header_len = header.buffer_len();
    header.length = (header_len + payload.len()) as u32;
    header.message_type = message_type;
    header.flags = flags;
    header.sequence_number = seq;
    header.port_number = 0; // the kernel
    let mut frame = vec![0; header_len + payload.len()];
    header.emit(&mut frame[..header_len]);
    frame[header_len..].copy_from_slice(payload);
    frame
}

/// One attribute to send, its value already in the kernel's byte order.
enum Attr {
    Value(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    fn bytes(kind: u16, value: Vec<u8>) -> Self {
        Self::Value(kind, value)
    }

    fn u16(kind: u16, value: u16) -> Self {
        Self::Value(kind, value.to_ne_bytes().to_vec())
    }

    fn be16(kind: u16, value: u16) -> Self {
        Self::Value(kind, value.to_be_bytes().to_vec())
    }

    fn u32(kind: u16, value: u32) -> Self {
        Self::Value(kind, value.to_ne_bytes().to_vec())
    }

    /// `NLA_NUL_STRING`: the bytes and a terminating NUL.
    fn string(kind: u16, value: &str) -> Self {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        Self::Value(kind, bytes)
    }

    /// `union nf_inet_addr`: the IPv4 address in the first 4 of 16 bytes.
    fn inet_addr(kind: u16, addr: Ipv4Addr) -> Self {
        let mut bytes = vec![0; 16];
        bytes[..4].copy_from_slice(&addr.octets());
        Self::Value(kind, bytes)
    }

    fn nested(kind: u16, attrs: Vec<Attr>) -> Self {
        Self::Nested(kind, attrs)
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Self::Value(_, value) => value.len(),
            Self::Nested(_, attrs) => attrs.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Value(kind, _) => *kind,
            Self::Nested(kind, _) => kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Value(_, value) => buffer.copy_from_slice(value),
            Self::Nested(_, attrs) => attrs.as_slice().emit(buffer),
        }
    }
}
