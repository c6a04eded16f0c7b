//! Firewall marks for VIPs: one per VIP on this node, the same in every sandbox that balances it,
//! and never handed to another VIP while any sandbox still holds it.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::IpvsError;

/// The first mark handed out; lower ones are left to whatever else marks packets (Swarm starts
/// its marks at 256 too).
pub const FIRST_MARK: u32 = 0x100;
/// The last mark handed out; the top bits are left free for others' masks.
pub const LAST_MARK: u32 = 0x0fff_ffff;

/// Hands out marks in turn, so that a released mark comes back only after the whole range has
/// gone round: a rule or service some failed teardown left behind is unlikely to meet its mark
/// again soon.
#[derive(Debug)]
pub struct FwmarkPool {
    first: u32,
    last: u32,
    next: u32,
    by_vip: HashMap<Ipv4Addr, Held>,
    live: HashSet<u32>,
}

#[derive(Debug)]
struct Held {
    mark: u32,
    users: usize,
}

impl Default for FwmarkPool {
    fn default() -> Self {
        Self::with_range(FIRST_MARK, LAST_MARK)
    }
}

impl FwmarkPool {
    /// A pool of the marks `first..=last`. Mark 0 means "no mark" and is never handed out.
    pub fn with_range(first: u32, last: u32) -> Self {
        let first = first.max(1);
        Self {
            first,
            last: last.max(first),
            next: first,
            by_vip: HashMap::new(),
            live: HashSet::new(),
        }
    }

    /// The mark of `vip` for one more user: the one it holds already, or the next free one.
    pub fn acquire(&mut self, vip: Ipv4Addr) -> Result<u32, IpvsError> {
        if let Some(held) = self.by_vip.get_mut(&vip) {
            held.users += 1;
            return Ok(held.mark);
        }
        let size = u64::from(self.last - self.first) + 1;
        if self.live.len() as u64 >= size {
            return Err(IpvsError::MarksExhausted {
                first: self.first,
                last: self.last,
            });
        }
        // Some mark is free, so this ends within `live.len() + 1` steps.
        let mark = loop {
            let candidate = self.next;
            self.next = if candidate == self.last {
                self.first
            } else {
                candidate + 1
            };
            if !self.live.contains(&candidate) {
                break candidate;
            }
        };
        self.live.insert(mark);
        self.by_vip.insert(vip, Held { mark, users: 1 });
        Ok(mark)
    }

    /// One user of `vip` is done with its mark; after the last, the mark is free again.
    pub fn release(&mut self, vip: Ipv4Addr) {
        let Some(held) = self.by_vip.get_mut(&vip) else {
            return;
        };
        held.users -= 1;
        if held.users == 0 {
            self.live.remove(&held.mark);
            self.by_vip.remove(&vip);
        }
    }

    /// The mark `vip` holds, if any.
    pub fn mark_of(&self, vip: Ipv4Addr) -> Option<u32> {
        self.by_vip.get(&vip).map(|held| held.mark)
    }

    /// How many marks are held.
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn a_vip_keeps_its_mark_until_its_last_user_releases_it() {
        let mut pool = FwmarkPool::default();
        let a = pool.acquire(vip(1)).unwrap();
        assert_eq!(a, FIRST_MARK);
        assert_eq!(
            pool.acquire(vip(1)).unwrap(),
            a,
            "a second sandbox, same VIP"
        );
        let b = pool.acquire(vip(2)).unwrap();
        assert_ne!(a, b);
        pool.release(vip(1));
        assert_eq!(pool.mark_of(vip(1)), Some(a), "one user left");
        pool.release(vip(1));
        assert_eq!(pool.mark_of(vip(1)), None);
        assert_eq!(pool.live(), 1);
        pool.release(vip(1)); // no user left: nothing happens
        assert_eq!(pool.live(), 1);
    }

    #[test]
    fn released_marks_come_back_only_after_the_range_goes_round() {
        let mut pool = FwmarkPool::with_range(1, 3);
        assert_eq!(pool.acquire(vip(1)).unwrap(), 1);
        assert_eq!(pool.acquire(vip(2)).unwrap(), 2);
        pool.release(vip(1));
        assert_eq!(pool.acquire(vip(3)).unwrap(), 3, "not 1, released just now");
        assert_eq!(
            pool.acquire(vip(4)).unwrap(),
            1,
            "wrapped round: 2 and 3 are live"
        );
        let err = pool.acquire(vip(5)).unwrap_err();
        assert!(matches!(
            err,
            IpvsError::MarksExhausted { first: 1, last: 3 }
        ));
        pool.release(vip(3));
        assert_eq!(pool.acquire(vip(5)).unwrap(), 3, "the only free mark");
    }

    #[test]
    fn mark_zero_is_never_handed_out() {
        let mut pool = FwmarkPool::with_range(0, 1);
        assert_eq!(pool.acquire(vip(1)).unwrap(), 1);
        assert!(pool.acquire(vip(2)).is_err());
    }

    /// Random acquires and releases over a small range, wrapping many times: a live mark is never
    /// given to a second VIP, and a VIP's mark never changes while it is held.
    #[test]
    fn a_live_mark_is_never_handed_to_another_vip() {
        let mut pool = FwmarkPool::with_range(FIRST_MARK, FIRST_MARK + 7);
        let mut held: HashMap<Ipv4Addr, (u32, usize)> = HashMap::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut handed_out = 0;
        for _ in 0..20_000 {
            let v = vip((next() % 12) as u8 + 1);
            if next() % 2 == 0 {
                match pool.acquire(v) {
                    Ok(mark) => {
                        handed_out += 1;
                        let entry = held.entry(v).or_insert((mark, 0));
                        assert_eq!(entry.0, mark, "{v} changed mark while held");
                        entry.1 += 1;
                        let owners = held.values().filter(|(m, _)| *m == mark).count();
                        assert_eq!(owners, 1, "mark {mark:#x} given to two VIPs");
                    }
                    Err(IpvsError::MarksExhausted { .. }) => {
                        assert_eq!(held.len(), 8, "exhausted with a free mark");
                    }
                    Err(other) => panic!("{other}"),
                }
            } else if let Some(entry) = held.get_mut(&v) {
                pool.release(v);
                entry.1 -= 1;
                if entry.1 == 0 {
                    held.remove(&v);
                }
            }
            assert_eq!(pool.live(), held.len());
        }
        assert!(handed_out > 1_000, "{handed_out}");
    }
}
