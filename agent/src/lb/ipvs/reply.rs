//! The kernel's answers: dump entries, `GET_INFO`, the controller's family description, acks
//! and errors. Every length is checked before it is used: malformed input is an error, never a
//! panic. Attributes this parser does not know (statistics nests, tunnel settings, newer
//! additions) are skipped.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    DecodeError, ErrorBuffer, ErrorMessage, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NlasIterator,
    Parseable, parse_i32, parse_u16, parse_u16_be, parse_u32,
};

use super::IpvsError;
use super::types::{
    ConnCounts, Destination, Family, Forward, Info, Protocol, Service, ServiceFlags,
};
use super::uapi::*;

/// One message from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A service, from a `GET_SERVICE` dump.
    Service(Service),
    /// A destination, from a `GET_DEST` dump.
    Destination {
        dest: Destination,
        conns: ConnCounts,
    },
    Info(Info),
    /// The controller's answer to `CTRL_CMD_GETFAMILY`.
    Family(Family),
    /// `NLMSG_ERROR` with code 0: the request succeeded.
    Ack,
    /// `NLMSG_ERROR` (or a dump's `NLMSG_DONE`) with a negative code: the request failed with
    /// this (positive) errno.
    Error {
        errno: i32,
    },
    /// `NLMSG_DONE`: the dump is complete.
    Done,
}

/// A parsed message and the sequence number of the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub seq: u32,
    pub reply: Reply,
}

/// Parses every netlink message in one datagram from the kernel.
pub fn parse_datagram(mut buf: &[u8]) -> Result<Vec<Incoming>, IpvsError> {
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let message = NetlinkBuffer::new_checked(buf).map_err(malformed("netlink header"))?;
        let len = message.length() as usize;
        messages.push(Incoming {
            seq: message.sequence_number(),
            reply: parse_message(message.message_type(), message.payload())?,
        });
        // Messages are 4-byte aligned; the last one may end without its padding.
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(messages)
}

fn parse_message(message_type: u16, payload: &[u8]) -> Result<Reply, IpvsError> {
    match message_type {
        NLMSG_ERROR => {
            let error = ErrorBuffer::new_checked(&payload)
                .and_then(|buf| ErrorMessage::parse(&buf))
                .map_err(malformed("NLMSG_ERROR"))?;
            Ok(match error.code {
                None => Reply::Ack,
                Some(code) => Reply::Error {
                    errno: code.get().saturating_neg(),
                },
            })
        }
        NLMSG_DONE => {
            // A dump that failed part way reports its error in the DONE message's code.
            let code = match payload.get(..4) {
                Some(code) => parse_i32(code).map_err(malformed("NLMSG_DONE"))?,
                None if payload.is_empty() => 0,
                None => return Err(too_short("NLMSG_DONE", payload.len(), 4)),
            };
            Ok(if code < 0 {
                Reply::Error {
                    errno: code.saturating_neg(),
                }
            } else {
                Reply::Done
            })
        }
        GENL_ID_CTRL => parse_ctrl(payload),
        kind if kind >= NLMSG_MIN_TYPE => parse_ipvs(payload),
        kind => Err(IpvsError::Unsupported {
            what: "netlink message type",
            value: kind.into(),
        }),
    }
}

/// Splits a generic-netlink payload into its command and its attributes.
fn genl(payload: &[u8]) -> Result<(u8, &[u8]), IpvsError> {
    if payload.len() < GENL_HDRLEN {
        return Err(too_short("genlmsghdr", payload.len(), GENL_HDRLEN));
    }
    Ok((payload[0], &payload[GENL_HDRLEN..]))
}

fn parse_ctrl(payload: &[u8]) -> Result<Reply, IpvsError> {
    let (cmd, attrs) = genl(payload)?;
    if cmd != CTRL_CMD_NEWFAMILY {
        return Err(IpvsError::Unsupported {
            what: "controller reply command",
            value: cmd.into(),
        });
    }
    let (mut id, mut name, mut version) = (None, None, None);
    for (kind, value) in parse_attrs(attrs)? {
        match kind {
            CTRL_ATTR_FAMILY_ID => id = Some(u16_attr("CTRL_ATTR_FAMILY_ID", value)?),
            CTRL_ATTR_FAMILY_NAME => name = Some(string_attr("CTRL_ATTR_FAMILY_NAME", value)?),
            CTRL_ATTR_VERSION => version = Some(u32_attr("CTRL_ATTR_VERSION", value)?),
            _ => {}
        }
    }
    Ok(Reply::Family(Family {
        id: id.ok_or(missing("CTRL_ATTR_FAMILY_ID"))?,
        name: name.ok_or(missing("CTRL_ATTR_FAMILY_NAME"))?,
        version: version.ok_or(missing("CTRL_ATTR_VERSION"))?,
    }))
}

fn parse_ipvs(payload: &[u8]) -> Result<Reply, IpvsError> {
    let (cmd, attrs) = genl(payload)?;
    let attrs = parse_attrs(attrs)?;
    let nest = |kind: u16, name: &'static str| {
        attrs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, value)| *value)
            .ok_or(missing(name))
    };
    match cmd {
        IPVS_CMD_NEW_SERVICE => Ok(Reply::Service(parse_service(nest(
            IPVS_CMD_ATTR_SERVICE,
            "IPVS_CMD_ATTR_SERVICE",
        )?)?)),
        IPVS_CMD_NEW_DEST => {
            let (dest, conns) = parse_dest(nest(IPVS_CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST")?)?;
            Ok(Reply::Destination { dest, conns })
        }
        IPVS_CMD_SET_INFO => parse_info(&attrs),
        cmd => Err(IpvsError::Unsupported {
            what: "IPVS reply command",
            value: cmd.into(),
        }),
    }
}

fn parse_service(nest: &[u8]) -> Result<Service, IpvsError> {
    let mut af = None;
    let (mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None);
    let (mut scheduler, mut flags, mut timeout, mut netmask) = (None, None, None, None);
    for (kind, value) in parse_attrs(nest)? {
        match kind {
            IPVS_SVC_ATTR_AF => af = Some(u16_attr("IPVS_SVC_ATTR_AF", value)?),
            IPVS_SVC_ATTR_PROTOCOL => protocol = Some(u16_attr("IPVS_SVC_ATTR_PROTOCOL", value)?),
            IPVS_SVC_ATTR_ADDR => addr = Some(addr_attr("IPVS_SVC_ATTR_ADDR", value)?),
            IPVS_SVC_ATTR_PORT => port = Some(be16_attr("IPVS_SVC_ATTR_PORT", value)?),
            IPVS_SVC_ATTR_FWMARK => fwmark = Some(u32_attr("IPVS_SVC_ATTR_FWMARK", value)?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                scheduler = Some(string_attr("IPVS_SVC_ATTR_SCHED_NAME", value)?);
            }
            IPVS_SVC_ATTR_FLAGS => flags = Some(flags_attr(value)?),
            IPVS_SVC_ATTR_TIMEOUT => timeout = Some(u32_attr("IPVS_SVC_ATTR_TIMEOUT", value)?),
            IPVS_SVC_ATTR_NETMASK => netmask = Some(ipv4_attr("IPVS_SVC_ATTR_NETMASK", value)?),
            _ => {}
        }
    }
    check_family(af.ok_or(missing("IPVS_SVC_ATTR_AF"))?)?;
    // A fwmark service has no protocol, address or port of its own; the kernel treats it as TCP.
    let (protocol, addr, port) = match fwmark {
        Some(_) => (Protocol::Tcp, Ipv4Addr::UNSPECIFIED, 0),
        None => (
            protocol_from(protocol.ok_or(missing("IPVS_SVC_ATTR_PROTOCOL"))?)?,
            addr.ok_or(missing("IPVS_SVC_ATTR_ADDR"))?,
            port.ok_or(missing("IPVS_SVC_ATTR_PORT"))?,
        ),
    };
    Ok(Service {
        protocol,
        addr,
        port,
        fwmark,
        scheduler: scheduler.ok_or(missing("IPVS_SVC_ATTR_SCHED_NAME"))?,
        flags: flags.ok_or(missing("IPVS_SVC_ATTR_FLAGS"))?,
        timeout: timeout.ok_or(missing("IPVS_SVC_ATTR_TIMEOUT"))?,
        netmask: netmask.ok_or(missing("IPVS_SVC_ATTR_NETMASK"))?,
    })
}

fn parse_dest(nest: &[u8]) -> Result<(Destination, ConnCounts), IpvsError> {
    let (mut addr, mut port, mut family, mut forward) = (None, None, None, None);
    let (mut weight, mut upper, mut lower) = (None, None, None);
    let mut conns = ConnCounts::default();
    for (kind, value) in parse_attrs(nest)? {
        match kind {
            IPVS_DEST_ATTR_ADDR => addr = Some(addr_attr("IPVS_DEST_ATTR_ADDR", value)?),
            IPVS_DEST_ATTR_PORT => port = Some(be16_attr("IPVS_DEST_ATTR_PORT", value)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                family = Some(u16_attr("IPVS_DEST_ATTR_ADDR_FAMILY", value)?);
            }
            IPVS_DEST_ATTR_FWD_METHOD => {
                forward = Some(u32_attr("IPVS_DEST_ATTR_FWD_METHOD", value)?);
            }
            IPVS_DEST_ATTR_WEIGHT => weight = Some(u32_attr("IPVS_DEST_ATTR_WEIGHT", value)?),
            IPVS_DEST_ATTR_U_THRESH => upper = Some(u32_attr("IPVS_DEST_ATTR_U_THRESH", value)?),
            IPVS_DEST_ATTR_L_THRESH => lower = Some(u32_attr("IPVS_DEST_ATTR_L_THRESH", value)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                conns.active = u32_attr("IPVS_DEST_ATTR_ACTIVE_CONNS", value)?;
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                conns.inactive = u32_attr("IPVS_DEST_ATTR_INACT_CONNS", value)?;
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                conns.persistent = u32_attr("IPVS_DEST_ATTR_PERSIST_CONNS", value)?;
            }
            _ => {}
        }
    }
    // Kernels before 4.2 do not report the family: the destination's is then the service's.
    if let Some(family) = family {
        check_family(family)?;
    }
    let dest = Destination {
        addr: addr.ok_or(missing("IPVS_DEST_ATTR_ADDR"))?,
        port: port.ok_or(missing("IPVS_DEST_ATTR_PORT"))?,
        forward: forward_from(forward.ok_or(missing("IPVS_DEST_ATTR_FWD_METHOD"))?)?,
        weight: weight.ok_or(missing("IPVS_DEST_ATTR_WEIGHT"))?,
        upper_threshold: upper.ok_or(missing("IPVS_DEST_ATTR_U_THRESH"))?,
        lower_threshold: lower.ok_or(missing("IPVS_DEST_ATTR_L_THRESH"))?,
    };
    Ok((dest, conns))
}

fn parse_info(attrs: &[(u16, &[u8])]) -> Result<Reply, IpvsError> {
    let (mut version_code, mut conn_table_size) = (None, None);
    for &(kind, value) in attrs {
        match kind {
            IPVS_INFO_ATTR_VERSION => {
                version_code = Some(u32_attr("IPVS_INFO_ATTR_VERSION", value)?)
            }
            IPVS_INFO_ATTR_CONN_TAB_SIZE => {
                conn_table_size = Some(u32_attr("IPVS_INFO_ATTR_CONN_TAB_SIZE", value)?);
            }
            _ => {}
        }
    }
    Ok(Reply::Info(Info {
        version_code: version_code.ok_or(missing("IPVS_INFO_ATTR_VERSION"))?,
        conn_table_size: conn_table_size.ok_or(missing("IPVS_INFO_ATTR_CONN_TAB_SIZE"))?,
    }))
}

/// The attributes in `buf` as (type without the nested/byte-order flags, value) pairs.
fn parse_attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, IpvsError> {
    NlasIterator::new(buf)
        .map(|nla| {
            let nla = nla.map_err(malformed("attribute"))?;
            let (kind, len) = (nla.kind(), usize::from(nla.length()));
            // NlasIterator checked that the header's length fits in the buffer.
            Ok((kind, &nla.into_inner()[4..len]))
        })
        .collect()
}

fn u16_attr(name: &'static str, value: &[u8]) -> Result<u16, IpvsError> {
    parse_u16(value).map_err(malformed(name))
}

fn be16_attr(name: &'static str, value: &[u8]) -> Result<u16, IpvsError> {
    parse_u16_be(value).map_err(malformed(name))
}

fn u32_attr(name: &'static str, value: &[u8]) -> Result<u32, IpvsError> {
    parse_u32(value).map_err(malformed(name))
}

fn ipv4_attr(name: &'static str, value: &[u8]) -> Result<Ipv4Addr, IpvsError> {
    let octets: [u8; 4] = value
        .try_into()
        .map_err(|_| bad_length(name, value.len(), "4"))?;
    Ok(Ipv4Addr::from(octets))
}

/// `union nf_inet_addr`: 16 bytes from the kernel (4 are accepted too), IPv4 in the first 4.
fn addr_attr(name: &'static str, value: &[u8]) -> Result<Ipv4Addr, IpvsError> {
    match value.len() {
        4 | 16 => ipv4_attr(name, &value[..4]),
        len => Err(bad_length(name, len, "4 or 16")),
    }
}

/// A NUL-terminated string; anything after the first NUL is ignored.
fn string_attr(name: &'static str, value: &[u8]) -> Result<String, IpvsError> {
    let text = value.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|e| IpvsError::Malformed {
        context: name,
        source: DecodeError::from(e),
    })
}

/// `struct ip_vs_flags`; the kernel sends every flag (mask ~0), including its "hashed" bit.
fn flags_attr(value: &[u8]) -> Result<ServiceFlags, IpvsError> {
    if value.len() != 8 {
        return Err(bad_length("IPVS_SVC_ATTR_FLAGS", value.len(), "8"));
    }
    let flags = u32_attr("IPVS_SVC_ATTR_FLAGS", &value[..4])?;
    Ok(ServiceFlags::from_bits(flags & !IP_VS_SVC_F_HASHED))
}

fn check_family(af: u16) -> Result<(), IpvsError> {
    if af == AF_INET {
        Ok(())
    } else {
        Err(IpvsError::Unsupported {
            what: "address family",
            value: af.into(),
        })
    }
}

fn protocol_from(number: u16) -> Result<Protocol, IpvsError> {
    match number {
        IPPROTO_TCP => Ok(Protocol::Tcp),
        IPPROTO_UDP => Ok(Protocol::Udp),
        IPPROTO_SCTP => Ok(Protocol::Sctp),
        other => Err(IpvsError::Unsupported {
            what: "protocol",
            value: other.into(),
        }),
    }
}

fn forward_from(method: u32) -> Result<Forward, IpvsError> {
    match method {
        IP_VS_CONN_F_MASQ => Ok(Forward::Masq),
        IP_VS_CONN_F_TUNNEL => Ok(Forward::Tunnel),
        IP_VS_CONN_F_DROUTE => Ok(Forward::Route),
        other => Err(IpvsError::Unsupported {
            what: "forwarding method",
            value: other,
        }),
    }
}

fn malformed(context: &'static str) -> impl Fn(DecodeError) -> IpvsError {
    move |source| IpvsError::Malformed { context, source }
}

fn too_short(context: &'static str, len: usize, need: usize) -> IpvsError {
    IpvsError::Malformed {
        context,
        source: DecodeError::invalid_buffer(context, len, need),
    }
}

fn bad_length(context: &'static str, len: usize, want: &str) -> IpvsError {
    let source = DecodeError::from(format!("{len} bytes where {want} were expected"));
    IpvsError::Malformed { context, source }
}

fn missing(attr: &'static str) -> IpvsError {
    IpvsError::MissingAttribute { attr }
}
