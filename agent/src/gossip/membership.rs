//! Push-pull membership sync, run on the anti-entropy round beside the record digest.
//!
//! SWIM spreads membership news epidemically: at a thousand members nearly every pair learns of
//! each other within seconds, but a few pairs miss the news and would only meet by chance, through
//! a random periodic announce. Here a member sends a peer a digest of the members it holds active,
//! split into buckets; the peer sends back its full state (alive, suspect and down, as foca keeps
//! it) for the buckets that differ and asks for ours. foca applies what it receives with its usual
//! rules, so stale news never overrides fresh news and a member declared down stays down.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use foca::{Codec, Member, PostcardCodec};
use serde::{Deserialize, Serialize};

use super::identity::NodeIdentity;
use crate::hash::stable_hash;

/// How many buckets the members are hashed into: at a thousand members, a missing member costs
/// about thirty members' worth of state instead of the whole list.
pub(crate) const BUCKETS: usize = 32;

const IDENTITY_SEED: u64 = 0x6d65_7368_6d65_6d62;

/// Per bucket, the wrapping sum of the hashes of the active members that fall in it: equal
/// whatever order members were learned in, and different when one member or incarnation differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberDigest {
    pub(crate) buckets: Vec<u64>,
}

/// A set of bucket indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Buckets(u32);

impl Buckets {
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn contains(self, bucket: usize) -> bool {
        bucket < BUCKETS && self.0 & (1 << bucket) != 0
    }

    fn insert(&mut self, bucket: usize) {
        if bucket < BUCKETS {
            self.0 |= 1 << bucket;
        }
    }
}

/// The stable hash of one identity: node, address and incarnation.
fn identity_hash(id: &NodeIdentity) -> u64 {
    let mut bytes = Vec::with_capacity(id.node_id.len() + 40);
    bytes.extend_from_slice(id.node_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(id.addr.to_string().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&id.incarnation.to_le_bytes());
    stable_hash(&bytes, IDENTITY_SEED)
}

/// Which bucket an identity's state travels in.
pub(crate) fn bucket_of(id: &NodeIdentity) -> usize {
    // Bucketed by address, so every incarnation of a node lands in the same bucket and a peer
    // that holds an older one receives the newer.
    let bucket = stable_hash(id.addr.to_string().as_bytes(), IDENTITY_SEED) % BUCKETS as u64;
    usize::try_from(bucket).unwrap_or(0)
}

impl MemberDigest {
    pub(crate) fn of<'a>(active: impl IntoIterator<Item = &'a NodeIdentity>) -> Self {
        let mut buckets = vec![0u64; BUCKETS];
        for id in active {
            let slot = &mut buckets[bucket_of(id)];
            *slot = slot.wrapping_add(identity_hash(id));
        }
        Self { buckets }
    }

    /// The buckets in which the two digests disagree; all of them when the peer's digest is not
    /// shaped like ours.
    pub(crate) fn differing(&self, theirs: &MemberDigest) -> Buckets {
        let mut differ = Buckets::default();
        for bucket in 0..BUCKETS {
            if self.buckets.get(bucket) != theirs.buckets.get(bucket)
                || theirs.buckets.len() != BUCKETS
            {
                differ.insert(bucket);
            }
        }
        differ
    }
}

/// The members this node holds active (itself included), one identity per address, with their
/// digest kept up to date change by change.
#[derive(Debug)]
pub(crate) struct ActiveMembers {
    by_addr: BTreeMap<SocketAddr, NodeIdentity>,
    digest: MemberDigest,
}

impl ActiveMembers {
    pub(crate) fn new(me: NodeIdentity) -> Self {
        let mut members = Self {
            by_addr: BTreeMap::new(),
            digest: MemberDigest::of([]),
        };
        members.insert(me);
        members
    }

    /// Adds `id`, replacing whichever identity held its address.
    pub(crate) fn insert(&mut self, id: NodeIdentity) {
        self.add_to_digest(&id, u64::wrapping_add);
        if let Some(old) = self.by_addr.insert(id.addr, id) {
            self.add_to_digest(&old, u64::wrapping_sub);
        }
    }

    /// Forgets `id` unless its address already belongs to another identity.
    pub(crate) fn remove(&mut self, id: &NodeIdentity) {
        if self.by_addr.get(&id.addr) == Some(id) {
            self.by_addr.remove(&id.addr);
            self.add_to_digest(id, u64::wrapping_sub);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// In address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &NodeIdentity> {
        self.by_addr.values()
    }

    pub(crate) fn digest(&self) -> &MemberDigest {
        &self.digest
    }

    fn add_to_digest(&mut self, id: &NodeIdentity, op: fn(u64, u64) -> u64) {
        let slot = &mut self.digest.buckets[bucket_of(id)];
        *slot = op(*slot, identity_hash(id));
    }
}

/// Why a member list could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable member list")]
pub struct MembersError;

/// Encodes member states into frame bodies of at most `max_bytes` each (one member larger than
/// that still gets a body of its own).
pub(crate) fn encode_members<'a>(
    members: impl IntoIterator<Item = &'a Member<NodeIdentity>>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let mut one = Vec::new();
    for member in members {
        one.clear();
        if PostcardCodec.encode_member(member, &mut one).is_err() {
            continue;
        }
        if !body.is_empty() && body.len() + one.len() > max_bytes {
            bodies.push(std::mem::take(&mut body));
        }
        body.extend_from_slice(&one);
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    bodies
}

/// Decodes a frame body written by `encode_members`: all of it, or an error.
pub(crate) fn decode_members(body: &[u8]) -> Result<Vec<Member<NodeIdentity>>, MembersError> {
    let mut rest = body;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let member = PostcardCodec
            .decode_member(&mut rest)
            .map_err(|_| MembersError)?;
        members.push(member);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use foca::State;

    use super::*;

    fn id(n: u16, incarnation: u64) -> NodeIdentity {
        NodeIdentity {
            node_id: format!("node-{n}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 40_000 + n)),
            incarnation,
        }
    }

    fn ids(range: std::ops::Range<u16>) -> Vec<NodeIdentity> {
        range.map(|n| id(n, 1)).collect()
    }

    #[test]
    fn digests_are_equal_whatever_the_order() {
        let members = ids(0..200);
        let mut reversed = members.clone();
        reversed.reverse();
        let ours = MemberDigest::of(&members);
        assert_eq!(ours, MemberDigest::of(&reversed));
        assert!(ours.differing(&MemberDigest::of(&reversed)).is_empty());
    }

    #[test]
    fn a_missing_member_or_incarnation_differs_in_its_bucket_only() {
        let members = ids(0..200);
        let ours = MemberDigest::of(&members);

        let missing = &members[17];
        let theirs = MemberDigest::of(members.iter().filter(|m| *m != missing));
        let differ = ours.differing(&theirs);
        let expected: Vec<usize> = vec![bucket_of(missing)];
        let got: Vec<usize> = (0..BUCKETS).filter(|&b| differ.contains(b)).collect();
        assert_eq!(got, expected);

        let mut restarted = members.clone();
        restarted[17] = id(17, 2);
        let differ = ours.differing(&MemberDigest::of(&restarted));
        let got: Vec<usize> = (0..BUCKETS).filter(|&b| differ.contains(b)).collect();
        assert_eq!(got, expected, "same address, same bucket");
    }

    #[test]
    fn the_kept_digest_follows_inserts_replacements_and_removals() {
        let members = ids(0..50);
        let mut active = ActiveMembers::new(members[0].clone());
        for m in members.iter().rev() {
            active.insert(m.clone());
        }
        assert_eq!(active.len(), 50);
        assert_eq!(active.digest(), &MemberDigest::of(&members));

        let restarted = id(7, 2);
        active.insert(restarted.clone());
        active.remove(&members[7]);
        assert_eq!(
            active.len(),
            50,
            "an older identity does not remove the newer"
        );
        active.remove(&members[9]);
        let expected: Vec<NodeIdentity> = members
            .iter()
            .filter(|m| m.addr != members[9].addr)
            .map(|m| {
                if m.addr == restarted.addr {
                    restarted.clone()
                } else {
                    m.clone()
                }
            })
            .collect();
        assert_eq!(active.digest(), &MemberDigest::of(&expected));
        assert_eq!(active.iter().cloned().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_digest_of_another_shape_differs_everywhere() {
        let ours = MemberDigest::of(&ids(0..10));
        let short = MemberDigest {
            buckets: vec![0; 3],
        };
        let differ = ours.differing(&short);
        assert!((0..BUCKETS).all(|b| differ.contains(b)));
        assert!(!differ.contains(BUCKETS), "no bucket beyond the last");
    }

    #[test]
    fn members_round_trip_in_bounded_bodies() {
        let states: Vec<Member<NodeIdentity>> = ids(0..100)
            .into_iter()
            .enumerate()
            .map(|(i, id)| match i % 3 {
                0 => Member::alive(id),
                1 => Member::new(id, 3, State::Suspect),
                _ => Member::down(id),
            })
            .collect();
        let bodies = encode_members(&states, 300);
        assert!(bodies.len() > 1, "100 members do not fit in 300 bytes");
        assert!(bodies.iter().all(|b| b.len() <= 300));
        let decoded: Vec<_> = bodies
            .iter()
            .flat_map(|b| decode_members(b).expect("decodes"))
            .collect();
        assert_eq!(decoded, states);
    }

    #[test]
    fn a_truncated_or_garbled_body_is_an_error() {
        let bodies = encode_members(&[Member::alive(id(1, 1))], 1000);
        let body = &bodies[0];
        assert!(decode_members(&body[..body.len() - 1]).is_err());
        assert!(decode_members(&[0xff; 8]).is_err());
        assert_eq!(decode_members(&[]).expect("empty is no members"), vec![]);
    }
}
