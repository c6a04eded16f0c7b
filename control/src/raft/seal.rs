//! Sealing of everything the Raft layer writes to disk, as Swarm encrypts its Raft logs and
//! snapshots with a data-encryption key: the cluster object carries the root CA's private key and
//! the join token secrets, and neither may sit on disk in plaintext.
//!
//! The key is 32 random bytes in `dir/seal.key` (mode 0600), created on first open. Each record
//! is sealed with ChaCha20-Poly1305 under a fresh random 96-bit nonce, and laid out as
//! `[format version][nonce][ciphertext][tag]`. The associated data binds the format version and
//! the record's identity (log index, meta key, snapshot), so a record moved elsewhere fails to
//! open just as a corrupt one does.
//!
//! What that protects against: the Raft files read without the key — a backup or copy of
//! `raft.redb` or `snapshot.bin`, a file shipped for debugging — and records tampered with or
//! corrupted on disk. What not: the key sits beside the data (as Swarm's Raft key sits beside its
//! node key when autolock is off), so anyone who can read the whole directory, root on the node,
//! can open everything.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The key's file in the raft directory.
pub const KEY_FILE: &str = "seal.key";
/// Files that hold sealed data: finding one without the key means the key was lost.
const SEALED_FILES: [&str; 2] = ["raft.redb", "snapshot.bin"];
const KEY_LEN: usize = 32;
/// The current record format; the first byte of every sealed record.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("reading the raft seal key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the raft seal key {path}: {source}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the raft seal key {path} holds {len} bytes instead of {KEY_LEN}")]
    KeyLength { path: PathBuf, len: usize },
    #[error(
        "{dir} holds raft data but no seal key ({KEY_FILE}): restore the key, or remove the directory to start afresh"
    )]
    MissingKey { dir: PathBuf },
    #[error("sealed {record} is corrupt or was sealed with another key")]
    Corrupt { record: String },
    #[error("sealed {record} has format version {version}, which this build cannot read")]
    UnsupportedVersion { record: String, version: u8 },
    #[error("sealing {record} failed")]
    Seal { record: String },
}

/// What a sealed record is, bound into its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// The log entry at this index.
    LogEntry(u64),
    /// A value of the log's meta table (vote, committed, last purged).
    Meta(&'a str),
    /// The snapshot file's contents.
    Snapshot,
}

impl Record<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = vec![VERSION];
        match self {
            Record::LogEntry(index) => {
                aad.extend_from_slice(b"mesh/raft/log/");
                aad.extend_from_slice(&index.to_be_bytes());
            }
            Record::Meta(key) => {
                aad.extend_from_slice(b"mesh/raft/meta/");
                aad.extend_from_slice(key.as_bytes());
            }
            Record::Snapshot => aad.extend_from_slice(b"mesh/raft/snapshot"),
        }
        aad
    }
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::LogEntry(index) => write!(f, "raft log entry {index}"),
            Record::Meta(key) => write!(f, "raft log meta {key:?}"),
            Record::Snapshot => f.write_str("raft snapshot"),
        }
    }
}

/// The data-encryption key of one raft directory; clones share it.
#[derive(Clone)]
pub struct SealKey {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // Only a wrong key length fails, and the type rules that out.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes a 32-byte key"));
        Self {
            key: Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// Reads `dir/seal.key`, creating it if `dir` holds no sealed data yet. Blocking.
    pub fn load_or_create(dir: &Path) -> Result<Self, SealError> {
        let path = dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let bytes: [u8; KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SealError::KeyLength {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if SEALED_FILES.iter().any(|name| dir.join(name).exists()) {
                    return Err(SealError::MissingKey {
                        dir: dir.to_path_buf(),
                    });
                }
                create(dir, &path)
            }
            Err(source) => Err(SealError::ReadKey { path, source }),
        }
    }

    /// Seals `plaintext` as `record`: `[version][nonce][ciphertext][tag]`.
    pub fn seal(&self, record: Record<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_parts(record, &[plaintext])
    }

    /// Seals the concatenation of `parts` as `record`, as [`seal`](Self::seal) would seal it,
    /// without first joining them: a snapshot's hundreds of megabytes are copied once.
    pub fn seal_parts(&self, record: Record<'_>, parts: &[&[u8]]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        let mut out = Vec::with_capacity(HEADER_LEN + len + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        for part in parts {
            out.extend_from_slice(part);
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record.aad()),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| SealError::Seal {
                record: record.to_string(),
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a record sealed as `record`, reusing its buffer for the plaintext.
    pub fn open(&self, record: Record<'_>, mut sealed: Vec<u8>) -> Result<Vec<u8>, SealError> {
        let corrupt = || SealError::Corrupt {
            record: record.to_string(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(corrupt)?;
        if version != VERSION {
            return Err(SealError::UnsupportedVersion {
                record: record.to_string(),
                version,
            });
        }
        let (nonce, _) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(corrupt)?;
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let len = self
            .key
            .open_in_place(nonce, Aad::from(record.aad()), &mut sealed[HEADER_LEN..])
            .map_err(|_| corrupt())?
            .len();
        sealed.truncate(HEADER_LEN + len);
        sealed.drain(..HEADER_LEN);
        Ok(sealed)
    }
}

/// Writes a new random key to a private temporary file and links it into place, so that the
/// key file appears whole or not at all, and a concurrent creator's key is never replaced.
fn create(dir: &Path, path: &Path) -> Result<SealKey, SealError> {
    let key: [u8; KEY_LEN] = rand::random();
    let tmp = dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
    let write_err = |source| SealError::WriteKey {
        path: path.to_path_buf(),
        source,
    };
    let written = write_and_link(&tmp, path, &key);
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_err)?;
            tracing::info!(path = %path.display(), "raft seal key created");
            Ok(SealKey::from_bytes(&key))
        }
        // Another opener won the race: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => SealKey::load_or_create(dir),
        Err(e) => Err(write_err(e)),
    }
}

fn write_and_link(tmp: &Path, path: &Path, key: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(key)?;
    file.sync_all()?;
    fs::hard_link(tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key() -> SealKey {
        SealKey::from_bytes(&rand::random())
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() -> anyhow::Result<()> {
        let key = key();
        let first = key.seal(Record::LogEntry(7), b"secret")?;
        let second = key.seal(Record::LogEntry(7), b"secret")?;
        assert_ne!(first, second);
        assert_eq!(first[0], VERSION);
        assert_eq!(first.len(), HEADER_LEN + 6 + TAG_LEN);
        assert_eq!(key.open(Record::LogEntry(7), first)?, b"secret");
        assert_eq!(
            key.open(Record::Snapshot, key.seal(Record::Snapshot, b"")?)?,
            b""
        );
        Ok(())
    }

    #[test]
    fn sealed_parts_open_as_their_concatenation() -> anyhow::Result<()> {
        let key = key();
        let sealed = key.seal_parts(Record::Snapshot, &[b"head", b"", b"er and body"])?;
        assert_eq!(sealed.len(), HEADER_LEN + 15 + TAG_LEN);
        assert_eq!(key.open(Record::Snapshot, sealed)?, b"header and body");
        Ok(())
    }

    #[test]
    fn refuses_tampered_moved_foreign_and_unknown_records() -> anyhow::Result<()> {
        let key = key();
        let sealed = key.seal(Record::LogEntry(7), b"secret")?;
        for at in [1, HEADER_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            let err = key.open(Record::LogEntry(7), tampered);
            assert!(matches!(err, Err(SealError::Corrupt { .. })), "{err:?}");
        }
        let moved = key.open(Record::LogEntry(8), sealed.clone());
        assert!(matches!(moved, Err(SealError::Corrupt { .. })), "{moved:?}");
        let meta = key.open(Record::Meta("vote"), sealed.clone());
        assert!(matches!(meta, Err(SealError::Corrupt { .. })), "{meta:?}");
        let foreign = self::key().open(Record::LogEntry(7), sealed.clone());
        assert!(
            matches!(foreign, Err(SealError::Corrupt { .. })),
            "{foreign:?}"
        );
        let short = key.open(Record::LogEntry(7), sealed[..HEADER_LEN + 3].to_vec());
        assert!(matches!(short, Err(SealError::Corrupt { .. })), "{short:?}");
        assert!(matches!(
            key.open(Record::LogEntry(7), Vec::new()),
            Err(SealError::Corrupt { .. })
        ));
        let mut future = sealed;
        future[0] = VERSION + 1;
        assert!(matches!(
            key.open(Record::LogEntry(7), future),
            Err(SealError::UnsupportedVersion { version, .. }) if version == VERSION + 1
        ));
        Ok(())
    }

    #[test]
    fn creates_a_private_key_once_and_reloads_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let created = SealKey::load_or_create(dir.path())?;
        let path = dir.path().join(KEY_FILE);
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path)?.len(), KEY_LEN);
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            1,
            "no temporary file left"
        );
        let sealed = created.seal(Record::Snapshot, b"data")?;
        let loaded = SealKey::load_or_create(dir.path())?;
        assert_eq!(loaded.open(Record::Snapshot, sealed)?, b"data");
        Ok(())
    }

    #[test]
    fn refuses_a_lost_or_damaged_key() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("snapshot.bin"), b"sealed")?;
        let lost = SealKey::load_or_create(dir.path());
        assert!(
            matches!(lost, Err(SealError::MissingKey { .. })),
            "{lost:?}"
        );
        assert!(!dir.path().join(KEY_FILE).exists());
        fs::write(dir.path().join(KEY_FILE), [0u8; 31])?;
        let short = SealKey::load_or_create(dir.path());
        assert!(
            matches!(short, Err(SealError::KeyLength { len: 31, .. })),
            "{short:?}"
        );
        Ok(())
    }
}
