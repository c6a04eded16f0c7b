//! The durable Raft log: entries, vote, commit index and purge point in one redb database.
//!
//! Entries are keyed by log index and stored in a compact binary form ([`entry_to_bytes`]: the
//! proposal as protobuf), sealed with the directory's [`SealKey`] and bound to their index (logs
//! written before hold JSON of openraft's `Entry`, still read); the vote, the committed log id and the last
//! purged log id sit in a small meta table, sealed likewise and bound to their key. Every write is
//! an immediately durable redb commit, run on the blocking pool so that fsync never stalls the
//! async runtime.
#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; boxing it here buys nothing"
)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend,
    RaftLogReader, StorageError, StorageIOError, Vote,
};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;
use super::seal::{Record, SealKey};

const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

type Result<T> = std::result::Result<T, StorageError<u64>>;

/// The log database's page cache. redb's default, 1 GiB, fills with every page the log writes
/// (it is appended to, then read back only by a lagging follower or a restart) and stays
/// resident: most of a busy leader's memory. The B-tree's inner pages fit many times over.
const LOG_CACHE_BYTES: usize = 64 << 20;

/// A cheap-to-clone handle on the log database; clones share it (openraft's log reader is one).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    key: SealKey,
    /// Entries appended and their bytes as written (sealed), for the metrics.
    appended_entries: Counter,
    appended_bytes: Counter,
}

impl LogStore {
    /// Opens (creating if absent) the database at `path`, whose records are sealed with `key`.
    /// Blocking: call it off the runtime.
    pub fn open(path: &Path, key: SealKey) -> std::result::Result<Self, redb::Error> {
        let db = redb::Builder::new()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            key,
            appended_entries: Counter::default(),
            appended_bytes: Counter::default(),
        })
    }

    /// Counts appended entries into `entries` and their bytes on disk into `bytes`.
    pub fn counted(mut self, entries: Counter, bytes: Counter) -> Self {
        self.appended_entries = entries;
        self.appended_bytes = bytes;
        self
    }

    /// Runs `f` on the blocking pool with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        f: impl FnOnce(&Database) -> std::result::Result<T, redb::Error> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StorageIOError::new(subject, verb, &e).into()),
            Err(e) => Err(StorageIOError::new(subject, verb, &e).into()),
        }
    }

    async fn read_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>> {
        let raw = self
            .blocking(subject.clone(), ErrorVerb::Read, move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(META)?;
                Ok(table.get(key)?.map(|v| v.value().to_vec()))
            })
            .await?;
        raw.map(|bytes| self.decode(Record::Meta(key), bytes, subject))
            .transpose()
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<()> {
        let bytes = self.encode(Record::Meta(key), value, subject.clone())?;
        self.blocking(subject, ErrorVerb::Write, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// `entry` in its binary form, sealed as the entry at its index.
    fn encode_entry(&self, entry: &Entry<TypeConfig>) -> Result<Vec<u8>> {
        let (subject, verb) = (ErrorSubject::Logs, ErrorVerb::Write);
        let bytes =
            entry_to_bytes(entry).map_err(|e| StorageIOError::new(subject.clone(), verb, &e))?;
        let sealed = self
            .key
            .seal(Record::LogEntry(entry.log_id.index), &bytes)
            .map_err(|e| StorageIOError::new(subject, verb, &e))?;
        Ok(sealed)
    }

    /// Opens the entry at `index` from its sealed `bytes`, binary or JSON.
    fn decode_entry(&self, index: u64, bytes: Vec<u8>) -> Result<Entry<TypeConfig>> {
        let (subject, verb) = (ErrorSubject::Logs, ErrorVerb::Read);
        let plain = self
            .key
            .open(Record::LogEntry(index), bytes)
            .map_err(|e| StorageIOError::new(subject.clone(), verb, &e))?;
        Ok(entry_from_bytes(&plain).map_err(|e| StorageIOError::new(subject, verb, &e))?)
    }

    /// JSON of `value`, sealed as `record`.
    fn encode<T: Serialize>(
        &self,
        record: Record<'_>,
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Write, &e))?;
        let sealed = self
            .key
            .seal(record, &json)
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, &e))?;
        Ok(sealed)
    }

    /// Opens `bytes` as `record` and parses the JSON inside.
    fn decode<T: DeserializeOwned>(
        &self,
        record: Record<'_>,
        bytes: Vec<u8>,
        subject: ErrorSubject<u64>,
    ) -> Result<T> {
        let json = self
            .key
            .open(record, bytes)
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Read, &e))?;
        let value = serde_json::from_slice(&json)
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Read, &e))?;
        Ok(value)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let raw = self
            .blocking(ErrorSubject::Logs, ErrorVerb::Read, move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOGS)?;
                let mut out = Vec::new();
                for item in table.range::<u64>(bounds)? {
                    let (index, value) = item?;
                    out.push((index.value(), value.value().to_vec()));
                }
                Ok(out)
            })
            .await?;
        raw.into_iter()
            .map(|(index, bytes)| self.decode_entry(index, bytes))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs).await?;
        let last = self
            .blocking(ErrorSubject::Logs, ErrorVerb::Read, |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOGS)?;
                Ok(table.last()?.map(|(k, v)| (k.value(), v.value().to_vec())))
            })
            .await?;
        let last_log_id = match last {
            Some((index, bytes)) => Some(self.decode_entry(index, bytes)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        Ok(self
            .read_meta::<Option<LogId<u64>>>(KEY_COMMITTED, ErrorSubject::Store)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, self.encode_entry(&entry)?)))
            .collect::<Result<Vec<_>>>()?;
        let count = encoded.len() as u64;
        let bytes: u64 = encoded.iter().map(|(_, b)| b.len() as u64).sum();
        let written = self
            .blocking(ErrorSubject::Logs, ErrorVerb::Write, move |db| {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOGS)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice())?;
                    }
                }
                txn.commit()?;
                Ok(())
            })
            .await;
        match &written {
            Ok(()) => {
                self.appended_entries.inc_by(count);
                self.appended_bytes.inc_by(bytes);
                callback.log_io_completed(Ok(()))
            }
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        tracing::debug!(log.index = log_id.index, "truncating raft log");
        self.blocking(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        tracing::debug!(log.index = log_id.index, "purging raft log");
        let purged = self.encode(Record::Meta(KEY_LAST_PURGED), &log_id, ErrorSubject::Logs)?;
        self.blocking(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(META)?
                .insert(KEY_LAST_PURGED, purged.as_slice())?;
            txn.open_table(LOGS)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// The first byte of an entry in its binary form; one written as JSON starts with `{`.
const BINARY_ENTRY: u8 = 1;
/// The kinds of payload, after the log id.
const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// `entry` as stored: [`BINARY_ENTRY`], its log id (term, leader node, index) as varints, the
/// payload's kind, then a proposal as protobuf or a membership as JSON. JSON of a batch of 500
/// task writes took a leader creating a million tasks 7% of its CPU to write and read back for
/// applying, and made every entry twice as long.
pub(crate) fn entry_to_bytes(
    entry: &Entry<TypeConfig>,
) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let mut bytes = vec![BINARY_ENTRY];
    let LogId { leader_id, index } = entry.log_id;
    for n in [leader_id.term, leader_id.node_id, index] {
        prost::encoding::encode_varint(n, &mut bytes);
    }
    match &entry.payload {
        EntryPayload::Blank => bytes.push(BLANK),
        EntryPayload::Normal(proposal) => {
            bytes.reserve(proposal.encoded_len() + 1);
            bytes.push(NORMAL);
            proposal
                .encode(&mut bytes)
                .expect("a Vec grows to take any message");
        }
        EntryPayload::Membership(membership) => {
            bytes.push(MEMBERSHIP);
            serde_json::to_writer(&mut bytes, membership)?;
        }
    }
    Ok(bytes)
}

/// The entry `bytes` holds, in its binary form or as JSON (logs written before the binary form).
pub(crate) fn entry_from_bytes(
    bytes: &[u8],
) -> std::result::Result<Entry<TypeConfig>, std::io::Error> {
    let invalid = |what: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("raft log entry: {what}"),
        )
    };
    let Some((&first, mut rest)) = bytes.split_first() else {
        return Err(invalid(&"empty"));
    };
    if first == b'{' {
        return serde_json::from_slice(bytes).map_err(|e| invalid(&e));
    }
    if first != BINARY_ENTRY {
        return Err(invalid(&format_args!("unknown form {first}")));
    }
    let mut varint = || prost::encoding::decode_varint(&mut rest).map_err(|e| invalid(&e));
    let (term, node_id, index) = (varint()?, varint()?, varint()?);
    let log_id = LogId::new(CommittedLeaderId::new(term, node_id), index);
    let Some((&kind, payload)) = rest.split_first() else {
        return Err(invalid(&"no payload"));
    };
    let payload = match kind {
        BLANK if payload.is_empty() => EntryPayload::Blank,
        NORMAL => {
            EntryPayload::Normal(mesh_proto::Proposal::decode(payload).map_err(|e| invalid(&e))?)
        }
        MEMBERSHIP => {
            EntryPayload::Membership(serde_json::from_slice(payload).map_err(|e| invalid(&e))?)
        }
        _ => return Err(invalid(&format_args!("unknown payload {kind}"))),
    };
    Ok(Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Proposal, StoreAction, Task, Transaction, store_action};
    use openraft::{BasicNode, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    fn entries() -> Vec<Entry<TypeConfig>> {
        let log_id = |index| LogId::new(CommittedLeaderId::new(7, u64::MAX - 3), index);
        let task = Task {
            id: "t1".into(),
            service_id: "s1".into(),
            slot: 3,
            ..Default::default()
        };
        let proposal = Proposal {
            transactions: vec![Transaction {
                actions: vec![StoreAction {
                    kind: 1,
                    target: Some(store_action::Target::Task(task)),
                }],
            }],
        };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (1, BasicNode::new("10.0.0.1:2377")),
                (2, BasicNode::new("10.0.0.2:2377")),
            ]),
        );
        vec![
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(300),
                payload: EntryPayload::Normal(proposal),
            },
            Entry {
                log_id: log_id(u64::MAX),
                payload: EntryPayload::Membership(membership),
            },
        ]
    }

    /// Every kind of entry comes back as it was written, from the binary form and from JSON (a
    /// log written before it); the binary form of a proposal is its protobuf, not JSON.
    #[test]
    fn entries_read_back_from_binary_and_json() {
        for entry in entries() {
            let binary = entry_to_bytes(&entry).unwrap();
            assert_eq!(binary[0], BINARY_ENTRY);
            let json = serde_json::to_vec(&entry).unwrap();
            for bytes in [&binary, &json] {
                let back = entry_from_bytes(bytes).unwrap();
                assert_eq!(back.log_id, entry.log_id);
                assert_eq!(
                    serde_json::to_value(&back.payload).unwrap(),
                    serde_json::to_value(&entry.payload).unwrap()
                );
            }
            if let EntryPayload::Normal(proposal) = &entry.payload {
                assert!(binary.ends_with(&proposal.encode_to_vec()));
                assert!(
                    binary.len() < json.len() / 2,
                    "{} vs {}",
                    binary.len(),
                    json.len()
                );
            }
        }
    }

    /// Damaged bytes are refused with an error, never a panic or a wrong entry.
    #[test]
    fn damaged_entries_are_refused() {
        let normal = entry_to_bytes(&entries()[1]).unwrap();
        let cases: [(&str, Vec<u8>); 6] = [
            ("empty", vec![]),
            ("unknown form", vec![9, 1, 1, 1, BLANK]),
            ("cut in its log id", normal[..2].to_vec()),
            ("no payload", vec![BINARY_ENTRY, 1, 1, 1]),
            ("unknown payload", vec![BINARY_ENTRY, 1, 1, 1, 7]),
            ("cut proposal", normal[..normal.len() - 3].to_vec()),
        ];
        for (what, bytes) in cases {
            let err = entry_from_bytes(&bytes).expect_err(what);
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{what}");
        }
        let blank_with_more = [BINARY_ENTRY, 1, 1, 1, BLANK, 0];
        assert!(entry_from_bytes(&blank_with_more).is_err());
    }
}
