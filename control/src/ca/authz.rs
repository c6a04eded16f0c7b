//! Who is calling a gRPC handler, and the checks handlers make with it. Requests arriving on the
//! local unix socket (root-only, `meshctl`) are trusted explicitly; requests on 2377 are judged by
//! the certificate rustls verified, after the [`gate`](super::gate) has judged it against the
//! store (removed nodes, current roles).

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::identity::{NodeIdentity, Role};
use super::server::PeerInfo;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The local unix socket: root on this host, fully trusted.
    Local,
    /// A node holding a certificate from the cluster's CA.
    Node(NodeIdentity),
    /// A TLS client without a certificate (a joining node), or a transport that proves nothing.
    Anonymous,
}

/// The caller of `request`, from the connection it arrived on.
pub fn caller<T>(request: &Request<T>) -> Caller {
    if let Some(info) = request.extensions().get::<PeerInfo>() {
        return match &info.identity {
            Some(identity) => Caller::Node(identity.clone()),
            None => Caller::Anonymous,
        };
    }
    if request.extensions().get::<UdsConnectInfo>().is_some() {
        return Caller::Local;
    }
    Caller::Anonymous
}

/// The node identity from the request's verified client certificate, if any.
pub fn peer<T>(request: &Request<T>) -> Option<NodeIdentity> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|info| info.identity.clone())
}

/// Whether the request came over the local unix socket.
pub fn is_local<T>(request: &Request<T>) -> bool {
    caller(request) == Caller::Local
}

/// What a node removed from the cluster is told, wherever it calls (the gate says it).
pub const REMOVED_NODE: &str = "this node was removed from the cluster: leave with \"meshctl swarm leave --force\" and join again";

/// A node certificate of any role (for the dispatcher, certificate renewal).
pub fn require_node<T>(request: &Request<T>) -> Result<NodeIdentity, Status> {
    peer(request).ok_or_else(|| Status::unauthenticated("this API needs a node certificate"))
}

/// A manager certificate (for Raft and manager-to-manager forwarding).
pub fn require_manager<T>(request: &Request<T>) -> Result<NodeIdentity, Status> {
    match peer(request) {
        Some(identity) if identity.role == Role::Manager => Ok(identity),
        _ => Err(Status::permission_denied(
            "this API needs a manager certificate",
        )),
    }
}

/// The local socket or a manager certificate (for the control API, served on both).
pub fn require_local_or_manager<T>(request: &Request<T>) -> Result<Caller, Status> {
    match caller(request) {
        Caller::Local => Ok(Caller::Local),
        Caller::Node(identity) if identity.role == Role::Manager => Ok(Caller::Node(identity)),
        _ => Err(Status::permission_denied(
            "this API needs a manager certificate",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn request(info: Option<PeerInfo>, local: bool) -> Request<()> {
        let mut request = Request::new(());
        if let Some(info) = info {
            request.extensions_mut().insert(info);
        }
        if local {
            request.extensions_mut().insert(UdsConnectInfo {
                peer_addr: None,
                peer_cred: None,
            });
        }
        request
    }

    fn node(role: Role) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            rejected: None,
            identity: Some(NodeIdentity {
                node_id: "n1".into(),
                role,
                cluster_id: "c1".into(),
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
                serial: vec![1],
                raft_id: None,
            }),
        }
    }

    #[test]
    fn callers_and_their_rights() {
        let anonymous = PeerInfo {
            remote_addr: None,
            identity: None,
            rejected: None,
        };
        // (request, is local, node ok, manager ok, local-or-manager ok)
        let cases = [
            (request(None, true), true, false, false, true),
            (request(None, false), false, false, false, false),
            (request(Some(anonymous), false), false, false, false, false),
            (
                request(Some(node(Role::Worker)), false),
                false,
                true,
                false,
                false,
            ),
            (
                request(Some(node(Role::Manager)), false),
                false,
                true,
                true,
                true,
            ),
        ];
        for (i, (req, local, node_ok, manager_ok, either_ok)) in cases.into_iter().enumerate() {
            assert_eq!(is_local(&req), local, "case {i}");
            assert_eq!(require_node(&req).is_ok(), node_ok, "case {i}");
            assert_eq!(require_manager(&req).is_ok(), manager_ok, "case {i}");
            assert_eq!(
                require_local_or_manager(&req).is_ok(),
                either_ok,
                "case {i}"
            );
        }
    }

    #[test]
    fn worker_is_denied_with_a_clear_message() {
        let status = require_manager(&request(Some(node(Role::Worker)), false))
            .expect_err("a worker is refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "this API needs a manager certificate");
    }
}
