//! Requests, byte for byte as `ip_vs_ctl.c` and the genetlink controller parse them. The expected
//! frames are written out from the header layouts, not produced by the encoder.

use std::net::Ipv4Addr;

use super::super::{Destination, Forward, IpvsError, Protocol, Request, Service, ServiceFlags};
use super::super::{IPVS_GENL_NAME, get_family_frame};
use super::{FAMILY, dest, service};

/// `IPVS_CMD_ATTR_SERVICE` holding only the identity of TCP 10.0.0.1:80 (48 bytes).
#[rustfmt::skip]
const SERVICE_ID_NEST: [u8; 48] = [
    0x30, 0x00, 0x01, 0x80,             // nla_len 48, nla_type IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00,             //   len 6, IPVS_SVC_ATTR_AF
    0x02, 0x00, 0x00, 0x00,             //     AF_INET (u16) + 2 bytes padding
    0x06, 0x00, 0x02, 0x00,             //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x06, 0x00, 0x00, 0x00,             //     IPPROTO_TCP (u16) + padding
    0x14, 0x00, 0x03, 0x00,             //   len 20, IPVS_SVC_ATTR_ADDR (union nf_inet_addr)
    10, 0, 0, 1,                        //     10.0.0.1
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //     rest of the 16-byte union
    0x06, 0x00, 0x04, 0x00,             //   len 6, IPVS_SVC_ATTR_PORT
    0x00, 0x50, 0x00, 0x00,             //     80 in network byte order + padding
];

/// `IPVS_CMD_ATTR_DEST` identity of 10.0.1.2:8080 (40 bytes).
#[rustfmt::skip]
const DEST_ID_NEST: [u8; 40] = [
    0x28, 0x00, 0x02, 0x80,             // nla_len 40, IPVS_CMD_ATTR_DEST | NLA_F_NESTED
    0x14, 0x00, 0x01, 0x00,             //   len 20, IPVS_DEST_ATTR_ADDR
    10, 0, 1, 2,                        //     10.0.1.2
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //     rest of the union
    0x06, 0x00, 0x02, 0x00,             //   len 6, IPVS_DEST_ATTR_PORT
    0x1f, 0x90, 0x00, 0x00,             //     8080 in network byte order + padding
    0x06, 0x00, 0x0b, 0x00,             //   len 6, IPVS_DEST_ATTR_ADDR_FAMILY
    0x02, 0x00, 0x00, 0x00,             //     AF_INET + padding
];

#[test]
fn new_service_frame() {
    let mut svc = service();
    svc.scheduler = "mh".into();
    svc.flags = ServiceFlags::SCHED_1 | ServiceFlags::SCHED_2;
    #[rustfmt::skip]
    let want: &[u8] = &[
        // nlmsghdr
        0x68, 0x00, 0x00, 0x00,         // nlmsg_len 104
        0x25, 0x00,                     // nlmsg_type: the IPVS family id
        0x05, 0x00,                     // NLM_F_REQUEST | NLM_F_ACK
        0x01, 0x00, 0x00, 0x00,         // nlmsg_seq 1
        0x00, 0x00, 0x00, 0x00,         // nlmsg_pid 0 (the kernel)
        // genlmsghdr
        0x01, 0x01, 0x00, 0x00,         // IPVS_CMD_NEW_SERVICE, version 1, reserved
        0x54, 0x00, 0x01, 0x80,         // len 84, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF: AF_INET
        0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, // PROTOCOL: TCP
        0x14, 0x00, 0x03, 0x00,         // ADDR
        10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x04, 0x00, 0x00, 0x50, 0x00, 0x00, // PORT: 80, big-endian
        0x07, 0x00, 0x06, 0x00,         // len 7, SCHED_NAME
        b'm', b'h', 0x00, 0x00,         //   "mh\0" + 1 byte padding
        0x0c, 0x00, 0x07, 0x00,         // len 12, FLAGS (struct ip_vs_flags)
        0x18, 0x00, 0x00, 0x00,         //   flags: SCHED1 | SCHED2
        0xff, 0xff, 0xff, 0xff,         //   mask: all
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // TIMEOUT: 0 s
        0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, // NETMASK: 255.255.255.255
    ];
    assert_eq!(Request::NewService(svc).frame(FAMILY, 1).unwrap(), want);
}

#[test]
fn set_service_differs_from_new_only_in_command() {
    let new = Request::NewService(service()).frame(FAMILY, 1).unwrap();
    let set = Request::SetService(service()).frame(FAMILY, 1).unwrap();
    assert_eq!(new.len(), set.len());
    assert_eq!((new[16], set[16]), (0x01, 0x02)); // IPVS_CMD_NEW_SERVICE, IPVS_CMD_SET_SERVICE
    assert_eq!(new[17..], set[17..]);
}

#[test]
fn new_dest_frame() {
    #[rustfmt::skip]
    let header: &[u8] = &[
        0x8c, 0x00, 0x00, 0x00,         // nlmsg_len 140
        0x25, 0x00, 0x05, 0x00,         // IPVS family, REQUEST | ACK
        0x02, 0x00, 0x00, 0x00,         // seq 2
        0x00, 0x00, 0x00, 0x00,         // pid 0
        0x05, 0x01, 0x00, 0x00,         // IPVS_CMD_NEW_DEST, version 1
    ];
    #[rustfmt::skip]
    let dest_nest: &[u8] = &[
        0x48, 0x00, 0x02, 0x80,         // len 72, IPVS_CMD_ATTR_DEST | NLA_F_NESTED
        0x14, 0x00, 0x01, 0x00,         // ADDR
        10, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00, // PORT: 8080, big-endian
        0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, // ADDR_FAMILY: AF_INET
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // FWD_METHOD: IP_VS_CONN_F_MASQ
        0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // WEIGHT: 1
        0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, // U_THRESH: 0 (no limit)
        0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // L_THRESH: 0
    ];
    let want = [header, &SERVICE_ID_NEST, dest_nest].concat();
    assert_eq!(
        Request::NewDest(service(), dest())
            .frame(FAMILY, 2)
            .unwrap(),
        want
    );
}

#[test]
fn set_dest_carries_weight_and_forwarding() {
    let mut d = dest();
    d.weight = 0;
    d.forward = Forward::Route;
    let frame = Request::SetDest(service(), d).frame(FAMILY, 2).unwrap();
    assert_eq!(frame[16], 0x06); // IPVS_CMD_SET_DEST
    // The dest nest starts after nlmsghdr, genlmsghdr and the service nest; FWD_METHOD's value
    // is at offset 4 + 20 + 8 + 8 + 4 into it, WEIGHT's 8 bytes after that.
    let nest = 16 + 4 + 48;
    assert_eq!(frame[nest + 44..nest + 48], [0x03, 0, 0, 0]); // IP_VS_CONN_F_DROUTE
    assert_eq!(frame[nest + 52..nest + 56], [0, 0, 0, 0]);
}

#[test]
fn del_dest_frame_sends_identities_only() {
    #[rustfmt::skip]
    let header: &[u8] = &[
        0x6c, 0x00, 0x00, 0x00,         // nlmsg_len 108
        0x25, 0x00, 0x05, 0x00,         // IPVS family, REQUEST | ACK
        0x03, 0x00, 0x00, 0x00,         // seq 3
        0x00, 0x00, 0x00, 0x00,
        0x07, 0x01, 0x00, 0x00,         // IPVS_CMD_DEL_DEST, version 1
    ];
    let want = [header, &SERVICE_ID_NEST, &DEST_ID_NEST].concat();
    assert_eq!(
        Request::DelDest(service(), dest())
            .frame(FAMILY, 3)
            .unwrap(),
        want
    );
}

#[test]
fn del_service_frame() {
    #[rustfmt::skip]
    let header: &[u8] = &[
        0x44, 0x00, 0x00, 0x00,         // nlmsg_len 68
        0x25, 0x00, 0x05, 0x00,         // IPVS family, REQUEST | ACK
        0x04, 0x00, 0x00, 0x00,         // seq 4
        0x00, 0x00, 0x00, 0x00,
        0x03, 0x01, 0x00, 0x00,         // IPVS_CMD_DEL_SERVICE, version 1
    ];
    let want = [header, &SERVICE_ID_NEST].concat();
    // The scheduler is not part of the identity, so even an invalid one does not matter here.
    let mut svc = service();
    svc.scheduler = String::new();
    assert_eq!(Request::DelService(svc).frame(FAMILY, 4).unwrap(), want);
}

#[test]
fn fwmark_service_is_identified_by_its_mark_alone() {
    let mut svc = service();
    svc.fwmark = Some(7);
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x28, 0x00, 0x00, 0x00,         // nlmsg_len 40
        0x25, 0x00, 0x05, 0x00,
        0x09, 0x00, 0x00, 0x00,         // seq 9
        0x00, 0x00, 0x00, 0x00,
        0x03, 0x01, 0x00, 0x00,         // IPVS_CMD_DEL_SERVICE
        0x14, 0x00, 0x01, 0x80,         // len 20, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF_INET
        0x08, 0x00, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00, // FWMARK: 7 (host order)
    ];
    assert_eq!(Request::DelService(svc).frame(FAMILY, 9).unwrap(), want);
}

#[test]
fn attribute_free_requests() {
    #[rustfmt::skip]
    let flush: &[u8] = &[
        0x14, 0x00, 0x00, 0x00,         // nlmsg_len 20: headers only
        0x25, 0x00, 0x05, 0x00,         // REQUEST | ACK
        0x05, 0x00, 0x00, 0x00,         // seq 5
        0x00, 0x00, 0x00, 0x00,
        0x11, 0x01, 0x00, 0x00,         // IPVS_CMD_FLUSH, version 1
    ];
    #[rustfmt::skip]
    let get_services: &[u8] = &[
        0x14, 0x00, 0x00, 0x00,
        0x25, 0x00, 0x05, 0x03,         // REQUEST | ACK | NLM_F_DUMP (ROOT | MATCH)
        0x06, 0x00, 0x00, 0x00,         // seq 6
        0x00, 0x00, 0x00, 0x00,
        0x04, 0x01, 0x00, 0x00,         // IPVS_CMD_GET_SERVICE
    ];
    #[rustfmt::skip]
    let get_info: &[u8] = &[
        0x14, 0x00, 0x00, 0x00,
        0x25, 0x00, 0x05, 0x00,         // REQUEST | ACK: GET_INFO has no dump handler
        0x07, 0x00, 0x00, 0x00,         // seq 7
        0x00, 0x00, 0x00, 0x00,
        0x0f, 0x01, 0x00, 0x00,         // IPVS_CMD_GET_INFO
    ];
    assert_eq!(Request::Flush.frame(FAMILY, 5).unwrap(), flush);
    assert_eq!(Request::GetServices.frame(FAMILY, 6).unwrap(), get_services);
    assert_eq!(Request::GetInfo.frame(FAMILY, 7).unwrap(), get_info);
}

#[test]
fn get_dests_is_a_dump_for_one_service() {
    #[rustfmt::skip]
    let header: &[u8] = &[
        0x44, 0x00, 0x00, 0x00,         // nlmsg_len 68
        0x25, 0x00, 0x05, 0x03,         // REQUEST | ACK | DUMP
        0x08, 0x00, 0x00, 0x00,         // seq 8
        0x00, 0x00, 0x00, 0x00,
        0x08, 0x01, 0x00, 0x00,         // IPVS_CMD_GET_DEST
    ];
    let want = [header, &SERVICE_ID_NEST].concat();
    assert_eq!(Request::GetDests(service()).frame(FAMILY, 8).unwrap(), want);
}

#[test]
fn get_family_frame_asks_the_controller_for_ipvs() {
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x20, 0x00, 0x00, 0x00,         // nlmsg_len 32
        0x10, 0x00,                     // GENL_ID_CTRL
        0x05, 0x00,                     // REQUEST | ACK
        0x07, 0x00, 0x00, 0x00,         // seq 7
        0x00, 0x00, 0x00, 0x00,
        0x03, 0x02, 0x00, 0x00,         // CTRL_CMD_GETFAMILY, controller version 2
        0x09, 0x00, 0x02, 0x00,         // len 9, CTRL_ATTR_FAMILY_NAME
        b'I', b'P', b'V', b'S',
        0x00, 0x00, 0x00, 0x00,         // NUL + 3 bytes padding
    ];
    assert_eq!(get_family_frame(IPVS_GENL_NAME, 7), want);
}

#[test]
fn payload_is_the_frame_without_nlmsghdr() {
    let request = Request::NewDest(service(), dest());
    let frame = request.frame(FAMILY, 1).unwrap();
    assert_eq!(request.payload().unwrap(), frame[16..]);
}

#[test]
fn scheduler_names_the_kernel_would_reject_are_refused() {
    for bad in ["", "sixteen_bytes_xx", "r\0r"] {
        let mut svc = service();
        svc.scheduler = bad.into();
        for request in [Request::NewService(svc.clone()), Request::SetService(svc)] {
            match request.frame(FAMILY, 1) {
                Err(IpvsError::InvalidScheduler { name }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
    let mut svc = service();
    svc.scheduler = "fifteen_bytes_x".into();
    assert!(Request::NewService(svc).frame(FAMILY, 1).is_ok());
}

#[test]
fn udp_and_sctp_services_carry_their_protocol_numbers() {
    for (protocol, number) in [(Protocol::Udp, 17u8), (Protocol::Sctp, 132)] {
        let svc = Service::new(protocol, Ipv4Addr::new(10, 0, 0, 1), 80, "rr");
        let frame = Request::DelService(svc).frame(FAMILY, 1).unwrap();
        // nlmsghdr, genlmsghdr, nest header, AF (8 bytes), then PROTOCOL's header.
        assert_eq!(frame[16 + 4 + 4 + 8 + 4..][..2], [number, 0]);
    }
}

#[test]
fn destination_defaults() {
    let d = Destination::new(Ipv4Addr::new(10, 0, 1, 2), 8080, Forward::Masq, 1);
    assert_eq!((d.upper_threshold, d.lower_threshold), (0, 0));
    let s = Service::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 1), 80, "rr");
    assert_eq!(
        (s.fwmark, s.flags, s.timeout),
        (None, ServiceFlags::empty(), 0)
    );
    assert_eq!(s.netmask, Ipv4Addr::BROADCAST);
}
