//! The cluster CA and the mutual-TLS transport of 2377, modelled on SwarmKit's `ca` package.
//!
//! Trust model: `swarm init` creates a root CA ([`RootCa`], ECDSA P-256) whose certificate and key
//! live in the Raft store, so every manager can sign. A node proves who it is with a certificate
//! signed by that root whose subject carries its node id (CN), its role (OU `mesh-manager` or
//! `mesh-worker`) and the cluster id (O); managers also carry the DNS name `mesh-manager`, which
//! every client verifies, so a worker cannot pose as a manager. A new node has no certificate:
//! its join token `SWMTKN-1-<root digest>-<secret>` first pins the root CA (the node fetches it
//! over an unverified connection and compares digests before sending anything else), then its
//! secret, checked by the manager in constant time, decides the role of the certificate issued
//! for the node's own key; a manager's certificate also names its Raft id. The 2377 listener asks
//! for but does not require a client certificate, so that `NodeCA` answers joining nodes; every
//! call on it passes the [`gate`] first, which judges the certificate against the node's current
//! standing in the store (its cluster, removal, role, a certificate replaced when the role
//! changed) by one table of every method. Handlers then authorize through [`Caller`]: a worker
//! certificate may only use the dispatcher and renew its own certificate ([`require_node`]);
//! Raft and manager APIs need a manager certificate ([`require_manager`]); the control API also
//! trusts the root-only local unix socket ([`require_local_or_manager`]). Renewal and root
//! rotation swap the listener's identity in place ([`TlsServer::set_identity`]).

mod authz;
mod client;
mod csr;
mod error;
pub mod gate;
mod identity;
mod root;
mod server;
pub mod tls;
pub mod token;

pub use authz::{
    Caller, REMOVED_NODE, caller, is_local, peer, require_local_or_manager, require_manager,
    require_node,
};
pub use client::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, connect, connect_lazy,
    connect_with_roots, fetch_root_ca,
};
pub use csr::NodeKey;
pub use error::CaError;
pub use gate::GateLayer;
pub use identity::{MANAGER_OU, NodeIdentity, Role, WORKER_OU, raft_id_uri};
pub use root::{NodeSubject, ROOT_CA_CN, ROOT_CA_VALIDITY, RootCa};
pub use server::{PeerInfo, TlsConnection, TlsServer};
pub use tls::{MANAGER_SERVER_NAME, TlsIdentity, certs_from_pem};
pub use token::{JoinToken, ParsedToken, TokenError, secret_matches};

#[cfg(test)]
mod tests;
