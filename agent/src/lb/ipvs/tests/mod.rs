//! Byte-level tests of the IPVS codec. Netlink integers are in host byte order; the expected
//! bytes are written for the little-endian machines mesh runs on.
#![cfg(target_endian = "little")]

mod backend;
mod replies;
mod requests;
mod socket;

use std::net::Ipv4Addr;

use super::{Destination, Forward, Protocol, Service};

/// The IPVS family id the tests pretend the controller gave.
const FAMILY: u16 = 0x25;

/// TCP 10.0.0.1:80, round robin.
fn service() -> Service {
    Service::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 1), 80, "rr")
}

/// 10.0.1.2:8080, masqueraded, weight 1.
fn dest() -> Destination {
    Destination::new(Ipv4Addr::new(10, 0, 1, 2), 8080, Forward::Masq, 1)
}
