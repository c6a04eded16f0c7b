//! The control API `meshctl` drives: the `mesh.v1.Control` gRPC service, served on the local socket
//! and on the manager listener. Every request is validated here; errors become statuses in
//! [`error`]. A daemon that is not (or no longer) a manager answers every call with a clear error.

#[cfg(test)]
mod chunk_tests;
mod cluster;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
pub mod health;
mod networks;
mod node_ca;
mod nodes;
pub mod ports;
mod resolve;
pub mod secrets;
mod services;
pub mod validate;

pub use error::{LEADER_METADATA, limit, not_a_manager, status};
pub use node_ca::{DEFAULT_CERT_EXPIRY, NodeCaService, cert_validity, trusted_roots_pem};
pub(crate) use services::roll_back;
pub use validate::{service_name as validate_service_name, service_spec as validate_service_spec};

use mesh_proto::control_client::ControlClient;
use mesh_proto::control_server::{Control, ControlServer};
use mesh_proto::*;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::dispatcher::LogBroker;
use crate::store::Store;

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// A List answer: the chunks of one read, each its own message.
fn chunked<T: Send + 'static>(chunks: Vec<T>) -> Response<Stream<T>> {
    Response::new(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
}

/// What the API needs of a running manager.
#[derive(Clone)]
pub struct ManagerContext {
    pub store: Store,
    pub broker: LogBroker,
    pub raft: crate::raft::RaftNode,
    pub transport: crate::transport::Transport,
    pub events: crate::events::EventLog,
}

/// The Control service; detached (answering "not a manager") until a manager is attached.
#[derive(Clone, Default)]
pub struct Api {
    manager: Arc<RwLock<Option<ManagerContext>>>,
}

impl Api {
    pub fn attach(&self, context: ManagerContext) {
        *self.manager.write().unwrap_or_else(|e| e.into_inner()) = Some(context);
    }

    pub fn detach(&self) {
        *self.manager.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The running manager, for a caller allowed to use it: the local socket, or a manager
    /// certificate over TLS.
    fn context<T>(&self, request: &Request<T>) -> Result<ManagerContext, Status> {
        crate::ca::require_local_or_manager(request)?;
        self.manager
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(not_a_manager)
    }
}

/// Writes go to the leader: a client of it, or `None` when this manager leads.
async fn leader(context: &ManagerContext) -> Result<Option<ControlClient<Channel>>, Status> {
    Ok(leader_channel(context).await?.map(ControlClient::new))
}

/// A channel to the leader, or `None` when this manager leads.
async fn leader_channel(context: &ManagerContext) -> Result<Option<Channel>, Status> {
    const ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut watch = context.raft.leadership();
    let mut unreachable: Option<String> = None;
    // Right after a start or a leader's loss an election may be under way: give it a moment, and
    // give a leader that cannot be reached the time to be replaced.
    for _ in 0..2 {
        let leadership = tokio::time::timeout(
            ELECTION_WAIT,
            watch.wait_for(|l| {
                l.leader_id.is_some() && l.leader_addr.as_ref() != unreachable.as_ref()
            }),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|l| l.clone());
        let Some(leadership) = leadership else {
            break;
        };
        if leadership.is_leader {
            return Ok(None);
        }
        let Some(addr) = leadership.leader_addr else {
            break;
        };
        match context.transport.channel(&addr).await {
            Ok(channel) => return Ok(Some(channel)),
            Err(err) => {
                tracing::debug!(leader = %addr, error = %err, "leader unreachable");
                unreachable = Some(addr);
            }
        }
    }
    Err(status(crate::store::StoreError::NoQuorum))
}

/// Forwards a write to the leader when this manager does not lead.
macro_rules! forward {
    ($context:expr, $request:expr, $method:ident) => {
        if let Some(mut leader) = leader(&$context).await? {
            return leader.$method($request.into_inner()).await;
        }
    };
}

impl Api {
    /// The service, refusing requests larger than [`MAX_REQUEST_BYTES`] before they are decoded.
    /// Lists are answered in chunks of at most [`LIST_CHUNK_BYTES`] each (see [`chunked`]), so no
    /// reply nears a client's 4 MiB limit however many tasks there are.
    ///
    /// [`LIST_CHUNK_BYTES`]: mesh_proto::chunks::LIST_CHUNK_BYTES
    ///
    /// [`MAX_REQUEST_BYTES`]: crate::limits::MAX_REQUEST_BYTES
    pub fn grpc_service(&self) -> ControlServer<Api> {
        ControlServer::new(self.clone()).max_decoding_message_size(crate::limits::MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl Control for Api {
    type ListNodesStream = Stream<ListNodesResponse>;
    type ListServicesStream = Stream<ListServicesResponse>;
    type ListTasksStream = Stream<ListTasksResponse>;
    type ListNetworksStream = Stream<ListNetworksResponse>;
    type ListSecretsStream = Stream<ListSecretsResponse>;
    type ListConfigsStream = Stream<ListConfigsResponse>;
    type ServiceLogsStream = Stream<LogMessage>;
    type EventsStream = Stream<ClusterEvent>;

    async fn get_node(&self, r: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        nodes::get(&self.context(&r)?, r.into_inner()).map(Response::new)
    }

    async fn list_nodes(
        &self,
        r: Request<ListNodesRequest>,
    ) -> Result<Response<Self::ListNodesStream>, Status> {
        Ok(chunked(nodes::list(&self.context(&r)?)))
    }

    async fn update_node(&self, r: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, update_node);
        nodes::update(&context, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        r: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, remove_node);
        nodes::remove(&context.store, r.into_inner()).await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn create_service(
        &self,
        r: Request<CreateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, create_service);
        services::create(&context.store, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_service(
        &self,
        r: Request<GetServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        services::get(&self.context(&r)?.store, r.into_inner()).map(Response::new)
    }

    async fn update_service(
        &self,
        r: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, update_service);
        services::update(&context.store, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_service(
        &self,
        r: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, remove_service);
        services::remove(&context.store, r.into_inner()).await?;
        Ok(Response::new(RemoveServiceResponse {}))
    }

    async fn list_services(
        &self,
        r: Request<ListServicesRequest>,
    ) -> Result<Response<Self::ListServicesStream>, Status> {
        Ok(chunked(services::list(&self.context(&r)?.store)))
    }

    async fn list_tasks(
        &self,
        r: Request<ListTasksRequest>,
    ) -> Result<Response<Self::ListTasksStream>, Status> {
        let context = self.context(&r)?;
        Ok(chunked(services::list_tasks(
            &context.store,
            r.into_inner(),
        )))
    }

    async fn get_cluster(
        &self,
        r: Request<GetClusterRequest>,
    ) -> Result<Response<Cluster>, Status> {
        use crate::store::Read;
        let context = self.context(&r)?;
        context
            .store
            .view_promptly(|tx| tx.list::<Cluster>().into_iter().next())
            .map(|mut cluster| {
                // The CA's key and the gossip keys never leave the store through the API.
                if let Some(root) = cluster.root_ca.as_mut() {
                    root.ca_key.clear();
                }
                cluster.gossip_keys.clear();
                Response::new(cluster)
            })
            .ok_or_else(|| Status::not_found("the cluster object does not exist yet"))
    }

    async fn get_join_tokens(
        &self,
        r: Request<GetJoinTokensRequest>,
    ) -> Result<Response<GetJoinTokensResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, get_join_tokens);
        cluster::join_tokens(&context, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn rotate_root_ca(
        &self,
        r: Request<RotateRootCaRequest>,
    ) -> Result<Response<RotateRootCaResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, rotate_root_ca);
        cluster::rotate_root_ca(&context, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_network(
        &self,
        r: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, create_network);
        networks::create(&context.store, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_network(
        &self,
        r: Request<GetNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        networks::get(&self.context(&r)?.store, r.into_inner()).map(Response::new)
    }

    async fn list_networks(
        &self,
        r: Request<ListNetworksRequest>,
    ) -> Result<Response<Self::ListNetworksStream>, Status> {
        Ok(chunked(networks::list(&self.context(&r)?.store)))
    }

    async fn remove_network(
        &self,
        r: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, remove_network);
        networks::remove(&context.store, r.into_inner()).await?;
        Ok(Response::new(RemoveNetworkResponse {}))
    }

    async fn create_secret(
        &self,
        r: Request<CreateSecretRequest>,
    ) -> Result<Response<Secret>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, create_secret);
        secrets::create::<Secret>(&context.store, r.into_inner().spec)
            .await
            .map(Response::new)
    }

    async fn get_secret(&self, r: Request<GetSecretRequest>) -> Result<Response<Secret>, Status> {
        let context = self.context(&r)?;
        secrets::get::<Secret>(&context.store, &r.into_inner().reference).map(Response::new)
    }

    async fn list_secrets(
        &self,
        r: Request<ListSecretsRequest>,
    ) -> Result<Response<Self::ListSecretsStream>, Status> {
        let chunk = |secrets| ListSecretsResponse { secrets };
        Ok(chunked(secrets::list::<Secret, _>(
            &self.context(&r)?.store,
            chunk,
        )))
    }

    async fn update_secret(
        &self,
        r: Request<UpdateSecretRequest>,
    ) -> Result<Response<Secret>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, update_secret);
        let req = r.into_inner();
        secrets::update::<Secret>(&context.store, &req.secret_id, req.version, req.spec)
            .await
            .map(Response::new)
    }

    async fn remove_secret(
        &self,
        r: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, remove_secret);
        secrets::remove::<Secret>(&context.store, &r.into_inner().secret_id).await?;
        Ok(Response::new(RemoveSecretResponse {}))
    }

    async fn create_config(
        &self,
        r: Request<CreateConfigRequest>,
    ) -> Result<Response<Config>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, create_config);
        secrets::create::<Config>(&context.store, r.into_inner().spec)
            .await
            .map(Response::new)
    }

    async fn get_config(&self, r: Request<GetConfigRequest>) -> Result<Response<Config>, Status> {
        let context = self.context(&r)?;
        secrets::get::<Config>(&context.store, &r.into_inner().reference).map(Response::new)
    }

    async fn list_configs(
        &self,
        r: Request<ListConfigsRequest>,
    ) -> Result<Response<Self::ListConfigsStream>, Status> {
        let chunk = |configs| ListConfigsResponse { configs };
        Ok(chunked(secrets::list::<Config, _>(
            &self.context(&r)?.store,
            chunk,
        )))
    }

    async fn update_config(
        &self,
        r: Request<UpdateConfigRequest>,
    ) -> Result<Response<Config>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, update_config);
        let req = r.into_inner();
        secrets::update::<Config>(&context.store, &req.config_id, req.version, req.spec)
            .await
            .map(Response::new)
    }

    async fn remove_config(
        &self,
        r: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        let context = self.context(&r)?;
        forward!(context, r, remove_config);
        secrets::remove::<Config>(&context.store, &r.into_inner().config_id).await?;
        Ok(Response::new(RemoveConfigResponse {}))
    }

    async fn service_logs(
        &self,
        r: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        services::logs(&self.context(&r)?, r.into_inner()).map(Response::new)
    }

    async fn events(
        &self,
        r: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        events::subscribe(&self.context(&r)?, r.into_inner()).map(Response::new)
    }
}
