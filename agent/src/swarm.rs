//! The `mesh.v1.Swarm` service on the local socket: init, leave and info.

use mesh_proto::swarm_server::{Swarm, SwarmServer};
use mesh_proto::{
    InfoRequest, InfoResponse, InitRequest, InitResponse, JoinRequest, JoinResponse, LeaveRequest,
    LeaveResponse,
};
use std::future::Future;
use std::sync::Arc;
use tokio::runtime::Handle;
use tonic::{Request, Response, Status};

use crate::daemon::{Daemon, DaemonError};

pub struct SwarmService {
    daemon: Arc<Daemon>,
    /// The daemon's own runtime: joining, leaving and initialising start and stop the node's
    /// long-lived tasks, which belong there rather than on the runtime serving the socket.
    runtime: Handle,
}

impl SwarmService {
    /// The service, running each call's work on `runtime`.
    pub fn server(daemon: Arc<Daemon>, runtime: Handle) -> SwarmServer<SwarmService> {
        SwarmServer::new(SwarmService { daemon, runtime })
    }

    /// Runs `work` on the daemon's runtime; it finishes even if the caller goes away.
    async fn on_daemon<T, F>(&self, work: impl FnOnce(Arc<Daemon>) -> F) -> Result<T, Status>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .spawn(work(self.daemon.clone()))
            .await
            .map_err(|e| Status::internal(format!("the call's work failed: {e}")))
    }
}

fn status(err: DaemonError) -> Status {
    let message = err.to_string();
    match err {
        DaemonError::AlreadyMember
        | DaemonError::NotMember
        | DaemonError::ManagerLeave
        | DaemonError::Refused(_) => Status::failed_precondition(message),
        DaemonError::InvalidArgument(_) => Status::invalid_argument(message),
        DaemonError::Listen { .. } | DaemonError::Unreachable { .. } => {
            Status::unavailable(message)
        }
        DaemonError::Ca(mesh_control::ca::CaError::CaMismatch) => {
            Status::permission_denied(message)
        }
        DaemonError::Ca(_) => Status::unavailable(message),
        DaemonError::Manager(_) | DaemonError::State(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl Swarm for SwarmService {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let request = request.into_inner();
        let (node_id, cluster_id) = self
            .on_daemon(|daemon| async move { daemon.init(request).await })
            .await?
            .map_err(status)?;
        Ok(Response::new(InitResponse {
            node_id,
            cluster_id,
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        let (node_id, role) = self
            .on_daemon(|daemon| async move { daemon.join(request).await })
            .await?
            .map_err(status)?;
        Ok(Response::new(JoinResponse {
            node_id,
            role: role as i32,
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let force = request.into_inner().force;
        self.on_daemon(|daemon| async move { daemon.leave(force).await })
            .await?
            .map_err(status)?;
        Ok(Response::new(LeaveResponse {}))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let info = self
            .on_daemon(|daemon| async move { daemon.info().await })
            .await?;
        Ok(Response::new(info))
    }
}
