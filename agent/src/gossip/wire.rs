//! What travels inside a sealed datagram: either a foca packet (membership, with record updates
//! piggybacked as custom broadcasts) or an anti-entropy message, and how record updates are
//! handed to foca's broadcast machinery.

use std::sync::{Arc, Mutex, MutexGuard};

use foca::{BroadcastHandler, Invalidates, Member};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::identity::NodeIdentity;
use super::membership::{ActiveMembers, Buckets, MemberDigest, MembersError, decode_members};
use super::records::{Digest, RecordKey, RecordTable, Version, VersionedRecord};
use super::{Change, now_ms};

const KIND_FOCA: u8 = 0;
const KIND_SYNC: u8 = 1;
const KIND_MEMBERS: u8 = 2;

/// Why a decrypted datagram could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown datagram kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("undecodable payload")]
    Decode(#[from] serde_json::Error),
    #[error(transparent)]
    Members(#[from] MembersError),
}

/// Anti-entropy messages, sent straight to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SyncMessage {
    /// "These are my versions in this key range": answered with `Records` and `Want`.
    Digest(Digest),
    /// Records the receiver lacks or holds older versions of.
    Records(Vec<VersionedRecord>),
    /// Keys the sender wants the receiver's records for.
    Want(Vec<RecordKey>),
    /// "These are the members I hold active": answered, where buckets differ, with the
    /// receiver's member states and a `MemberWant` for the sender's.
    MemberDigest(MemberDigest),
    /// Buckets whose member states the sender wants.
    MemberWant(Buckets),
}

pub(crate) enum Inbound<'a> {
    Foca(&'a [u8]),
    Sync(SyncMessage),
    Members(Vec<Member<NodeIdentity>>),
}

pub(crate) fn foca_frame(packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + 1);
    out.push(KIND_FOCA);
    out.extend_from_slice(packet);
    out
}

pub(crate) fn sync_frame(message: &SyncMessage) -> Result<Vec<u8>, WireError> {
    let mut out = vec![KIND_SYNC];
    serde_json::to_writer(&mut out, message)?;
    Ok(out)
}

/// A frame of member states, `body` from `membership::encode_members`.
pub(crate) fn members_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(KIND_MEMBERS);
    out.extend_from_slice(body);
    out
}

pub(crate) fn parse(plain: &[u8]) -> Result<Inbound<'_>, WireError> {
    match plain.split_first() {
        None => Err(WireError::Empty),
        Some((&KIND_FOCA, rest)) => Ok(Inbound::Foca(rest)),
        Some((&KIND_SYNC, rest)) => Ok(Inbound::Sync(serde_json::from_slice(rest)?)),
        Some((&KIND_MEMBERS, rest)) => Ok(Inbound::Members(decode_members(rest)?)),
        Some((&kind, _)) => Err(WireError::UnknownKind { kind }),
    }
}

/// Splits records into `Records` messages of roughly at most `max_bytes` each.
pub(crate) fn records_messages(
    records: Vec<VersionedRecord>,
    max_bytes: usize,
) -> Vec<SyncMessage> {
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for rec in records {
        let len = serde_json::to_vec(&rec).map_or(max_bytes, |v| v.len() + 1);
        if !batch.is_empty() && size + len > max_bytes {
            messages.push(SyncMessage::Records(std::mem::take(&mut batch)));
            size = 0;
        }
        size += len;
        batch.push(rec);
    }
    if !batch.is_empty() {
        messages.push(SyncMessage::Records(batch));
    }
    messages
}

/// Encodes one record update as a foca custom broadcast.
pub(crate) fn encode_broadcast(record: &VersionedRecord) -> Result<Vec<u8>, WireError> {
    Ok(serde_json::to_vec(record)?)
}

/// State shared between the gossip task, foca's broadcast handler and the `Gossip` handle.
pub(crate) struct Shared {
    pub(crate) table: RecordTable,
    /// Active members, this node included, by address (foca's notion of one member).
    pub(crate) members: ActiveMembers,
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Identifies a disseminated record version, so that foca stops spreading superseded ones.
#[derive(Debug, Clone)]
pub(crate) struct BroadcastKey {
    key: RecordKey,
    version: Version,
    tombstone: bool,
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.key == other.key
            && (&self.version, self.tombstone) >= (&other.version, other.tombstone)
    }
}

/// Merges record updates that arrive piggybacked on foca messages, and tells foca to keep
/// spreading the ones that were news.
pub(crate) struct RecordBroadcasts {
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) changes: mpsc::UnboundedSender<Change>,
}

impl BroadcastHandler<NodeIdentity> for RecordBroadcasts {
    type Key = BroadcastKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<BroadcastKey>, WireError> {
        let record: VersionedRecord = serde_json::from_slice(data)?;
        let key = BroadcastKey {
            key: record.record.key(),
            version: record.version.clone(),
            tombstone: record.tombstone,
        };
        if sender.is_none() {
            // Published here: already in the table.
            return Ok(Some(key));
        }
        let mut shared = lock(&self.shared);
        let newer = shared
            .table
            .get(&key.key)
            .is_none_or(|local| record.supersedes(local));
        let changes = shared.table.merge_remote([record.clone()], now_ms());
        let news = newer && shared.table.get(&key.key) == Some(&record);
        drop(shared);
        for change in changes {
            let _ = self.changes.send(change);
        }
        Ok(news.then_some(key))
    }
}
