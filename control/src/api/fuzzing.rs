//! The control API's write methods, and `ListTasks` (the list a request can filter), as the fuzz
//! target calls them: the request decoded from the bytes a client sent, then the very handler the
//! gRPC service runs, against a store whose writes apply at once. Compiled only with the
//! `fuzzing` feature.

use mesh_proto::chunks::LIST_CHUNK_BYTES;
use mesh_proto::{
    Config, CreateConfigRequest, CreateNetworkRequest, CreateSecretRequest, CreateServiceRequest,
    ListTasksRequest, RemoveConfigRequest, RemoveNetworkRequest, RemoveNodeRequest,
    RemoveSecretRequest, RemoveServiceRequest, Secret, UpdateConfigRequest, UpdateNodeRequest,
    UpdateSecretRequest, UpdateServiceRequest,
};
use prost::Message;
use tonic::Status;

use super::{networks, nodes, secrets, services};
use crate::store::Store;

/// The methods a request can be for, by the number its first byte gives.
pub(crate) const METHODS: [&str; 14] = [
    "CreateService",
    "UpdateService",
    "RemoveService",
    "CreateNetwork",
    "RemoveNetwork",
    "UpdateNode",
    "RemoveNode",
    "CreateSecret",
    "UpdateSecret",
    "RemoveSecret",
    "CreateConfig",
    "UpdateConfig",
    "RemoveConfig",
    "ListTasks",
];

/// Decodes `body` as the request of `METHODS[method % METHODS.len()]` and runs its handler on
/// `store`. A body that does not decode is refused as tonic refuses it. Panics if a list's
/// message is over [`LIST_CHUNK_BYTES`] with more than one object in it.
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
        6 => nodes::remove(store, RemoveNodeRequest::decode(body).map_err(bad)?).await,
        7 => {
            let request = CreateSecretRequest::decode(body).map_err(bad)?;
            secrets::create::<Secret>(store, request.spec)
                .await
                .map(drop)
        }
        8 => {
            let r = UpdateSecretRequest::decode(body).map_err(bad)?;
            let updated = secrets::update::<Secret>(store, &r.secret_id, r.version, r.spec);
            updated.await.map(drop)
        }
        9 => {
            let request = RemoveSecretRequest::decode(body).map_err(bad)?;
            secrets::remove::<Secret>(store, &request.secret_id).await
        }
        10 => {
            let request = CreateConfigRequest::decode(body).map_err(bad)?;
            secrets::create::<Config>(store, request.spec)
                .await
                .map(drop)
        }
        11 => {
            let r = UpdateConfigRequest::decode(body).map_err(bad)?;
            let updated = secrets::update::<Config>(store, &r.config_id, r.version, r.spec);
            updated.await.map(drop)
        }
        12 => {
            let request = RemoveConfigRequest::decode(body).map_err(bad)?;
            secrets::remove::<Config>(store, &request.config_id).await
        }
        _ => {
            let request = ListTasksRequest::decode(body).map_err(bad)?;
            for chunk in services::list_tasks(store, request) {
                let bytes = chunk.encoded_len();
                assert!(
                    bytes <= LIST_CHUNK_BYTES || chunk.tasks.len() == 1,
                    "a ListTasks message of {} tasks is {bytes} bytes",
                    chunk.tasks.len()
                );
            }
            Ok(())
        }
    }
}
