//! [`IpvsLb`] against a fake sandbox table that records every IPVS message, as the bytes the
//! kernel would receive, and every marking rule: programming, re-programming (only the
//! destinations that changed), emptying and removing.

use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::super::{FwmarkPool, IpvsError, IpvsLb, Reply, Request, SandboxTable, SandboxTables};
use super::FAMILY;
use crate::lb::{LoadBalancer, Sandbox};
use crate::netlink::Netns;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Open(u64),
    /// An IPVS request, as the frame the kernel gets.
    Frame(u64, Vec<u8>),
    Mark(u64, Ipv4Addr, u32),
    Unmark(u64, Ipv4Addr, u32),
    ClearMarks(u64),
}

/// What every fake table records, and the kernel refusals to play back.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    /// The next time this request is sent, the kernel refuses it with this errno.
    refusals: Arc<Mutex<Vec<(Request, i32)>>>,
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock().unwrap())
    }

    fn push(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    fn refuse_next(&self, request: Request, errno: i32) {
        self.refusals.lock().unwrap().push((request, errno));
    }
}

struct FakeTables(Recorder);

struct FakeTable {
    cookie: u64,
    seq: u32,
    recorder: Recorder,
}

impl SandboxTables for FakeTables {
    type Table = FakeTable;

    fn open(&mut self, sandbox: &Sandbox) -> Result<FakeTable, IpvsError> {
        self.0.push(Event::Open(sandbox.cookie));
        // The real socket spends sequence number 1 on resolving the family.
        Ok(FakeTable {
            cookie: sandbox.cookie,
            seq: 1,
            recorder: self.0.clone(),
        })
    }
}

impl SandboxTable for FakeTable {
    fn execute(&mut self, request: &Request) -> Result<Vec<Reply>, IpvsError> {
        self.seq += 1;
        let frame = request.frame(FAMILY, self.seq)?;
        self.recorder.push(Event::Frame(self.cookie, frame));
        let mut refusals = self.recorder.refusals.lock().unwrap();
        if let Some(i) = refusals.iter().position(|(r, _)| r == request) {
            let (_, errno) = refusals.remove(i);
            return Err(IpvsError::Kernel {
                request: request.name(),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(Vec::new())
    }

    fn mark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError> {
        self.recorder.push(Event::Mark(self.cookie, vip, mark));
        Ok(())
    }

    fn unmark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError> {
        self.recorder.push(Event::Unmark(self.cookie, vip, mark));
        Ok(())
    }

    fn clear_marks(&mut self) -> Result<(), IpvsError> {
        self.recorder.push(Event::ClearMarks(self.cookie));
        Ok(())
    }
}

/// Frames as one sandbox's table numbers them.
struct Expect {
    cookie: u64,
    seq: u32,
}

impl Expect {
    fn new(cookie: u64) -> Self {
        Self { cookie, seq: 1 }
    }

    fn frame(&mut self, request: Request) -> Event {
        self.seq += 1;
        Event::Frame(self.cookie, request.frame(FAMILY, self.seq).unwrap())
    }

    /// A sandbox's first VIP, up to its mark: the table opened and flushed, the service created
    /// for `MARK` and a destination per task, in order.
    fn first_vip(&mut self, lb: &IpvsLb<FakeTables>, tasks: &[Ipv4Addr]) -> Vec<Event> {
        let mut events = vec![
            Event::Open(self.cookie),
            self.frame(Request::Flush),
            self.frame(Request::NewService(lb.service(MARK))),
        ];
        events.extend(tasks.iter().map(|&t| self.frame(new_dest(lb, MARK, t))));
        events
    }
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const MARK: u32 = 0x100;

fn task(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, n)
}

fn sandbox(cookie: u64) -> Sandbox {
    Sandbox {
        netns: Netns::from_path(format!("/run/netns/fake-{cookie}")),
        cookie,
    }
}

fn balancer() -> (IpvsLb<FakeTables>, Recorder) {
    let recorder = Recorder::default();
    (IpvsLb::new(FakeTables(recorder.clone())), recorder)
}

fn new_dest(lb: &IpvsLb<FakeTables>, mark: u32, addr: Ipv4Addr) -> Request {
    Request::NewDest(lb.service(mark), IpvsLb::<FakeTables>::destination(addr))
}

fn del_dest(lb: &IpvsLb<FakeTables>, mark: u32, addr: Ipv4Addr) -> Request {
    Request::DelDest(lb.service(mark), IpvsLb::<FakeTables>::destination(addr))
}

#[test]
fn the_first_vip_opens_and_flushes_the_sandbox_then_service_destinations_and_mark() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(6), task(5), task(5)]).unwrap();
    let mut want = Expect::new(11).first_vip(&lb, &[task(5), task(6)]);
    want.push(Event::Mark(11, VIP, MARK));
    assert_eq!(rec.take(), want);
    assert_eq!(lb.entries().unwrap(), 3, "one service, two destinations");
    assert_eq!(lb.name(), "ipvs");
}

/// What the kernel receives for a VIP's service and a task destination, written out from the
/// header layouts.
#[test]
fn the_service_is_a_round_robin_fwmark_service_and_tasks_keep_the_port() {
    let (mut lb, rec) = balancer();
    lb.set_vip(&sandbox(11), VIP, &[task(5)]).unwrap();
    let frames: Vec<Vec<u8>> = rec
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Frame(_, frame) => Some(frame),
            _ => None,
        })
        .collect();
    #[rustfmt::skip]
    let new_service: &[u8] = &[
        0x4c, 0x00, 0x00, 0x00,         // nlmsg_len 76
        0x25, 0x00, 0x05, 0x00,         // the IPVS family, REQUEST | ACK
        0x03, 0x00, 0x00, 0x00,         // seq 3 (2 was the flush)
        0x00, 0x00, 0x00, 0x00,         // pid 0
        0x01, 0x01, 0x00, 0x00,         // IPVS_CMD_NEW_SERVICE, version 1
        0x38, 0x00, 0x01, 0x80,         // len 56, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF: AF_INET
        0x08, 0x00, 0x05, 0x00, 0x00, 0x01, 0x00, 0x00, // FWMARK: 0x100
        0x07, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00, // SCHED_NAME: "rr"
        0x0c, 0x00, 0x07, 0x00,         // FLAGS
        0x00, 0x00, 0x00, 0x00,         //   none
        0xff, 0xff, 0xff, 0xff,         //   mask: all
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // TIMEOUT: 0
        0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, // NETMASK: /32
    ];
    #[rustfmt::skip]
    let new_dest: &[u8] = &[
        0x70, 0x00, 0x00, 0x00,         // nlmsg_len 112
        0x25, 0x00, 0x05, 0x00,
        0x04, 0x00, 0x00, 0x00,         // seq 4
        0x00, 0x00, 0x00, 0x00,
        0x05, 0x01, 0x00, 0x00,         // IPVS_CMD_NEW_DEST, version 1
        0x14, 0x00, 0x01, 0x80,         // len 20, the service's identity: its mark
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF: AF_INET
        0x08, 0x00, 0x05, 0x00, 0x00, 0x01, 0x00, 0x00, // FWMARK: 0x100
        0x48, 0x00, 0x02, 0x80,         // len 72, IPVS_CMD_ATTR_DEST | NLA_F_NESTED
        0x14, 0x00, 0x01, 0x00,         // ADDR: 10.0.1.5
        10, 0, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // PORT: 0, the client's port
        0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, // ADDR_FAMILY: AF_INET
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // FWD_METHOD: masquerade
        0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // WEIGHT: 1
        0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, // U_THRESH: none
        0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // L_THRESH: none
    ];
    assert_eq!(frames.len(), 3, "flush, service, destination");
    assert_eq!(frames[1], new_service);
    assert_eq!(frames[2], new_dest);
}

#[test]
fn reprogramming_adds_then_deletes_only_what_changed() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5), task(6)]).unwrap();
    rec.take();
    let mut want = Expect::new(11);
    want.seq += 4; // flush, service, two destinations

    lb.set_vip(&sb, VIP, &[task(6), task(7)]).unwrap();
    assert_eq!(
        rec.take(),
        [
            want.frame(new_dest(&lb, MARK, task(7))),
            want.frame(del_dest(&lb, MARK, task(5))),
        ]
    );
    lb.set_vip(&sb, VIP, &[task(7), task(6)]).unwrap();
    assert_eq!(
        rec.take(),
        [],
        "the same set in another order changes nothing"
    );
    assert_eq!(lb.entries().unwrap(), 3);
}

#[test]
fn an_emptied_vip_keeps_its_service_and_mark() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5), task(6)]).unwrap();
    rec.take();
    let mut want = Expect::new(11);
    want.seq += 4;

    lb.set_vip(&sb, VIP, &[]).unwrap();
    assert_eq!(
        rec.take(),
        [
            want.frame(del_dest(&lb, MARK, task(5))),
            want.frame(del_dest(&lb, MARK, task(6))),
        ]
    );
    assert_eq!(lb.entries().unwrap(), 1, "the service refuses connections");
    assert_eq!(lb.mark_of(VIP), Some(MARK));

    lb.set_vip(&sb, VIP, &[task(8)]).unwrap();
    assert_eq!(rec.take(), [want.frame(new_dest(&lb, MARK, task(8)))]);
}

#[test]
fn a_new_empty_vip_is_a_service_without_destinations() {
    let (mut lb, rec) = balancer();
    lb.set_vip(&sandbox(11), VIP, &[]).unwrap();
    let mut want = Expect::new(11).first_vip(&lb, &[]);
    want.push(Event::Mark(11, VIP, MARK));
    assert_eq!(rec.take(), want);
}

#[test]
fn removing_a_vip_unmarks_it_then_deletes_its_service_and_frees_the_mark() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    rec.take();
    let mut want = Expect::new(11);
    want.seq += 3;

    lb.remove_vip(&sb, VIP).unwrap();
    assert_eq!(
        rec.take(),
        [
            Event::Unmark(11, VIP, MARK),
            want.frame(Request::DelService(lb.service(MARK))),
        ]
    );
    assert_eq!(lb.entries().unwrap(), 0);
    assert_eq!(lb.mark_of(VIP), None);
    lb.remove_vip(&sb, VIP).unwrap();
    lb.remove_vip(&sandbox(12), VIP).unwrap();
    assert_eq!(rec.take(), [], "nothing set, nothing to do");
}

#[test]
fn removing_a_vip_whose_service_is_gone_already_is_done() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    rec.refuse_next(Request::DelService(lb.service(MARK)), libc::ESRCH);
    lb.remove_vip(&sb, VIP).unwrap();
    assert_eq!(lb.entries().unwrap(), 0);
    assert_eq!(lb.mark_of(VIP), None);
}

#[test]
fn a_vip_whose_service_cannot_be_deleted_keeps_its_mark() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    rec.refuse_next(Request::DelService(lb.service(MARK)), libc::EBUSY);
    let err = lb.remove_vip(&sb, VIP).unwrap_err();
    assert!(err.to_string().contains("delete service"), "{err}");
    assert_eq!(lb.mark_of(VIP), Some(MARK), "the kernel may still hold it");
    assert_eq!(lb.entries().unwrap(), 2);
}

#[test]
fn removing_a_sandbox_clears_marks_flushes_and_frees_its_marks() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    lb.set_vip(&sb, VIP2, &[task(6)]).unwrap();
    rec.take();
    let mut want = Expect::new(11);
    want.seq += 5; // flush, two services, two destinations

    lb.remove_sandbox(&sb).unwrap();
    assert_eq!(
        rec.take(),
        [Event::ClearMarks(11), want.frame(Request::Flush)]
    );
    assert_eq!(lb.entries().unwrap(), 0);
    assert_eq!((lb.mark_of(VIP), lb.mark_of(VIP2)), (None, None));
    lb.remove_sandbox(&sb).unwrap();
    assert_eq!(rec.take(), []);

    // Coming back, the sandbox is opened (and flushed) afresh.
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    assert_eq!(
        rec.take()[..2],
        [Event::Open(11), Expect::new(11).frame(Request::Flush)]
    );
}

#[test]
fn sandboxes_share_a_vips_mark_and_each_has_its_own_table() {
    let (mut lb, rec) = balancer();
    let (a, b) = (sandbox(11), sandbox(12));
    lb.set_vip(&a, VIP, &[task(5)]).unwrap();
    lb.set_vip(&b, VIP, &[task(5), task(6)]).unwrap();
    lb.set_vip(&b, VIP2, &[task(7)]).unwrap();
    let events = rec.take();
    assert!(events.contains(&Event::Mark(11, VIP, MARK)));
    assert!(events.contains(&Event::Mark(12, VIP, MARK)));
    assert!(events.contains(&Event::Mark(12, VIP2, MARK + 1)));
    assert_eq!(lb.entries().unwrap(), 2 + 3 + 2);

    // One sandbox going leaves the VIP's mark to the other.
    lb.remove_sandbox(&b).unwrap();
    assert_eq!(lb.mark_of(VIP), Some(MARK));
    assert_eq!(lb.mark_of(VIP2), None);
    lb.set_vip(&a, VIP2, &[task(7)]).unwrap();
    assert_eq!(
        lb.mark_of(VIP2),
        Some(MARK + 2),
        "the freed mark is not reused at once"
    );
}

#[test]
fn a_failed_destination_rolls_the_new_vip_back() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    rec.refuse_next(new_dest(&lb, MARK, task(6)), libc::EINVAL);
    let err = lb.set_vip(&sb, VIP, &[task(5), task(6)]).unwrap_err();
    assert!(err.to_string().contains("add destination"), "{err}");
    let mut expect = Expect::new(11);
    let mut want = expect.first_vip(&lb, &[task(5), task(6)]);
    want.push(expect.frame(Request::DelService(lb.service(MARK))));
    assert_eq!(
        rec.take(),
        want,
        "no mark: no traffic ever reached the half-made service"
    );
    assert_eq!(lb.entries().unwrap(), 0);
    assert_eq!(lb.mark_of(VIP), None);
}

#[test]
fn a_failed_change_keeps_what_took_effect() {
    let (mut lb, rec) = balancer();
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    rec.refuse_next(del_dest(&lb, MARK, task(5)), libc::EBUSY);
    assert!(lb.set_vip(&sb, VIP, &[task(6)]).is_err());
    assert_eq!(lb.entries().unwrap(), 3, "task 6 added, task 5 still there");
    rec.take();
    // The next change deletes task 5 again and adds nothing twice.
    lb.set_vip(&sb, VIP, &[task(6)]).unwrap();
    let mut want = Expect::new(11);
    want.seq += 5;
    assert_eq!(rec.take(), [want.frame(del_dest(&lb, MARK, task(5)))]);
}

#[test]
fn marks_run_out_as_an_error_not_a_reuse() {
    let recorder = Recorder::default();
    let pool = FwmarkPool::with_range(MARK, MARK);
    let mut lb = IpvsLb::with(FakeTables(recorder.clone()), "mh", pool);
    let sb = sandbox(11);
    lb.set_vip(&sb, VIP, &[task(5)]).unwrap();
    let err = lb.set_vip(&sb, VIP2, &[task(6)]).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(lb.entries().unwrap(), 2);
    // Maglev hashing spreads a sandbox's connections by source port and falls back when its
    // choice is gone.
    let service = lb.service(MARK);
    assert_eq!(
        (service.scheduler.as_str(), service.flags.bits()),
        ("mh", 0x18)
    );
}

#[test]
fn the_backend_works_through_the_trait_object() {
    let recorder = Recorder::default();
    let mut lb: Box<dyn LoadBalancer> = Box::new(IpvsLb::new(FakeTables(recorder.clone())));
    lb.set_vip(&sandbox(11), VIP, &[task(5)]).unwrap();
    assert_eq!((lb.name(), lb.entries().unwrap()), ("ipvs", 2));
    lb.remove_sandbox(&sandbox(11)).unwrap();
    assert_eq!(lb.entries().unwrap(), 0);
}
