//! Service VIPs for this node's tasks: for each local sandbox, every service with a virtual IP on
//! a network the task shares is programmed into the eBPF socket load balancer (any port of the
//! VIP, TCP and UDP, to the same port of one of the service's running tasks). Re-synced whenever
//! the endpoint table changes, so a task that stops leaves every sandbox's backends at once.
//!
//! A VIP whose last task went stays programmed without backends for [`EMPTY_GRACE`], so that a
//! service scaled to 0 refuses connections at once instead of leaving them to time out; then it
//! goes too (the service may have been removed).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::dns::Directory;
use crate::lb::ebpf::{LbError, Protocol, SockLb};
use crate::netlink::{NetlinkError, Netns, netns_cookie};

/// What is programmed for one sandbox: backends by VIP.
type Programmed = BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>;

/// How long a VIP without tasks keeps refusing connections before its entries go.
pub const EMPTY_GRACE: Duration = Duration::from_secs(30);

struct Sandbox {
    cookie: u64,
    networks: Vec<String>,
    programmed: Programmed,
    /// VIPs programmed without backends, since when.
    emptied: BTreeMap<Ipv4Addr, Instant>,
}

/// The socket load balancer and what it holds for this node's sandboxes.
pub struct Balancer {
    lb: SockLb,
    sandboxes: HashMap<String, Sandbox>,
}

impl Balancer {
    /// Loads and attaches the eBPF programs.
    pub fn load() -> Result<Self, LbError> {
        Ok(Self {
            lb: SockLb::load()?,
            sandboxes: HashMap::new(),
        })
    }

    /// The netns cookie of a sandbox: what the eBPF programs key their maps by.
    pub async fn cookie_of(sandbox: &Netns) -> Result<u64, NetlinkError> {
        netns_cookie(sandbox).await
    }

    /// Starts balancing for a task's sandbox on `networks`; call [`Balancer::sync`] after.
    pub fn add_sandbox(&mut self, task_id: &str, cookie: u64, networks: Vec<String>) {
        if let Some(old) = self.sandboxes.remove(task_id)
            && old.cookie != cookie
        {
            self.forget(old.cookie);
        }
        self.sandboxes.insert(
            task_id.to_owned(),
            Sandbox {
                cookie,
                networks,
                programmed: Programmed::new(),
                emptied: BTreeMap::new(),
            },
        );
    }

    /// Removes every entry of a task's sandbox.
    pub fn remove_sandbox(&mut self, task_id: &str) {
        if let Some(sandbox) = self.sandboxes.remove(task_id) {
            self.forget(sandbox.cookie);
        }
    }

    fn forget(&mut self, cookie: u64) {
        if let Err(err) = self.lb.remove_sandbox(cookie) {
            tracing::warn!(netns.cookie = cookie, error = %err, "cannot remove sandbox from the load balancer");
        }
    }

    /// Programs what the directory says, for every sandbox, changing only what differs; VIPs
    /// that lost their last task are emptied, and removed once [`EMPTY_GRACE`] has passed.
    pub fn sync(&mut self, directory: &Directory) {
        let now = Instant::now();
        for (task_id, sandbox) in &mut self.sandboxes {
            let mut wanted: Programmed = directory.vips(&sandbox.networks).into_iter().collect();
            sandbox.emptied.retain(|vip, _| !wanted.contains_key(vip));
            for vip in sandbox.programmed.keys() {
                if wanted.contains_key(vip) {
                    continue;
                }
                let since = *sandbox.emptied.entry(*vip).or_insert(now);
                if now.duration_since(since) < EMPTY_GRACE {
                    wanted.insert(*vip, Vec::new());
                }
            }
            for (vip, backends) in &wanted {
                if sandbox.programmed.get(vip) == Some(backends) {
                    continue;
                }
                let targets: Vec<SocketAddrV4> =
                    backends.iter().map(|b| SocketAddrV4::new(*b, 0)).collect();
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    let set = self
                        .lb
                        .set_service(sandbox.cookie, *vip, 0, proto, &targets);
                    if let Err(err) = set {
                        tracing::warn!(task.id = %task_id, %vip, error = %err, "cannot program service VIP");
                    }
                }
            }
            for vip in sandbox.programmed.keys() {
                if wanted.contains_key(vip) {
                    continue;
                }
                sandbox.emptied.remove(vip);
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    if let Err(err) = self.lb.remove_service(sandbox.cookie, *vip, 0, proto) {
                        tracing::warn!(task.id = %task_id, %vip, error = %err, "cannot remove service VIP");
                    }
                }
            }
            sandbox.programmed = wanted;
        }
    }

    /// Entries in the load balancer's maps (nothing left once every sandbox is gone).
    pub fn entries(&self) -> usize {
        self.lb.entries().unwrap_or(0)
    }
}
