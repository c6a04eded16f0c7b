//! The control API's write methods as the fuzz target calls them: the request decoded from the
//! bytes a client sent, then the very handler the gRPC service runs, against a store whose
//! writes apply at once. Compiled only with the `fuzzing` feature.

use mesh_proto::{
    CreateNetworkRequest, CreateServiceRequest, RemoveNetworkRequest, RemoveNodeRequest,
    RemoveServiceRequest, UpdateNodeRequest, UpdateServiceRequest,
};
use prost::Message;
use tonic::Status;

use super::{networks, nodes, services};
use crate::store::Store;

/// The methods a request can be for, by the number its first byte gives.
pub(crate) const METHODS: [&str; 7] = [
    "CreateService",
    "UpdateService",
    "RemoveService",
    "CreateNetwork",
    "RemoveNetwork",
    "UpdateNode",
    "RemoveNode",
];

/// Decodes `body` as the request of `METHODS[method % METHODS.len()]` and runs its handler on
/// `store`. A body that does not decode is refused as tonic refuses it.
pub(crate) async fn call(store: &Store, method: u8, body: &[u8]) -> Result<(), Status> {
    let bad = |e: prost::DecodeError| Status::invalid_argument(e.to_string());
    match usize::from(method) % METHODS.len() {
        0 => {
            let request = CreateServiceRequest::decode(body).map_err(bad)?;
            services::create(store, request).await.map(drop)
        }
        1 => {
            let request = UpdateServiceRequest::decode(body).map_err(bad)?;
            services::update(store, request).await.map(drop)
        }
        2 => services::remove(store, RemoveServiceRequest::decode(body).map_err(bad)?).await,
        3 => {
            let request = CreateNetworkRequest::decode(body).map_err(bad)?;
            networks::create(store, request).await.map(drop)
        }
        4 => networks::remove(store, RemoveNetworkRequest::decode(body).map_err(bad)?).await,
        5 => {
            let request = UpdateNodeRequest::decode(body).map_err(bad)?;
            nodes::update_spec(store, request).await.map(drop)
        }
        _ => nodes::remove(store, RemoveNodeRequest::decode(body).map_err(bad)?).await,
    }
}
