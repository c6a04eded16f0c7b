//! Anti-entropy: periodic digest exchange with one random member, answered with the records
//! the peer lacks and requests for the ones it holds newer versions of, and likewise for the
//! members (see `membership`).

use std::net::SocketAddr;

use foca::Member;
use rand::seq::IndexedRandom;
use tracing::info;

use super::super::membership::{Buckets, bucket_of, encode_members};
use super::super::now_ms;
use super::super::records::VersionedRecord;
use super::super::wire::{self, SyncMessage, lock};
use super::{DIGEST_PAGE, Driver, MAX_PLAINTEXT, SYNC_BUDGET};

impl Driver {
    pub(super) async fn on_sync(&mut self, message: SyncMessage, from: SocketAddr) {
        match message {
            SyncMessage::Digest(digest) => {
                let diff = lock(&self.shared).table.diff(&digest);
                self.send_records(diff.send, from).await;
                for keys in diff.want.chunks(DIGEST_PAGE) {
                    self.send_sync(&SyncMessage::Want(keys.to_vec()), from)
                        .await;
                }
            }
            SyncMessage::Records(records) => {
                let changes = lock(&self.shared).table.merge_remote(records, now_ms());
                for change in changes {
                    let _ = self.changes.send(change);
                }
            }
            SyncMessage::Want(keys) => {
                let records = lock(&self.shared).table.select(&keys);
                self.send_records(records, from).await;
            }
            SyncMessage::MemberDigest(theirs) => {
                let differ = lock(&self.shared).members.digest().differing(&theirs);
                if !differ.is_empty() {
                    self.send_members(differ, from).await;
                    self.send_sync(&SyncMessage::MemberWant(differ), from).await;
                }
            }
            SyncMessage::MemberWant(buckets) => self.send_members(buckets, from).await,
        }
    }

    /// Sends this node's view (itself, and every member foca knows of in any state) of the
    /// members that fall in `buckets`.
    async fn send_members(&mut self, buckets: Buckets, to: SocketAddr) {
        let me = Member::alive(self.foca.identity().clone());
        let wanted = std::iter::once(&me)
            .chain(self.foca.iter_membership_state())
            .filter(|member| buckets.contains(bucket_of(member.id())));
        for body in encode_members(wanted, MAX_PLAINTEXT) {
            self.send_sealed(&wire::members_frame(&body), to).await;
        }
    }

    /// Sends the table's digest to one random member and collects expired tombstones.
    pub(super) async fn anti_entropy(&mut self) {
        self.expire_gone_nodes();
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let Some(&peer) = peers.choose(&mut self.rng) else {
            return;
        };
        self.send_digest(peer).await;
        lock(&self.shared).table.gc(now_ms());
    }

    /// Withdraws, on their behalf, the records of nodes gone for longer than the grace.
    pub(super) fn expire_gone_nodes(&mut self) {
        let grace = self.gone_node_grace;
        let expired: Vec<String> = self
            .gone
            .iter()
            .filter(|(_, since)| since.elapsed() >= grace)
            .map(|(node, _)| node.clone())
            .collect();
        for node in expired {
            self.gone.remove(&node);
            let changes = lock(&self.shared).table.expire_node(&node, now_ms());
            if !changes.is_empty() {
                info!(node.id = %node, records = changes.len(), "gone node's endpoints withdrawn");
            }
            for change in changes {
                let _ = self.changes.send(change);
            }
        }
    }

    /// Sends the digests of the endpoint table and of the members to `peer`.
    pub(super) async fn send_digest(&mut self, peer: SocketAddr) {
        let members = lock(&self.shared).members.digest().clone();
        self.send_sync(&SyncMessage::MemberDigest(members), peer)
            .await;
        let pages = lock(&self.shared).table.digest_pages(DIGEST_PAGE);
        for page in pages {
            self.send_sync(&SyncMessage::Digest(page), peer).await;
        }
    }

    async fn send_records(&mut self, records: Vec<VersionedRecord>, to: SocketAddr) {
        for message in wire::records_messages(records, SYNC_BUDGET) {
            self.send_sync(&message, to).await;
        }
    }
}
