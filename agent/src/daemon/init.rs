//! `swarm init`: a new cluster with this node as its only manager — a new root CA, join tokens, the
//! node's own certificate, and a one-member Raft group.

use mesh_control::api::DEFAULT_CERT_EXPIRY;
use mesh_control::ca::token::JoinToken;
use mesh_control::ca::{NodeKey, NodeSubject, Role as CaRole, RootCa};
use mesh_control::manager::Manager;
use mesh_control::transport::Transport;
use mesh_proto::{
    Annotations, Cluster, ClusterSpec, InitRequest, JoinTokens, ManagerStatus, Node, NodeRole,
    NodeSpec, Reachability, RootCa as RootCaObject,
};
use std::time::Duration;

use super::addr::{advertise_addr, non_empty, parse_addr};
use super::{DEFAULT_PORT, Daemon, DaemonError, identity};
use crate::certs::{self, Certificates};
use crate::state::{self, NodeState, Role};

impl Daemon {
    pub async fn init(&self, req: InitRequest) -> Result<(String, String), DaemonError> {
        let mut membership = self.membership.lock().await;
        if membership.is_some() || state::load(&self.config.state_dir)?.is_some() {
            return Err(DaemonError::AlreadyMember);
        }
        let listen_addr = non_empty(&req.listen_addr).unwrap_or(&self.config.listen_addr);
        let listen = parse_addr(listen_addr, DEFAULT_PORT)?;
        let advertise = advertise_addr(
            non_empty(&req.advertise_addr).or(self.config.advertise_addr.as_deref()),
            listen,
            None,
        )?;
        for pool in &req.default_addr_pool {
            if pool.parse::<ipnet::Ipv4Net>().is_err() {
                return Err(DaemonError::InvalidArgument(format!(
                    "invalid address pool {pool:?}: expected an IPv4 CIDR like 10.20.0.0/16"
                )));
            }
        }
        if req.subnet_size != 0 && !(8..=29).contains(&req.subnet_size) {
            return Err(DaemonError::InvalidArgument(
                "the address pool mask length must be between 8 and 29".into(),
            ));
        }
        if req.dispatcher_heartbeat_ns < 0 || req.cert_expiry_ns < 0 {
            return Err(DaemonError::InvalidArgument(
                "durations must not be negative".into(),
            ));
        }
        let state = NodeState {
            node_id: mesh_control::store::new_id(),
            cluster_id: mesh_control::store::new_id(),
            role: Role::Manager,
            raft_id: rand::random::<u64>().max(1),
            advertise_addr: advertise.to_string(),
            listen_addr: listen.to_string(),
            managers: vec![advertise.to_string()],
            ca_rotation: 0,
        };
        let validity = match req.cert_expiry_ns {
            0 => DEFAULT_CERT_EXPIRY,
            ns => Duration::from_nanos(ns as u64),
        };
        let ca = RootCa::generate(&state.cluster_id)?;
        let key = NodeKey::generate()?;
        let subject = NodeSubject {
            node_id: &state.node_id,
            role: CaRole::Manager,
            cluster_id: &state.cluster_id,
            raft_id: Some(state.raft_id),
        };
        let cert = ca.sign_node(&key.csr_der()?, &subject, validity)?;
        let certs = Certificates {
            cert_pem: cert.into_bytes(),
            key_pem: key.to_pem().into_bytes(),
            roots_pem: ca.cert_pem().as_bytes().to_vec(),
        };
        // A failed init leaves nothing behind: no Raft state, no certificates, no identity file.
        state::remove(&self.config.state_dir)?;
        let started = async {
            certs::save(&self.config.state_dir, &certs)?;
            let transport = Transport::new(identity(&certs)?);
            let manager = self.bootstrap(&state, &req, &ca, &transport).await?;
            self.start_member(state.clone(), &certs, transport, Some(manager))
                .await
        }
        .await;
        *membership = Some(self.commit_member(started).await?);
        tracing::info!(node.id = %state.node_id, addr = %advertise, "swarm initialized");
        Ok((state.node_id, state.cluster_id))
    }

    async fn bootstrap(
        &self,
        state: &NodeState,
        req: &InitRequest,
        ca: &RootCa,
        transport: &Transport,
    ) -> Result<Manager, DaemonError> {
        let manager = self.start_manager(state, transport).await?;
        let heartbeat = match req.dispatcher_heartbeat_ns {
            0 => mesh_control::dispatcher::DEFAULT_HEARTBEAT_PERIOD.as_nanos() as i64,
            n => n,
        };
        let cluster = Cluster {
            id: state.cluster_id.clone(),
            spec: Some(ClusterSpec {
                annotations: Some(Annotations {
                    name: "default".into(),
                    ..Default::default()
                }),
                task_history_retention_limit: req.task_history_limit.unwrap_or(5),
                dispatcher_heartbeat_period_ns: heartbeat,
                node_cert_expiry_ns: req.cert_expiry_ns,
                default_addr_pool: req.default_addr_pool.clone(),
                subnet_size: req.subnet_size,
            }),
            root_ca: Some(RootCaObject {
                ca_cert: ca.cert_pem().as_bytes().to_vec(),
                ca_key: ca.key_pem().into_bytes(),
                ca_cert_digest: ca.digest(),
                join_tokens: Some(JoinTokens {
                    worker: JoinToken::generate(ca.cert_der()),
                    manager: JoinToken::generate(ca.cert_der()),
                }),
                previous_ca_certs: vec![],
                rotation: 0,
            }),
            ..Default::default()
        };
        let node = Node {
            id: state.node_id.clone(),
            spec: Some(NodeSpec {
                desired_role: NodeRole::Manager as i32,
                ..Default::default()
            }),
            description: self.executor.describe().await.ok(),
            role: NodeRole::Manager as i32,
            manager_status: Some(ManagerStatus {
                raft_id: state.raft_id,
                addr: state.advertise_addr.clone(),
                leader: true,
                reachability: Reachability::Reachable as i32,
            }),
            ..Default::default()
        };
        if let Err(err) = manager.bootstrap(cluster, node).await {
            manager.stop().await;
            return Err(err.into());
        }
        Ok(manager)
    }
}
