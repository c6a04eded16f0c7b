//! Sockets that live in another network namespace (a task's sandbox): made on a thread that
//! entered it, then used from anywhere; a socket stays in the namespace it was created in.

use std::net::{SocketAddr, UdpSocket};

use super::real::{on_own_thread, open_netns};
use super::{NetlinkError, Netns, Result, sys};

/// A UDP socket bound to `addr` inside `ns`, non-blocking (ready for tokio).
pub async fn bind_udp(ns: &Netns, addr: SocketAddr) -> Result<UdpSocket> {
    let file = open_netns("open netns", ns)?;
    on_own_thread("bind udp socket", format!("{addr} in {ns}"), move || {
        sys::setns_net(&file)?;
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
    .await
}

/// Runs `f` on a short-lived thread that entered `ns` and waits for it, for callers that cannot
/// await: what `f` creates there (a socket, a child process) belongs to `ns`, while the calling
/// thread never changes namespace.
pub fn run_in_netns<T, F>(ns: &Netns, op: &'static str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = open_netns(op, ns)?;
    let joined = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("mesh-netns".into())
            .spawn_scoped(scope, move || -> std::io::Result<T> {
                sys::setns_net(&file)?;
                Ok(f())
            })
            .map(|thread| thread.join())
    });
    match joined {
        Ok(Ok(entered)) => entered.map_err(|e| NetlinkError::io(op, ns, e)),
        Ok(Err(_panicked)) => Err(NetlinkError::Other {
            op,
            target: ns.to_string(),
            reason: "namespace thread panicked".into(),
        }),
        Err(e) => Err(NetlinkError::io(op, ns, e)),
    }
}
