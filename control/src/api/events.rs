//! `Events`: the cluster's events as this manager applied them (see [`crate::events`]).

use mesh_proto::{ClusterEvent, EventsRequest};
use tonic::Status;

use super::{ManagerContext, Stream};
use crate::events::Filter;

pub(super) fn subscribe(
    context: &ManagerContext,
    request: EventsRequest,
) -> Result<Stream<ClusterEvent>, Status> {
    let filter = Filter::from_request(&request).map_err(Status::invalid_argument)?;
    Ok(Box::pin(context.events.subscribe(filter)))
}
