//! The `mesh.v1.NodeCA` service: hands out the root certificate and signs node certificates, for a
//! joining node (authenticated by its join token) or a member renewing its own (authenticated by
//! its current certificate). The leader signs, and records in the node's object the certificate
//! it issued (creating the object of a joining node): the gate refuses a certificate of a node's
//! old role once a newer one was issued. Another manager forwards the request to the leader,
//! naming the certificate the node presented to it.

use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::node_ca_server::{NodeCa, NodeCaServer};
use mesh_proto::{
    Cluster, ForwardedCertificate, GetRootCaCertificateRequest, GetRootCaCertificateResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, Node, NodeAvailability,
    NodeCertificate, NodeRole, NodeSpec,
};
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};

use super::ManagerContext;
use crate::ca::gate::{Need, Standing, judge};
use crate::ca::{self, NodeIdentity, NodeSubject, Role, RootCa};

/// The cluster's CA from its stored PEMs.
fn root_ca(root: &mesh_proto::RootCa) -> Result<RootCa, Status> {
    RootCa::from_pem(&root.ca_cert, &root.ca_key).map_err(|e| Status::internal(e.to_string()))
}
use crate::store::{Read, Store, new_id};

/// The largest certificate request taken (the port answers strangers).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Swarm's default validity of node certificates.
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct NodeCaService {
    context: ManagerContext,
}

impl NodeCaService {
    pub fn server(context: ManagerContext) -> NodeCaServer<NodeCaService> {
        // A request is a CSR and a token: anything near this size is no certificate request.
        NodeCaServer::new(NodeCaService { context }).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    fn store(&self) -> &Store {
        &self.context.store
    }

    /// Who a certificate request forwarded by `manager` is for, once both pass the gate's
    /// rules: the forwarder as a manager, the node as one that may renew. `None` for a joining
    /// node, which the forwarder names with an empty node id: its token decides.
    fn forwarded(
        &self,
        manager: &NodeIdentity,
        forwarded: ForwardedCertificate,
    ) -> Result<Option<NodeIdentity>, Status> {
        if forwarded.node_id.is_empty() {
            self.store().view(|tx| {
                let cluster = tx.list::<Cluster>().into_iter().next();
                let forwarder = tx.get::<Node>(&manager.node_id);
                let standing = Standing {
                    cluster: cluster.as_ref(),
                    node: forwarder.as_ref(),
                };
                judge(Need::Manager, Some(manager), standing).map_err(|r| r.status())
            })?;
            return Ok(None);
        }
        let node = NodeIdentity {
            node_id: forwarded.node_id,
            role: NodeRole::try_from(forwarded.role)
                .map(Role::from)
                .map_err(|_| Status::invalid_argument("the forwarded role is unknown"))?,
            cluster_id: forwarded.cluster_id,
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            serial: forwarded.serial,
            raft_id: Some(forwarded.raft_id).filter(|id| *id != 0),
        };
        self.store().view(|tx| {
            let cluster = tx.list::<Cluster>().into_iter().next();
            let standing = |id: &str| tx.get::<Node>(id);
            let (forwarder, renewing) = (standing(&manager.node_id), standing(&node.node_id));
            let judged = |need, who: &NodeIdentity, stored: &Option<Node>| {
                let standing = Standing {
                    cluster: cluster.as_ref(),
                    node: stored.as_ref(),
                };
                judge(need, Some(who), standing).map_err(|refusal| refusal.status())
            };
            // A manager forwarding its own renewal (as a manager just demoted does) asks for
            // itself: only its standing as a renewing node counts.
            if manager.node_id != node.node_id {
                judged(Need::Manager, manager, &forwarder)?;
            }
            judged(Need::JoinOrRenew, &node, &renewing)
        })?;
        Ok(Some(node))
    }

    /// Records `certificate` as `node_id`'s newest, creating the node's object for a node that
    /// joins. Nothing is issued unless this is written.
    async fn record(
        &self,
        node_id: &str,
        role: Role,
        certificate: &str,
        req: &IssueNodeCertificateRequest,
    ) -> Result<(), Status> {
        let serial = ca::certs_from_pem(certificate.as_bytes(), "issued certificate")
            .and_then(|chain| NodeIdentity::from_der(&chain[0]))
            .map_err(|e| Status::internal(e.to_string()))?
            .serial;
        let role = NodeRole::from(role) as i32;
        let newest = NodeCertificate { serial, role };
        let availability =
            NodeAvailability::try_from(req.availability).unwrap_or(NodeAvailability::Active) as i32;
        self.store()
            .update_retrying(|tx| match tx.get::<Node>(node_id) {
                Some(mut node) => {
                    node.certificate = Some(newest.clone());
                    tx.update(node)
                }
                None => tx.create(Node {
                    id: node_id.to_owned(),
                    spec: Some(NodeSpec {
                        desired_role: role,
                        availability,
                        ..Default::default()
                    }),
                    role,
                    certificate: Some(newest.clone()),
                    ..Default::default()
                }),
            })
            .await
            .map_err(super::status)
    }

    /// The Raft id a manager certificate for `node_id` may carry: the one asked for, unless it is
    /// missing or another node's.
    fn raft_id_for(&self, node_id: &str, raft_id: u64) -> Result<u64, Status> {
        if raft_id == 0 {
            return Err(Status::invalid_argument(
                "a manager certificate needs the node's raft id",
            ));
        }
        let taken = self.store().view(|tx| {
            tx.find::<Node>(|n| {
                n.id != node_id
                    && n.manager_status
                        .as_ref()
                        .is_some_and(|m| m.raft_id == raft_id)
            })
        });
        if !taken.is_empty() {
            return Err(Status::invalid_argument(format!(
                "raft id {raft_id} belongs to another manager"
            )));
        }
        Ok(raft_id)
    }

    fn cluster(&self) -> Result<Cluster, Status> {
        self.store()
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

/// The role a join token grants, if it is one of the cluster's current tokens. A caller without
/// a certificate that brings no valid token is not authenticated.
fn token_role(cluster: &Cluster, token: &str) -> Result<Role, Status> {
    if token.trim().is_empty() {
        return Err(Status::unauthenticated(
            "a join token or a node certificate of this cluster is needed",
        ));
    }
    let parsed = ca::token::parse(token).map_err(|e| Status::unauthenticated(e.to_string()))?;
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
        let caller = ca::peer(&request);
        let mut req = request.into_inner();
        // Who asks: the caller; for a request another manager forwarded, the node it names, or
        // nobody (a joining node, with its token) when it names none.
        let asking = match (req.forwarded.take(), caller) {
            (None, caller) => caller,
            (Some(forwarded), Some(manager)) => self.forwarded(&manager, forwarded)?,
            (Some(_), None) => {
                return Err(Status::unauthenticated(
                    "only a manager may forward a certificate request",
                ));
            }
        };
        // Only the leader issues: it records each node's newest certificate as it does.
        if let Some(mut leader) = super::leader_channel(&self.context)
            .await?
            .map(NodeCaClient::new)
        {
            req.forwarded = Some(asking.as_ref().map(forwarded_from).unwrap_or_default());
            return leader.issue_node_certificate(req).await;
        }
        let cluster = self.cluster()?;
        let (node_id, role) = match asking {
            // A member renewing: it keeps its id and gets the role the cluster now gives it.
            Some(identity) => {
                if cluster.removed_nodes.contains(&identity.node_id) {
                    return Err(Status::permission_denied(ca::REMOVED_NODE));
                }
                let node = self.store().view(|tx| tx.get::<Node>(&identity.node_id));
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
        let raft_id = match role {
            Role::Manager => Some(self.raft_id_for(&node_id, req.raft_id)?),
            Role::Worker => None,
        };
        let subject = NodeSubject {
            node_id: &node_id,
            role,
            cluster_id: &cluster.id,
            raft_id,
        };
        let certificate = ca
            .sign_node(&req.csr, &subject, cert_validity(&cluster))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.record(&node_id, role, &certificate, &req).await?;
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

/// What a manager forwarding a renewal says of the node that asked it.
fn forwarded_from(identity: &NodeIdentity) -> ForwardedCertificate {
    ForwardedCertificate {
        node_id: identity.node_id.clone(),
        role: NodeRole::from(identity.role) as i32,
        cluster_id: identity.cluster_id.clone(),
        serial: identity.serial.clone(),
        raft_id: identity.raft_id.unwrap_or_default(),
    }
}
