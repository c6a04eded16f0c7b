//! `swarm join`: check the manager's CA against the token, get a certificate for this node's own
//! key, then start as a worker or as a manager that joins the Raft group.

use mesh_control::ca::{NodeKey, connect_with_roots, fetch_root_ca, token};
use mesh_control::transport::Transport;
use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::raft_membership_client::RaftMembershipClient;
use mesh_proto::{IssueNodeCertificateRequest, JoinRequest, NodeRole, RaftJoinRequest};

use super::addr::{advertise_addr, non_empty, parse_addr};
use super::{DEFAULT_PORT, Daemon, DaemonError, Stop, identity};
use crate::certs::{self, Certificates};
use crate::state::{self, NodeState, Role};

impl Daemon {
    pub async fn join(&self, req: JoinRequest) -> Result<(String, NodeRole), DaemonError> {
        let mut membership = self.membership.lock().await;
        if membership.is_some() || state::load(&self.config.state_dir)?.is_some() {
            return Err(DaemonError::AlreadyMember);
        }
        let parsed = token::parse(req.token.trim())
            .map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        let remote = parse_addr(
            non_empty(&req.remote_addr).ok_or_else(|| {
                DaemonError::InvalidArgument("the address of a manager to join is missing".into())
            })?,
            DEFAULT_PORT,
        )?;
        let listen_addr = non_empty(&req.listen_addr).unwrap_or(&self.config.listen_addr);
        let listen = parse_addr(listen_addr, DEFAULT_PORT)?;
        let advertise = advertise_addr(
            non_empty(&req.advertise_addr).or(self.config.advertise_addr.as_deref()),
            listen,
            Some(remote.ip()),
        )?;
        let remote = remote.to_string();
        let unreachable = |message: String| DaemonError::Unreachable {
            addr: remote.clone(),
            message,
        };

        // Nothing but this request is sent before the manager's CA matches the token's digest.
        let roots = fetch_root_ca(&remote, &parsed).await?;
        let key = NodeKey::generate()?;
        // Chosen before the certificate: a manager's certificate names it.
        let raft_id = rand::random::<u64>().max(1);
        let channel = connect_with_roots(&remote, &roots, None).await?;
        let issued = NodeCaClient::new(channel)
            .issue_node_certificate(IssueNodeCertificateRequest {
                csr: key.csr_der()?,
                token: req.token.trim().to_string(),
                addr: advertise.to_string(),
                availability: req.availability,
                raft_id,
                forwarded: None,
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::InvalidArgument => {
                    DaemonError::Refused(status.message().to_string())
                }
                _ => unreachable(status.message().to_string()),
            })?
            .into_inner();
        let role = NodeRole::try_from(issued.role).unwrap_or(NodeRole::Worker);
        let certs = Certificates {
            cert_pem: issued.certificate,
            key_pem: key.to_pem().into_bytes(),
            roots_pem: issued.root_ca,
        };
        let state = NodeState {
            node_id: issued.node_id.clone(),
            cluster_id: issued.cluster_id,
            role: if role == NodeRole::Manager {
                Role::Manager
            } else {
                Role::Worker
            },
            raft_id,
            advertise_addr: advertise.to_string(),
            listen_addr: listen.to_string(),
            managers: vec![remote.clone()],
            ca_rotation: 0,
        };

        state::remove(&self.config.state_dir)?;
        let started = async {
            certs::save(&self.config.state_dir, &certs)?;
            let transport = Transport::new(identity(&certs)?);
            let manager = match state.role {
                Role::Manager => Some(self.start_manager(&state, &transport).await?),
                Role::Worker => None,
            };
            let member = self
                .start_member(state.clone(), &certs, transport.clone(), manager)
                .await?;
            if state.role == Role::Manager {
                // The listener is up: ask the leader to add this manager to the Raft group.
                let joined = async {
                    let channel = transport.channel(&remote).await?;
                    RaftMembershipClient::new(channel)
                        .join(RaftJoinRequest {
                            raft_id: state.raft_id,
                            addr: state.advertise_addr.clone(),
                            node_id: state.node_id.clone(),
                        })
                        .await
                        .map_err(|s| unreachable(s.message().to_string()))
                }
                .await;
                if let Err(err) = joined {
                    self.stop_member(member, Stop::Leave).await;
                    return Err(err);
                }
            }
            Ok(member)
        }
        .await;
        *membership = Some(self.commit_member(started).await?);
        tracing::info!(node.id = %issued.node_id, role = ?role, manager = %remote, "joined the swarm");
        Ok((issued.node_id, role))
    }
}
