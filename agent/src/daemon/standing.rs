//! Keeping the node's standing current: renewing its certificate before it expires or when the
//! root CA rotates, and starting or stopping its manager when it is promoted or demoted.

use mesh_control::ca::NodeKey;
use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::raft_membership_client::RaftMembershipClient;
use mesh_proto::{IssueNodeCertificateRequest, NodeRole, RaftJoinRequest};
use std::sync::Weak;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

use super::{Daemon, DaemonError, Membership, identity};
use crate::certs::{self, Certificates};
use crate::session::ClusterView;
use crate::state::{self, Role};

/// How often the certificate's age is checked.
const EXPIRY_CHECK: Duration = Duration::from_secs(600);

/// Runs for as long as the membership: reacts to changes of the node's role or of the CA.
pub(super) async fn watch(
    daemon: Weak<Daemon>,
    mut view: watch::Receiver<ClusterView>,
    mut stop: watch::Receiver<bool>,
) {
    let mut expiry = tokio::time::interval(EXPIRY_CHECK);
    expiry.tick().await;
    loop {
        let renew_for_expiry = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = expiry.tick() => true,
        };
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        let wanted = view.borrow_and_update().clone();
        if let Err(err) = daemon.update_standing(wanted, renew_for_expiry).await {
            tracing::warn!(error = %err, "could not update the node's certificate or role");
        }
    }
}

impl Daemon {
    async fn update_standing(
        &self,
        view: ClusterView,
        check_expiry: bool,
    ) -> Result<(), DaemonError> {
        let mut guard = self.membership.lock().await;
        let Some(m) = guard.as_mut() else {
            return Ok(());
        };
        let role = if view.role == NodeRole::Manager as i32 {
            Role::Manager
        } else {
            Role::Worker
        };
        let expiring = check_expiry
            && m.transport
                .identity()
                .node_identity()
                .is_ok_and(|id| id.needs_renewal(SystemTime::now()));
        if !view.managers.is_empty() && view.managers != m.state.managers {
            m.state.managers = view.managers.clone();
            state::save(&self.config.state_dir, &m.state)?;
        }
        if role == m.state.role && view.ca_rotation == m.state.ca_rotation && !expiring {
            return Ok(());
        }
        let certs = self.renew(m).await?;
        m.state.ca_rotation = view.ca_rotation;
        let issued_role = identity(&certs)?.node_identity()?.role;
        let new_role = match issued_role {
            mesh_control::ca::Role::Manager => Role::Manager,
            mesh_control::ca::Role::Worker => Role::Worker,
        };
        if new_role != m.state.role {
            match new_role {
                Role::Manager => self.become_manager(m, &certs).await?,
                Role::Worker => self.become_worker(m).await?,
            }
        }
        state::save(&self.config.state_dir, &m.state)?;
        Ok(())
    }

    /// A new certificate for a new key, issued by whichever manager answers first. It names the
    /// node's raft id should the cluster make it a manager: its current one, or a new one for a
    /// worker about to be promoted.
    async fn renew(&self, m: &mut Membership) -> Result<Certificates, DaemonError> {
        let key = NodeKey::generate()?;
        let csr = key.csr_der()?;
        let raft_id = match m.state.role {
            Role::Manager => m.state.raft_id,
            Role::Worker => rand::random::<u64>().max(1),
        };
        let mut last = None;
        for manager in m.state.managers.clone() {
            let channel = match m.transport.channel(&manager).await {
                Ok(c) => c,
                Err(err) => {
                    last = Some(DaemonError::Ca(err));
                    continue;
                }
            };
            let request = IssueNodeCertificateRequest {
                csr: csr.clone(),
                raft_id,
                ..Default::default()
            };
            match NodeCaClient::new(channel)
                .issue_node_certificate(request)
                .await
            {
                Ok(issued) => {
                    let issued = issued.into_inner();
                    let certs = Certificates {
                        cert_pem: issued.certificate,
                        key_pem: key.to_pem().into_bytes(),
                        roots_pem: issued.root_ca,
                    };
                    let tls = identity(&certs)?;
                    certs::save(&self.config.state_dir, &certs)?;
                    m.transport.set_identity(tls.clone());
                    if let Some(listener) = &m.listener {
                        listener.tls.set_identity(&tls)?;
                    }
                    tracing::info!(node.id = %m.state.node_id, "node certificate renewed");
                    return Ok(certs);
                }
                Err(status) => {
                    last = Some(DaemonError::Unreachable {
                        addr: manager,
                        message: status.message().to_string(),
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            DaemonError::Refused("no manager to renew the certificate with".into())
        }))
    }

    async fn become_manager(
        &self,
        m: &mut Membership,
        certs: &Certificates,
    ) -> Result<(), DaemonError> {
        tracing::info!(node.id = %m.state.node_id, "promoted: starting the manager");
        let _ = std::fs::remove_dir_all(state::raft_dir(&self.config.state_dir));
        // The raft id the new manager certificate names: peers accept no other from this node.
        m.state.raft_id = identity(certs)?.node_identity()?.raft_id.ok_or_else(|| {
            DaemonError::Refused("the manager certificate issued names no raft id".into())
        })?;
        let manager = self.start_manager(&m.state, &m.transport).await?;
        let listener = match self.listen(&m.state.listen_addr, &manager, certs).await {
            Ok(listener) => listener,
            Err(err) => {
                manager.stop().await;
                return Err(err);
            }
        };
        let mut joined = Err(DaemonError::Refused("no manager to join through".into()));
        for addr in m.state.managers.clone() {
            let request = RaftJoinRequest {
                raft_id: m.state.raft_id,
                addr: m.state.advertise_addr.clone(),
                node_id: m.state.node_id.clone(),
            };
            joined = match m.transport.channel(&addr).await {
                Ok(channel) => RaftMembershipClient::new(channel)
                    .join(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| DaemonError::Unreachable {
                        addr: addr.clone(),
                        message: s.message().to_string(),
                    }),
                Err(err) => Err(err.into()),
            };
            if joined.is_ok() {
                break;
            }
        }
        if let Err(err) = joined {
            listener.stop.send_replace(true);
            manager.stop().await;
            return Err(err);
        }
        self.api.attach(manager.context());
        m.manager = Some(manager);
        m.listener = Some(listener);
        m.state.role = Role::Manager;
        Ok(())
    }

    async fn become_worker(&self, m: &mut Membership) -> Result<(), DaemonError> {
        tracing::info!(node.id = %m.state.node_id, "demoted: stopping the manager");
        self.api.detach();
        if let Some(listener) = m.listener.take() {
            listener.stop.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), listener.task).await;
        }
        if let Some(manager) = m.manager.take() {
            manager.stop().await;
        }
        let _ = std::fs::remove_dir_all(state::raft_dir(&self.config.state_dir));
        m.state.role = Role::Worker;
        Ok(())
    }
}
