//! Encrypted gossip between agents: SWIM membership (foca) over UDP, every datagram sealed with
//! an AEAD key ring, carrying per-network endpoint records with versions, tombstones and
//! periodic anti-entropy so that every node converges after lost datagrams and restarts.

mod driver;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod identity;
mod membership;
mod node;
pub mod records;
pub mod seal;
mod wire;

#[cfg(test)]
mod tests;

pub use identity::NodeIdentity;
pub use membership::MembersError;
pub use node::{DEFAULT_GOSSIP_PORT, Gossip, GossipConfig, GossipError, GossipStats};
pub use records::{
    Change, EndpointRecord, IngressPort, RecordKey, RecordTable, Version, VersionedRecord,
};
pub use seal::{KeyRing, SealError, SealKey};
pub use wire::WireError;

/// Wall-clock milliseconds since the Unix epoch: the time base of record versions.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
