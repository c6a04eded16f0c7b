//! The snapshot file: the latest snapshot's metadata and data, replaced atomically.
//!
//! Layout of `dir/snapshot.bin`: the magic `MESHSNAP`, then one record sealed with the directory's
//! [`SealKey`] (its first byte is the format version). Sealed inside: the metadata's length as a
//! big-endian u64, the metadata (openraft's `SnapshotMeta`: last applied log id, last membership,
//! snapshot id) as JSON, then the data: a prost-encoded [`mesh_proto::StoreSnapshot`]. A new
//! snapshot is written to a temporary file, fsynced, renamed over the old one, and the directory
//! is fsynced.
#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; boxing it here buys nothing"
)]

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{
    BasicNode, ErrorSubject, ErrorVerb, Snapshot, SnapshotMeta, StorageError, StorageIOError,
};

use super::TypeConfig;
use super::seal::{Record, SealKey};
use crate::offload::in_background;

const MAGIC: &[u8; 8] = b"MESHSNAP";
const FILE_NAME: &str = "snapshot.bin";
const TMP_NAME: &str = "snapshot.bin.tmp";

pub type Meta = SnapshotMeta<u64, BasicNode>;
/// A snapshot read from disk: its metadata and data.
pub type Loaded = (Meta, Vec<u8>);
type Result<T> = std::result::Result<T, StorageError<u64>>;

/// The snapshot file in one directory. Clones share the record of the current snapshot, which
/// serialises writers and keeps an older snapshot from replacing a newer one.
#[derive(Clone)]
pub struct SnapshotFile {
    dir: PathBuf,
    key: SealKey,
    current: Arc<Mutex<Option<Meta>>>,
}

impl SnapshotFile {
    /// Opens the snapshot in `dir`, sealed with `key`, returning it if one exists. Blocking.
    pub fn open(dir: &Path, key: SealKey) -> Result<(Self, Option<Loaded>)> {
        let loaded = read(&dir.join(FILE_NAME), &key)?;
        let file = Self {
            dir: dir.to_path_buf(),
            key,
            current: Arc::new(Mutex::new(loaded.as_ref().map(|(meta, _)| meta.clone()))),
        };
        Ok((file, loaded))
    }

    /// Makes `data` the current snapshot unless a newer one is already on disk.
    pub async fn save(&self, meta: Meta, data: Arc<Vec<u8>>) -> Result<()> {
        let this = self.clone();
        let signature = meta.signature();
        // Sealing and writing a hundred megabytes: behind the manager's work, as encoding it.
        let join = in_background("mesh-snapshot", move || {
            let mut current = this.current.lock().unwrap_or_else(|e| e.into_inner());
            if current
                .as_ref()
                .is_some_and(|c| c.last_log_id > meta.last_log_id)
            {
                tracing::debug!(snapshot.id = %meta.snapshot_id, "older snapshot not saved");
                return Ok(());
            }
            write(&this.dir, &this.key, &meta, &data)?;
            tracing::info!(snapshot.id = %meta.snapshot_id, bytes = data.len(), "snapshot saved");
            *current = Some(meta);
            Ok::<_, std::io::Error>(())
        })
        .await;
        match join {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_snapshot(Some(signature), &e).into()),
            Err(e) => Err(StorageIOError::write_snapshot(Some(signature), &e).into()),
        }
    }

    /// The current snapshot, read back from disk.
    pub async fn current(&self) -> Result<Option<Snapshot<TypeConfig>>> {
        let path = self.dir.join(FILE_NAME);
        let key = self.key.clone();
        let loaded = tokio::task::spawn_blocking(move || read(&path, &key))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))??;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

fn read(path: &Path, key: &SealKey) -> Result<Option<Loaded>> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
    };
    let corrupt = |what: &str| {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot {} is corrupt: {what}", path.display()),
        );
        StorageError::from(StorageIOError::new(
            ErrorSubject::Snapshot(None),
            ErrorVerb::Read,
            &e,
        ))
    };
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt("bad magic"));
    }
    bytes.drain(..MAGIC.len());
    let mut plain = key
        .open(Record::Snapshot, bytes)
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    let (len, rest) = plain
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("truncated header"))?;
    let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| corrupt("bad length"))?;
    if rest.len() < len {
        return Err(corrupt("truncated metadata"));
    }
    let meta: Meta = serde_json::from_slice(&rest[..len]).map_err(|_| corrupt("bad metadata"))?;
    // Moved down in place: a split would copy the hundreds of megabytes after the header.
    plain.drain(..8 + len);
    Ok(Some((meta, plain)))
}

fn write(dir: &Path, key: &SealKey, meta: &Meta, data: &[u8]) -> std::io::Result<()> {
    let meta_bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let header = (meta_bytes.len() as u64).to_be_bytes();
    let sealed = key
        .seal_parts(Record::Snapshot, &[&header, &meta_bytes, data])
        .map_err(std::io::Error::other)?;
    let tmp = dir.join(TMP_NAME);
    let mut file = File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&sealed)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, StoredMembership};

    fn meta(index: u64) -> Meta {
        Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    fn key() -> SealKey {
        SealKey::from_bytes(&[7; 32])
    }

    #[tokio::test]
    async fn saves_reads_back_and_keeps_newest() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (file, loaded) = SnapshotFile::open(dir.path(), key())?;
        assert!(loaded.is_none());
        file.save(meta(5), Arc::new(b"five".to_vec())).await?;
        file.save(meta(3), Arc::new(b"three".to_vec())).await?;
        let (_, loaded) = SnapshotFile::open(dir.path(), key())?;
        let (got, data) = loaded.ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
        assert_eq!(got, meta(5));
        assert_eq!(data, b"five");
        assert!(!dir.path().join(TMP_NAME).exists());
        Ok(())
    }

    #[test]
    fn refuses_a_corrupt_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"MESHSNP1\0\0\0\0\0\0\0\x09{}")?;
        assert!(SnapshotFile::open(dir.path(), key()).is_err());
        // A well-sealed record whose contents are not a snapshot.
        let sealed = key().seal(Record::Snapshot, b"\0\0\0\0\0\0\0\x09{}")?;
        fs::write(&path, [MAGIC.as_slice(), &sealed].concat())?;
        let err = SnapshotFile::open(dir.path(), key())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("truncated metadata")),
            "{err:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn seals_the_file_and_refuses_a_tampered_or_foreign_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (file, _) = SnapshotFile::open(dir.path(), key())?;
        file.save(meta(5), Arc::new(b"secret snapshot data".to_vec()))
            .await?;
        let path = dir.path().join(FILE_NAME);
        let sealed = fs::read(&path)?;
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert!(
            !sealed.windows(3).any(|w| w == b"s5\""),
            "metadata is sealed too"
        );
        let mut tampered = sealed.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x80;
        fs::write(&path, &tampered)?;
        let err = SnapshotFile::open(dir.path(), key())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("corrupt or was sealed with another key")),
            "{err:?}"
        );
        fs::write(&path, &sealed)?;
        let foreign = SnapshotFile::open(dir.path(), SealKey::from_bytes(&[8; 32]));
        assert!(foreign.is_err());
        let (_, loaded) = SnapshotFile::open(dir.path(), key())?;
        assert_eq!(
            loaded.map(|(_, data)| data),
            Some(b"secret snapshot data".to_vec())
        );
        Ok(())
    }
}
