//! A generic-netlink socket that resolves the IPVS family and runs one request at a time.
//!
//! The socket blocks: the kernel answers a generic-netlink request (and produces each part of a
//! dump) inside the `sendmsg`/`recvmsg` call itself, so a reply is always waiting when it is
//! read. That lets the load balancer program IPVS from synchronous code.

use std::io;

use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

use super::IpvsError;
use super::codec::{Request, get_family_frame};
use super::reply::{Incoming, Reply, parse_datagram};
use super::uapi::IPVS_GENL_NAME;

/// A socket bound to the IPVS family of the network namespace it was opened in (it keeps that
/// namespace wherever it is used from).
pub struct IpvsSocket {
    socket: Socket,
    family: u16,
    seq: u32,
}

impl IpvsSocket {
    /// Opens a socket in the calling thread's network namespace and resolves the family id.
    /// Fails with [`IpvsError::NotAvailable`] when the kernel has no IPVS.
    pub fn open() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let mut this = Self {
            socket,
            family: 0,
            seq: 0,
        };

        let seq = this.next_seq();
        let frame = get_family_frame(IPVS_GENL_NAME, seq);
        let replies = match this.exchange(&frame, Exchange::new(seq, "resolve the IPVS family")) {
            Err(e) if e.errno() == Some(libc::ENOENT) => return Err(IpvsError::NotAvailable),
            other => other?,
        };
        this.family = replies
            .into_iter()
            .find_map(|reply| match reply {
                Reply::Family(family) => Some(family.id),
                _ => None,
            })
            .ok_or(IpvsError::MissingAttribute {
                attr: "CTRL_ATTR_FAMILY_ID",
            })?;
        Ok(this)
    }

    /// The IPVS family's id in this kernel.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Sends `request` and returns what the kernel answered before its ack (or, for a dump,
    /// before `NLMSG_DONE`). A refusal is [`IpvsError::Kernel`] with the errno.
    pub fn execute(&mut self, request: &Request) -> Result<Vec<Reply>, IpvsError> {
        let seq = self.next_seq();
        let frame = request.frame(self.family, seq)?;
        self.exchange(&frame, Exchange::new(seq, request.name()))
    }

    fn exchange(&mut self, frame: &[u8], mut exchange: Exchange) -> Result<Vec<Reply>, IpvsError> {
        let sent = self.socket.send(frame, 0)?;
        if sent != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send").into());
        }
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            for incoming in parse_datagram(&datagram)? {
                if exchange.feed(incoming)? {
                    return Ok(exchange.replies);
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

/// The replies to one request, gathered until the kernel says it is complete. Messages for
/// other sequence numbers (leftovers of an earlier request that failed part way) are dropped.
pub(super) struct Exchange {
    seq: u32,
    request: &'static str,
    pub(super) replies: Vec<Reply>,
}

impl Exchange {
    pub(super) fn new(seq: u32, request: &'static str) -> Self {
        Self {
            seq,
            request,
            replies: Vec::new(),
        }
    }

    /// Takes one message; `Ok(true)` once the request is complete.
    pub(super) fn feed(&mut self, incoming: Incoming) -> Result<bool, IpvsError> {
        if incoming.seq != self.seq {
            return Ok(false);
        }
        match incoming.reply {
            Reply::Ack | Reply::Done => Ok(true),
            Reply::Error { errno } => Err(IpvsError::Kernel {
                request: self.request,
                source: io::Error::from_raw_os_error(errno),
            }),
            reply => {
                self.replies.push(reply);
                Ok(false)
            }
        }
    }
}
