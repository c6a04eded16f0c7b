//! Sockets that live in another network namespace (a task's sandbox): made on a thread that
//! entered it, then used from anywhere; a socket stays in the namespace it was created in.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};

use super::real::on_own_thread;
use super::{NetlinkError, Netns, Result, sys};

/// A UDP socket bound to `addr` inside `ns`, non-blocking (ready for tokio).
pub async fn bind_udp(ns: &Netns, addr: SocketAddr) -> Result<UdpSocket> {
    let file = File::open(ns.path()).map_err(|e| NetlinkError::io("open netns", ns, e))?;
    on_own_thread("bind udp socket", format!("{addr} in {ns}"), move || {
        sys::setns_net(&file)?;
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
    .await
}
