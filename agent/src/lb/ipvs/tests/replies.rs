//! Parsing the kernel's replies: hand-built dumps as `ip_vs_genl_fill_service` /
//! `ip_vs_genl_fill_dest` lay them out (nests without `NLA_F_NESTED`, statistics nests, tunnel
//! attributes), info, acks, errors, and malformed input.

use std::net::Ipv4Addr;

use super::super::{
    ConnCounts, Destination, Family, Forward, Incoming, Info, IpvsError, Protocol, Reply, Request,
    Service, ServiceFlags, parse_datagram,
};
use super::{FAMILY, dest, service};

/// A `GET_SERVICE` dump entry (168 bytes) followed by `NLMSG_DONE` (20 bytes).
#[rustfmt::skip]
const SERVICE_DUMP: [u8; 188] = [
    0xa8, 0x00, 0x00, 0x00,             // nlmsg_len 168
    0x25, 0x00,                         // the IPVS family
    0x02, 0x00,                         // NLM_F_MULTI
    0x06, 0x00, 0x00, 0x00,             // seq 6
    0x34, 0x12, 0x00, 0x00,             // pid: our socket's port id
    0x01, 0x01, 0x00, 0x00,             // IPVS_CMD_NEW_SERVICE, version 1
    0x94, 0x00, 0x01, 0x00,             // len 148, IPVS_CMD_ATTR_SERVICE (no NLA_F_NESTED)
    0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF_INET
    0x06, 0x00, 0x02, 0x00, 0x11, 0x00, 0x00, 0x00, // PROTOCOL: UDP
    0x14, 0x00, 0x03, 0x00,             // ADDR: 10.0.0.9
    10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x06, 0x00, 0x04, 0x00, 0x00, 0x35, 0x00, 0x00, // PORT: 53, big-endian
    0x07, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00, // SCHED_NAME "rr"
    0x0c, 0x00, 0x07, 0x00,             // FLAGS
    0x03, 0x00, 0x00, 0x00,             //   PERSISTENT | HASHED
    0xff, 0xff, 0xff, 0xff,             //   mask ~0
    0x08, 0x00, 0x08, 0x00, 0x2c, 0x01, 0x00, 0x00, // TIMEOUT: 300 s
    0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0x00, // NETMASK: 255.255.255.0
    0x24, 0x00, 0x0a, 0x00,             // len 36, IPVS_SVC_ATTR_STATS
    0x08, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, //   CONNS (u32)
    0x08, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, //   INPKTS (u32)
    0x04, 0x00, 0x0b, 0x00,             //   IPVS_STATS_ATTR_PAD, empty
    0x0c, 0x00, 0x04, 0x00,             //   INBYTES (u64)
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x1c, 0x00, 0x0c, 0x00,             // len 28, IPVS_SVC_ATTR_STATS64
    0x0c, 0x00, 0x01, 0x00,             //   CONNS (u64)
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0c, 0x00, 0x05, 0x00,             //   OUTBYTES (u64)
    0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // NLMSG_DONE
    0x14, 0x00, 0x00, 0x00,             // nlmsg_len 20
    0x03, 0x00, 0x02, 0x00,             // NLMSG_DONE, NLM_F_MULTI
    0x06, 0x00, 0x00, 0x00,             // seq 6
    0x34, 0x12, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,             // error 0
];

/// A `GET_DEST` dump entry as a current kernel fills it (168 bytes).
#[rustfmt::skip]
const DEST_ENTRY: [u8; 168] = [
    0xa8, 0x00, 0x00, 0x00,             // nlmsg_len 168
    0x25, 0x00, 0x02, 0x00,             // IPVS family, NLM_F_MULTI
    0x08, 0x00, 0x00, 0x00,             // seq 8
    0x34, 0x12, 0x00, 0x00,
    0x05, 0x01, 0x00, 0x00,             // IPVS_CMD_NEW_DEST, version 1
    0x94, 0x00, 0x02, 0x00,             // len 148, IPVS_CMD_ATTR_DEST
    0x14, 0x00, 0x01, 0x00,             // ADDR: 10.0.1.2
    10, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00, // PORT: 8080
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // FWD_METHOD: MASQ
    0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // WEIGHT: 1
    0x05, 0x00, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_TYPE (u8) + padding
    0x06, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_PORT
    0x06, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, // TUN_FLAGS
    0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, // U_THRESH
    0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // L_THRESH
    0x08, 0x00, 0x07, 0x00, 0x03, 0x00, 0x00, 0x00, // ACTIVE_CONNS: 3
    0x08, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, // INACT_CONNS: 4
    0x08, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // PERSIST_CONNS: 0
    0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, // ADDR_FAMILY: AF_INET
    0x0c, 0x00, 0x0a, 0x00,             // len 12, IPVS_DEST_ATTR_STATS
    0x08, 0x00, 0x01, 0x00, 0x09, 0x00, 0x00, 0x00, //   CONNS
    0x10, 0x00, 0x0c, 0x00,             // len 16, IPVS_DEST_ATTR_STATS64
    0x0c, 0x00, 0x03, 0x00,             //   OUTPKTS (u64)
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn service_dump_entry_with_stats_and_done() {
    let want_service = Service {
        protocol: Protocol::Udp,
        addr: Ipv4Addr::new(10, 0, 0, 9),
        port: 53,
        fwmark: None,
        scheduler: "rr".into(),
        flags: ServiceFlags::PERSISTENT, // the kernel's HASHED bit is dropped
        timeout: 300,
        netmask: Ipv4Addr::new(255, 255, 255, 0),
    };
    assert_eq!(
        parse_datagram(&SERVICE_DUMP).unwrap(),
        [
            Incoming {
                seq: 6,
                reply: Reply::Service(want_service)
            },
            Incoming {
                seq: 6,
                reply: Reply::Done
            },
        ]
    );
}

#[test]
fn dest_dump_entry_with_counters_tunnel_attrs_and_stats() {
    let want = Reply::Destination {
        dest: dest(),
        conns: ConnCounts {
            active: 3,
            inactive: 4,
            persistent: 0,
        },
    };
    assert_eq!(
        parse_datagram(&DEST_ENTRY).unwrap(),
        [Incoming {
            seq: 8,
            reply: want
        }]
    );
}

#[test]
fn dest_from_a_kernel_that_does_not_report_the_family() {
    // Drop ADDR_FAMILY (bytes 132..140 of the message) and fix both lengths.
    let mut old = [&DEST_ENTRY[..132], &DEST_ENTRY[140..]].concat();
    old[0] = 0xa0; // nlmsg_len 160
    old[20] = 0x8c; // nest len 140
    match &parse_datagram(&old).unwrap()[0].reply {
        Reply::Destination { dest: d, .. } => assert_eq!(*d, dest()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn info_reply_then_ack() {
    #[rustfmt::skip]
    let datagram: &[u8] = &[
        0x24, 0x00, 0x00, 0x00,         // nlmsg_len 36
        0x25, 0x00, 0x00, 0x00,         // IPVS family, no flags
        0x07, 0x00, 0x00, 0x00,         // seq 7
        0x34, 0x12, 0x00, 0x00,
        0x0e, 0x01, 0x00, 0x00,         // IPVS_CMD_SET_INFO, version 1
        0x08, 0x00, 0x01, 0x00, 0x01, 0x02, 0x01, 0x00, // VERSION: 0x010201
        0x08, 0x00, 0x02, 0x00, 0x00, 0x10, 0x00, 0x00, // CONN_TAB_SIZE: 4096
        // the ack: NLMSG_ERROR with error 0 and our request's header
        0x24, 0x00, 0x00, 0x00,         // nlmsg_len 36
        0x02, 0x00, 0x00, 0x01,         // NLMSG_ERROR, NLM_F_CAPPED
        0x07, 0x00, 0x00, 0x00,
        0x34, 0x12, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,         // error 0
        0x14, 0x00, 0x00, 0x00, 0x25, 0x00, 0x05, 0x00, // the request's nlmsghdr
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let info = Info {
        version_code: 0x010201,
        conn_table_size: 4096,
    };
    assert_eq!(info.version(), "1.2.1");
    assert_eq!(
        parse_datagram(datagram).unwrap(),
        [
            Incoming {
                seq: 7,
                reply: Reply::Info(info)
            },
            Incoming {
                seq: 7,
                reply: Reply::Ack
            }
        ]
    );
}

#[test]
fn netlink_error_carries_the_errno() {
    #[rustfmt::skip]
    let datagram: &[u8] = &[
        0x24, 0x00, 0x00, 0x00,         // nlmsg_len 36
        0x02, 0x00, 0x00, 0x00,         // NLMSG_ERROR
        0x03, 0x00, 0x00, 0x00,         // seq 3
        0x34, 0x12, 0x00, 0x00,
        0xef, 0xff, 0xff, 0xff,         // error -17 (EEXIST)
        0x68, 0x00, 0x00, 0x00, 0x25, 0x00, 0x05, 0x00, // the request's nlmsghdr
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        parse_datagram(datagram).unwrap(),
        [Incoming {
            seq: 3,
            reply: Reply::Error {
                errno: libc::EEXIST
            }
        }]
    );
}

#[test]
fn failed_dump_reports_its_error_in_done() {
    #[rustfmt::skip]
    let datagram: &[u8] = &[
        0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, // NLMSG_DONE, NLM_F_MULTI
        0x06, 0x00, 0x00, 0x00, 0x34, 0x12, 0x00, 0x00,
        0xea, 0xff, 0xff, 0xff,         // -22 (EINVAL)
    ];
    assert_eq!(
        parse_datagram(datagram).unwrap()[0].reply,
        Reply::Error {
            errno: libc::EINVAL
        }
    );
}

#[test]
fn controller_reply_gives_the_family_id() {
    #[rustfmt::skip]
    let datagram: &[u8] = &[
        0x58, 0x00, 0x00, 0x00,         // nlmsg_len 88
        0x10, 0x00, 0x00, 0x00,         // GENL_ID_CTRL
        0x07, 0x00, 0x00, 0x00,         // seq 7
        0x34, 0x12, 0x00, 0x00,
        0x01, 0x02, 0x00, 0x00,         // CTRL_CMD_NEWFAMILY, version 2
        0x09, 0x00, 0x02, 0x00, b'I', b'P', b'V', b'S', 0x00, 0x00, 0x00, 0x00, // FAMILY_NAME
        0x06, 0x00, 0x01, 0x00, 0x25, 0x00, 0x00, 0x00, // FAMILY_ID: 0x25
        0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, // VERSION: 1
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // HDRSIZE: 0
        0x08, 0x00, 0x05, 0x00, 0x06, 0x00, 0x00, 0x00, // MAXATTR: 6
        0x18, 0x00, 0x06, 0x00,         // len 24, CTRL_ATTR_OPS
        0x14, 0x00, 0x01, 0x00,         //   len 20, op #1
        0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, // CTRL_ATTR_OP_ID
        0x08, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x00, 0x00, // CTRL_ATTR_OP_FLAGS
    ];
    let family = Family {
        id: FAMILY,
        name: "IPVS".into(),
        version: 1,
    };
    assert_eq!(
        parse_datagram(datagram).unwrap()[0].reply,
        Reply::Family(family)
    );
}

#[test]
fn services_round_trip() {
    let mut persistent = Service::new(Protocol::Udp, Ipv4Addr::new(10, 0, 0, 2), 53, "sh");
    persistent.flags = ServiceFlags::PERSISTENT | ServiceFlags::SCHED_1;
    persistent.timeout = 360;
    persistent.netmask = Ipv4Addr::new(255, 255, 0, 0);
    let sctp = Service::new(Protocol::Sctp, Ipv4Addr::new(192, 168, 7, 1), 9899, "wlc");
    // The kernel reports a fwmark service as TCP 0.0.0.0:0.
    let mut fwmark = Service::new(Protocol::Tcp, Ipv4Addr::UNSPECIFIED, 0, "mh");
    fwmark.fwmark = Some(0x4d45);
    for svc in [service(), persistent, sctp, fwmark] {
        let frame = Request::NewService(svc.clone()).frame(FAMILY, 11).unwrap();
        assert_eq!(
            parse_datagram(&frame).unwrap(),
            [Incoming {
                seq: 11,
                reply: Reply::Service(svc)
            }]
        );
    }
}

#[test]
fn destinations_round_trip() {
    let mut tunnel = Destination::new(Ipv4Addr::new(10, 9, 8, 7), 443, Forward::Tunnel, 100);
    tunnel.upper_threshold = 1000;
    tunnel.lower_threshold = 800;
    let route = Destination::new(Ipv4Addr::new(172, 16, 0, 1), 65535, Forward::Route, 0);
    for d in [dest(), tunnel, route] {
        // The request's service nest is ignored: a reply carries only the destination.
        let frame = Request::NewDest(service(), d.clone())
            .frame(FAMILY, 12)
            .unwrap();
        let want = Reply::Destination {
            dest: d,
            conns: ConnCounts::default(),
        };
        assert_eq!(
            parse_datagram(&frame).unwrap(),
            [Incoming {
                seq: 12,
                reply: want
            }]
        );
    }
}

#[test]
fn every_truncation_of_a_dump_is_an_error() {
    assert_eq!(parse_datagram(&[]).unwrap(), []);
    for len in 1..SERVICE_DUMP.len() {
        let result = parse_datagram(&SERVICE_DUMP[..len]);
        if len == 168 {
            assert_eq!(result.unwrap().len(), 1, "the first message ends at 168");
        } else {
            assert!(result.is_err(), "a {len}-byte prefix parsed: {result:?}");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut errors = 0;
    for source in [&SERVICE_DUMP[..], &DEST_ENTRY[..]] {
        for i in 0..source.len() {
            for value in [0x00, 0xff, source[i] ^ 0x80] {
                let mut bytes = source.to_vec();
                bytes[i] = value;
                errors += usize::from(parse_datagram(&bytes).is_err());
            }
        }
    }
    // Lengths, types and fixed-size values are checked, so many corruptions must be caught.
    assert!(errors > 100, "only {errors} corruptions were detected");
}

/// The service entry of [`SERVICE_DUMP`] with the attribute at `offset` (within the message)
/// replaced by `attr`, and both lengths fixed up.
fn service_with(offset: usize, old_len: usize, attr: &[u8]) -> Vec<u8> {
    let message = &SERVICE_DUMP[..168];
    let mut bytes = [&message[..offset], attr, &message[offset + old_len..]].concat();
    let delta = attr.len() as isize - old_len as isize;
    let fix = |bytes: &mut Vec<u8>, at: usize, width: usize| {
        let mut raw = [0u8; 4];
        raw[..width].copy_from_slice(&bytes[at..at + width]);
        let len = (u32::from_le_bytes(raw) as isize + delta) as u32;
        bytes[at..at + width].copy_from_slice(&len.to_le_bytes()[..width]);
    };
    fix(&mut bytes, 0, 4); // nlmsg_len
    fix(&mut bytes, 20, 2); // the service nest's nla_len
    bytes
}

// Offsets into the service message: AF 24, PROTOCOL 32, ADDR 40, PORT 60, SCHED_NAME 68.

#[test]
fn wrong_attribute_sizes_are_errors() {
    let cases: [(&str, usize, usize, &[u8]); 4] = [
        (
            "IPVS_SVC_ATTR_PORT",
            60,
            8,
            &[0x08, 0x00, 0x04, 0x00, 0x00, 0x35, 0x00, 0x00],
        ),
        (
            "IPVS_SVC_ATTR_ADDR",
            40,
            20,
            &[0x07, 0x00, 0x03, 0x00, 10, 0, 0, 0],
        ),
        (
            "IPVS_SVC_ATTR_AF",
            24,
            8,
            &[0x05, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00],
        ),
        (
            "IPVS_SVC_ATTR_SCHED_NAME",
            68,
            8,
            &[0x06, 0x00, 0x06, 0x00, 0xff, 0xfe, 0x00, 0x00],
        ),
    ];
    for (attr, offset, old_len, replacement) in cases {
        match parse_datagram(&service_with(offset, old_len, replacement)) {
            Err(IpvsError::Malformed { context, .. }) => assert_eq!(context, attr),
            other => panic!("{attr}: {other:?}"),
        }
    }
}

#[test]
fn attribute_lengths_that_do_not_fit_are_errors() {
    // SCHED_NAME claims 240 bytes, past the end of its nest.
    let overlong = service_with(68, 8, &[0xf0, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00]);
    // SCHED_NAME claims 2 bytes, less than an attribute header.
    let undersized = service_with(68, 8, &[0x02, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00]);
    for bytes in [overlong, undersized] {
        match parse_datagram(&bytes) {
            Err(IpvsError::Malformed {
                context: "attribute",
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bad_message_lengths_are_errors() {
    let mut long = SERVICE_DUMP[..168].to_vec();
    long[0] = 0xc8; // nlmsg_len 200 > 168 bytes received
    let mut short = SERVICE_DUMP[..168].to_vec();
    short[0] = 0x08; // nlmsg_len 8 < the 16-byte header
    #[rustfmt::skip]
    let no_genl_header: &[u8] = &[
        0x12, 0x00, 0x00, 0x00, 0x25, 0x00, 0x00, 0x00, // nlmsg_len 18
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x01,                     // half a genlmsghdr
    ];
    for bytes in [&long[..], &short[..], no_genl_header, &SERVICE_DUMP[..10]] {
        assert!(
            matches!(parse_datagram(bytes), Err(IpvsError::Malformed { .. })),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn missing_and_unsupported_values_are_errors() {
    // SCHED_NAME replaced by an attribute this parser skips (PE_NAME, type 11).
    let no_sched = service_with(68, 8, &[0x07, 0x00, 0x0b, 0x00, b's', b'i', 0x00, 0x00]);
    assert!(matches!(
        parse_datagram(&no_sched),
        Err(IpvsError::MissingAttribute {
            attr: "IPVS_SVC_ATTR_SCHED_NAME"
        })
    ));
    let inet6 = service_with(24, 8, &[0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00]);
    assert!(matches!(
        parse_datagram(&inet6),
        Err(IpvsError::Unsupported {
            what: "address family",
            value: 10
        })
    ));
    let mut localnode = DEST_ENTRY;
    localnode[56] = 0x01; // FWD_METHOD 1 (IP_VS_CONN_F_LOCALNODE)
    assert!(matches!(
        parse_datagram(&localnode),
        Err(IpvsError::Unsupported {
            what: "forwarding method",
            value: 1
        })
    ));
}
