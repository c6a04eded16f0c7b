//! One resolver per task sandbox at 127.0.0.11:53 (UDP), its socket created inside the sandbox's
//! network namespace: service names from the [`Directory`], everything else forwarded to the
//! node's own resolvers by the node's one [`Forwarder`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::directory::{Directory, Resolution};
use super::forward::{ForwardLimits, Forwarder};
use crate::netlink::{NetlinkError, Netns, bind_udp};

/// Where Docker's embedded DNS listens, and where tasks' `resolv.conf` points.
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// TTL of the answers for service names: short, as they change with the tasks.
const TTL: u32 = 5;

/// The node's resolvers, from its `resolv.conf` (loopback ones excluded: they would not be
/// reachable the same way).
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|addr| addr.parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The embedded DNS of this node: a shared directory and one server per sandbox.
pub struct Dns {
    directory: Arc<RwLock<Directory>>,
    forwarder: Arc<Forwarder>,
    servers: Mutex<HashMap<String, Serving>>,
}

/// A sandbox's resolver: in which network namespace it answers (see [`Netns::identity`]: the
/// same sandbox may be named through the pid of any of its processes), for which networks.
struct Serving {
    identity: Option<(u64, u64)>,
    networks: Vec<String>,
    task: JoinHandle<()>,
}

impl Dns {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            directory: Arc::new(RwLock::new(Directory::default())),
            forwarder: Arc::new(Forwarder::new(upstreams, ForwardLimits::default())),
            servers: Mutex::new(HashMap::new()),
        }
    }

    pub fn directory(&self) -> &Arc<RwLock<Directory>> {
        &self.directory
    }

    /// Starts (or restarts) the resolver of a task's sandbox, answering for `networks`; one
    /// already answering there for the same networks (started early after a restart) is kept.
    pub async fn serve(
        &self,
        task_id: &str,
        sandbox: &Netns,
        networks: Vec<String>,
    ) -> Result<(), NetlinkError> {
        let identity = sandbox.identity();
        let same_sandbox = |serving: &Serving| {
            !serving.task.is_finished() && identity.is_some() && serving.identity == identity
        };
        {
            let mut servers = self.servers.lock().await;
            if let Some(serving) = servers.get(task_id)
                && same_sandbox(serving)
            {
                if serving.networks == networks {
                    return Ok(());
                }
                // The same sandbox, other networks: its resolver lets go of 127.0.0.11:53
                // before the new one binds it.
                if let Some(old) = servers.remove(task_id) {
                    old.task.abort();
                    let _ = old.task.await;
                }
            }
        }
        let socket = bind_udp(sandbox, SocketAddr::from((RESOLVER_ADDR, 53))).await?;
        let socket =
            UdpSocket::from_std(socket).map_err(|e| NetlinkError::io("serve dns", sandbox, e))?;
        let server = Server {
            socket,
            sandbox: Arc::from(task_id),
            networks,
            directory: self.directory.clone(),
            forwarder: self.forwarder.clone(),
        };
        let serving = Serving {
            identity,
            networks: server.networks.clone(),
            task: tokio::spawn(server.run()),
        };
        if let Some(old) = self
            .servers
            .lock()
            .await
            .insert(task_id.to_owned(), serving)
        {
            old.task.abort();
        }
        Ok(())
    }

    /// Stops a sandbox's resolver.
    pub async fn stop(&self, task_id: &str) {
        if let Some(server) = self.servers.lock().await.remove(task_id) {
            server.task.abort();
        }
    }

    /// Stops every resolver.
    pub async fn stop_all(&self) {
        for (_, server) in self.servers.lock().await.drain() {
            server.task.abort();
        }
    }
}

/// The resolver of one sandbox.
pub(super) struct Server {
    pub(super) socket: UdpSocket,
    /// The sandbox's task id: with the asker's address, the source its rate is kept for.
    pub(super) sandbox: Arc<str>,
    pub(super) networks: Vec<String>,
    pub(super) directory: Arc<RwLock<Directory>>,
    pub(super) forwarder: Arc<Forwarder>,
}

impl Server {
    pub(super) async fn run(self) {
        let socket = Arc::new(self.socket);
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(err) => {
                    tracing::debug!(error = %err, "dns socket closed");
                    return;
                }
            };
            let query = &buf[..len];
            let reply = {
                let directory = self.directory.read().unwrap_or_else(|p| p.into_inner());
                answer(&directory, &self.networks, query)
            };
            match reply {
                Answer::Reply(bytes) => {
                    let _ = socket.send_to(&bytes, from).await;
                }
                Answer::Forward => match self.forwarder.admit(&self.sandbox, from.ip()) {
                    Ok(permit) => {
                        let socket = socket.clone();
                        let forwarder = self.forwarder.clone();
                        let query = query.to_vec();
                        tokio::spawn(async move {
                            let reply = match forwarder.forward(&query).await {
                                Some(reply) => Some(reply),
                                None => error_reply(&query, ResponseCode::ServFail),
                            };
                            drop(permit);
                            if let Some(bytes) = reply {
                                let _ = socket.send_to(&bytes, from).await;
                            }
                        });
                    }
                    Err(_) => {
                        if let Some(bytes) = error_reply(query, ResponseCode::Refused) {
                            let _ = socket.send_to(&bytes, from).await;
                        }
                    }
                },
                Answer::Drop => {}
            }
        }
    }
}

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Reply(Vec<u8>),
    Forward,
    /// Not a DNS query we can parse: no answer (as a resolver does with garbage).
    Drop,
}

/// Answers a query from the directory, or says it must be forwarded.
pub(super) fn answer(directory: &Directory, networks: &[String], query: &[u8]) -> Answer {
    let Ok(request) = Message::from_vec(query) else {
        return Answer::Drop;
    };
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
    {
        return Answer::Drop;
    }
    let Some(question) = request.queries.first() else {
        return Answer::Drop;
    };
    let name = question.name().to_ascii();
    let Resolution::Addresses(addresses) = directory.resolve(networks, &name) else {
        return Answer::Forward;
    };
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    match question.query_type() {
        RecordType::A | RecordType::ANY => {
            for addr in addresses {
                response.answers.push(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(addr)),
                ));
            }
        }
        // A service name has only IPv4 addresses: an empty, successful answer for the rest.
        _ => {}
    }
    match response.to_vec() {
        Ok(bytes) => Answer::Reply(bytes),
        Err(_) => Answer::Drop,
    }
}

/// An error answer to `query`: SERVFAIL when no upstream answered, REFUSED when it was not
/// forwarded.
pub(super) fn error_reply(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    response.queries = request.queries;
    response.to_vec().ok()
}
