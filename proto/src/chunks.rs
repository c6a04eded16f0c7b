//! List answers in chunks. The Control service's List calls stream their answer: each message
//! holds a run of the objects of one consistent view, at most [`LIST_CHUNK_BYTES`] encoded, so
//! no answer nears a gRPC message limit however many objects the cluster holds (Swarm's single
//! 4 MiB `ListTasks` answer broke at scale: swarmkit#2374). [`split`] cuts a list into such
//! messages on the manager; [`gather`] puts them back together on the client.

use futures::{Stream, StreamExt};
use prost::Message;

use crate::v1::{
    ListConfigsResponse, ListNetworksResponse, ListNodesResponse, ListSecretsResponse,
    ListServicesResponse, ListTasksResponse,
};

/// The most bytes one List answer message holds, encoded: a quarter of gRPC's default 4 MiB
/// limit, which clients (meshctl among them) keep. An object larger than this on its own comes
/// alone in its message; the store's limits keep every object well under 4 MiB (a service spec
/// encodes to at most 128 KiB, a config's data to less than 1000 KiB, a transaction to 4 MiB).
pub const LIST_CHUNK_BYTES: usize = 1024 * 1024;

/// Cuts `items` into runs whose costs add up to at most `bound`, in order, and makes a message
/// of each with `chunk`. `cost` is what an item adds to its message's encoded length (at least:
/// field key and length prefix included, see [`field_len`]). An item costing more than `bound`
/// makes a run of its own. An empty list still makes one (empty) message.
pub fn split<T, R>(
    items: Vec<T>,
    bound: usize,
    cost: impl Fn(&T) -> usize,
    mut chunk: impl FnMut(Vec<T>) -> R,
) -> Vec<R> {
    let mut chunks = Vec::new();
    let mut run = Vec::new();
    let mut size = 0;
    for item in items {
        let item_cost = cost(&item);
        if !run.is_empty() && size + item_cost > bound {
            chunks.push(chunk(std::mem::take(&mut run)));
            size = 0;
        }
        size += item_cost;
        run.push(item);
    }
    if !run.is_empty() || chunks.is_empty() {
        chunks.push(chunk(run));
    }
    chunks
}

/// What `message` adds to the encoding of the message holding it as field `tag`: key, length
/// prefix and body.
pub fn field_len<M: Message>(tag: u32, message: &M) -> usize {
    prost::encoding::message::encoded_len(tag, message)
}

/// A List answer's message, which adds the next chunk of its list to itself.
pub trait ListChunk: Default {
    /// Appends `next`'s objects (and merges its per-object maps).
    fn append(&mut self, next: Self);
}

/// The whole answer of a List call from its chunks, in the order they came; the first error
/// (a refusal, or the stream breaking off) stops it.
pub async fn gather<C: ListChunk>(
    chunks: impl Stream<Item = Result<C, tonic::Status>>,
) -> Result<C, tonic::Status> {
    let mut chunks = std::pin::pin!(chunks);
    let mut whole = C::default();
    while let Some(chunk) = chunks.next().await {
        whole.append(chunk?);
    }
    Ok(whole)
}

macro_rules! list_chunk {
    ($message:ty, $field:ident) => {
        impl ListChunk for $message {
            fn append(&mut self, next: Self) {
                self.$field.extend(next.$field);
            }
        }
    };
}

list_chunk!(ListNodesResponse, nodes);
list_chunk!(ListTasksResponse, tasks);
list_chunk!(ListNetworksResponse, networks);
list_chunk!(ListSecretsResponse, secrets);
list_chunk!(ListConfigsResponse, configs);

impl ListChunk for ListServicesResponse {
    fn append(&mut self, next: Self) {
        self.services.extend(next.services);
        self.running_tasks.extend(next.running_tasks);
        self.desired_tasks.extend(next.desired_tasks);
    }
}

#[cfg(test)]
mod tests;
