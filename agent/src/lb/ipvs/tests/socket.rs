//! The request/reply bookkeeping of [`IpvsSocket`], and its family lookup against this kernel.

use std::path::Path;

use super::super::socket::Exchange;
use super::super::{Incoming, IpvsError, IpvsSocket, Reply};
use super::service;

fn incoming(seq: u32, reply: Reply) -> Incoming {
    Incoming { seq, reply }
}

#[test]
fn a_request_completes_at_its_ack_keeping_earlier_replies() {
    let mut exchange = Exchange::new(7, "list services");
    let svc = Reply::Service(service());
    assert!(
        !exchange.feed(incoming(6, Reply::Ack)).unwrap(),
        "another request's ack"
    );
    assert!(!exchange.feed(incoming(7, svc.clone())).unwrap());
    assert!(
        !exchange
            .feed(incoming(
                6,
                Reply::Error {
                    errno: libc::EEXIST
                }
            ))
            .unwrap()
    );
    assert!(exchange.feed(incoming(7, Reply::Ack)).unwrap());
    assert_eq!(exchange.replies, [svc]);
}

#[test]
fn a_dump_completes_at_done() {
    let mut exchange = Exchange::new(3, "list services");
    for _ in 0..2 {
        assert!(
            !exchange
                .feed(incoming(3, Reply::Service(service())))
                .unwrap()
        );
    }
    assert!(exchange.feed(incoming(3, Reply::Done)).unwrap());
    assert_eq!(exchange.replies.len(), 2);
}

#[test]
fn a_refusal_is_a_kernel_error_with_errno() {
    let mut exchange = Exchange::new(2, "add service");
    let err = exchange
        .feed(incoming(
            2,
            Reply::Error {
                errno: libc::EEXIST,
            },
        ))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST));
    assert!(
        err.to_string()
            .starts_with("the kernel refused to add service: "),
        "{err}"
    );
}

/// Asks this kernel's generic-netlink controller for "IPVS" (no privilege needed). Where
/// `/proc/net/ip_vs` is absent (as on the development machines) the lookup must fail with
/// `NotAvailable`; where it exists, it must resolve to a dynamic family id.
#[test]
fn open_resolves_the_family_or_reports_ipvs_missing() {
    let present = Path::new("/proc/net/ip_vs").exists();
    match IpvsSocket::open() {
        Ok(socket) => {
            assert!(present, "IPVS resolved but /proc/net/ip_vs is absent");
            assert!(socket.family_id() > 0x10, "id {}", socket.family_id());
        }
        Err(err) => {
            assert!(!present, "IPVS is present but opening failed: {err}");
            assert!(matches!(err, IpvsError::NotAvailable), "{err:?}");
            assert_eq!(
                err.to_string(),
                "IPVS is not available in this kernel (/proc/net/ip_vs is absent)"
            );
        }
    }
}
