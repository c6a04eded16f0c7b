//! Tests of the Raft layer: openraft's storage suite, a single node's durability, a
//! three-member group over real gRPC on 127.0.0.1, and the size of what members send.

mod cluster;
mod sealed;
mod single;
mod transfer;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{LogStore, RaftConfig, RaftNode, SealKey, StateMachine, TypeConfig};
use crate::ca::{NodeKey, NodeSubject, Role, RootCa, TlsIdentity, TlsServer};
use crate::store::{MemoryStore, Store};
use crate::transport::Transport;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let key = SealKey::load_or_create(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let log = LogStore::open(&dir.path().join("raft.redb"), key.clone())
            .map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachine::open(dir.path(), Arc::new(MemoryStore::new()), key)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(Builder)?;
    Ok(())
}

/// Test timings: elections in well under a second.
fn config(dir: &Path, id: u64, addr: &str) -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        ..RaftConfig::new(dir, id, addr)
    }
}

/// A node object with just an id, enough to exercise the store.
fn node_object(id: &str) -> mesh_proto::Node {
    mesh_proto::Node {
        id: id.to_string(),
        ..Default::default()
    }
}

/// Polls `check` until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The CA every test member's certificate comes from.
static CA: LazyLock<RootCa> = LazyLock::new(|| RootCa::generate("cluster-1").expect("test CA"));

/// A manager certificate for node `node-<id>` naming `raft_id`, from [`CA`].
fn manager_identity(id: u64, raft_id: u64) -> TlsIdentity {
    identity(id, Role::Manager, Some(raft_id))
}

/// A worker certificate for node `node-<id>`, from [`CA`].
fn worker_identity(id: u64) -> TlsIdentity {
    identity(id, Role::Worker, None)
}

fn identity(id: u64, role: Role, raft_id: Option<u64>) -> TlsIdentity {
    let key = NodeKey::generate().expect("key");
    let node_id = format!("node-{id}");
    let subject = NodeSubject {
        node_id: &node_id,
        role,
        cluster_id: "cluster-1",
        raft_id,
    };
    let cert = CA
        .sign_node(
            &key.csr_der().expect("csr"),
            &subject,
            Duration::from_secs(3600),
        )
        .expect("sign");
    TlsIdentity::from_pem(&cert, key.to_pem(), CA.cert_pem()).expect("identity")
}

/// A Raft member serving its gRPC service on a random 127.0.0.1 port, over mutual TLS with a
/// manager certificate naming its raft id, as a manager's listener does.
struct TestNode {
    node: RaftNode,
    memory: Arc<MemoryStore>,
    store: Store,
    addr: String,
    server: JoinHandle<()>,
}

impl TestNode {
    async fn start(dir: &Path, id: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let memory = Arc::new(MemoryStore::new());
        let identity = manager_identity(id, id);
        let config = RaftConfig {
            transport: Some(Transport::new(identity.clone())),
            ..config(dir, id, &addr)
        };
        let node = RaftNode::open(config, memory.clone())
            .await
            .context("opening raft")?;
        let service = node.grpc_service();
        let incoming = TlsServer::new(&identity)?.incoming(listener);
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "test raft server failed");
            }
        });
        let store = Store::new(memory.clone(), node.proposer());
        Ok(Self {
            node,
            memory,
            store,
            addr,
            server,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.server.abort();
        self.node.shutdown().await?;
        Ok(())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}
