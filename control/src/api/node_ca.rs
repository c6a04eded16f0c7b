//! The `mesh.v1.NodeCA` service: hands out the root certificate and signs node certificates, for a
//! joining node (authenticated by its join token) or a member renewing its own (authenticated by
//! its current certificate). Any manager can sign: every manager holds the CA in its store. Node
//! objects are created by the dispatcher when the node first opens a session.

use mesh_proto::node_ca_server::{NodeCa, NodeCaServer};
use mesh_proto::{
    Cluster, GetRootCaCertificateRequest, GetRootCaCertificateResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, Node, NodeRole,
};
use std::time::Duration;
use tonic::{Request, Response, Status};

use crate::ca::{self, Role, RootCa};

/// The cluster's CA from its stored PEMs.
fn root_ca(root: &mesh_proto::RootCa) -> Result<RootCa, Status> {
    RootCa::from_pem(&root.ca_cert, &root.ca_key).map_err(|e| Status::internal(e.to_string()))
}
use crate::store::{Read, Store, new_id};

/// Swarm's default validity of node certificates.
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct NodeCaService {
    store: Store,
}

impl NodeCaService {
    pub fn server(store: Store) -> NodeCaServer<NodeCaService> {
        NodeCaServer::new(NodeCaService { store })
    }

    fn cluster(&self) -> Result<Cluster, Status> {
        self.store
            .view(|tx| tx.list::<Cluster>().into_iter().next())
            .filter(|c| c.root_ca.is_some())
            .ok_or_else(|| Status::unavailable("the cluster's CA is not ready yet"))
    }
}

/// The roots a node must trust: the current CA first, then those still valid during a rotation.
pub fn trusted_roots_pem(cluster: &Cluster) -> Vec<u8> {
    let Some(root) = &cluster.root_ca else {
        return Vec::new();
    };
    let mut pem = root.ca_cert.clone();
    for previous in &root.previous_ca_certs {
        pem.extend_from_slice(previous);
    }
    pem
}

pub fn cert_validity(cluster: &Cluster) -> Duration {
    cluster
        .spec
        .as_ref()
        .map(|s| s.node_cert_expiry_ns)
        .filter(|ns| *ns > 0)
        .map_or(DEFAULT_CERT_EXPIRY, |ns| Duration::from_nanos(ns as u64))
}

/// The role a join token grants, if it is one of the cluster's current tokens.
fn token_role(cluster: &Cluster, token: &str) -> Result<Role, Status> {
    let parsed = ca::token::parse(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let root = cluster
        .root_ca
        .as_ref()
        .ok_or_else(|| Status::unavailable("no CA"))?;
    let ca = root_ca(root)?;
    if !parsed.matches_ca(ca.cert_der()) {
        return Err(Status::permission_denied(
            "the join token is for another CA: it belongs to another cluster, or the CA was rotated",
        ));
    }
    let tokens = root.join_tokens.clone().unwrap_or_default();
    if ca::token::secret_matches(&tokens.manager, &parsed) {
        Ok(Role::Manager)
    } else if ca::token::secret_matches(&tokens.worker, &parsed) {
        Ok(Role::Worker)
    } else {
        Err(Status::permission_denied(
            "invalid join token: it was rotated, or is not one of this cluster's tokens",
        ))
    }
}

#[tonic::async_trait]
impl NodeCa for NodeCaService {
    async fn get_root_ca_certificate(
        &self,
        _: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        let cluster = self.cluster()?;
        Ok(Response::new(GetRootCaCertificateResponse {
            certificate: trusted_roots_pem(&cluster),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let peer = ca::peer(&request);
        let req = request.into_inner();
        let cluster = self.cluster()?;
        let (node_id, role) = match peer {
            // A member renewing: it keeps its id and gets the role the cluster now gives it.
            Some(identity) => {
                if cluster.removed_nodes.contains(&identity.node_id) {
                    return Err(Status::permission_denied(ca::REMOVED_NODE));
                }
                let node = self.store.view(|tx| tx.get::<Node>(&identity.node_id));
                let role = match node {
                    Some(node) if node.role == NodeRole::Manager as i32 => Role::Manager,
                    Some(_) => Role::Worker,
                    None => identity.role,
                };
                (identity.node_id, role)
            }
            None => {
                let role = token_role(&cluster, &req.token)?;
                (new_id(), role)
            }
        };
        let root = cluster
            .root_ca
            .as_ref()
            .ok_or_else(|| Status::unavailable("no CA"))?;
        let ca = root_ca(root)?;
        let certificate = ca
            .sign_node(
                &req.csr,
                &node_id,
                role,
                &cluster.id,
                cert_validity(&cluster),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(node.id = %node_id, role = ?role, "node certificate issued");
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            role: NodeRole::from(role) as i32,
            certificate: certificate.into_bytes(),
            root_ca: trusted_roots_pem(&cluster),
            cluster_id: cluster.id.clone(),
        }))
    }
}
