//! Entry points for the fuzz targets under `fuzz/` (see its README): the decoders of bytes that
//! reach a node from the network, each driven as `meshd` drives it, and the seeds that start
//! their corpora. Compiled only with the `fuzzing` feature, which no release build enables.

/// A gossip datagram as it arrives on 7946/udp: opened under a fixed test key, parsed, merged
/// into a fresh member's record table and membership or handed to SWIM, answered. Returns
/// whether it opened.
pub fn gossip_datagram(datagram: &[u8]) -> bool {
    crate::gossip::fuzzing::receive(datagram)
}

/// A gossip frame as a peer holding the cluster key sends it: sealed under the test key, then
/// handled as [`gossip_datagram`] does. Panics if a sealed frame fails to open again.
pub fn gossip_frame(frame: &[u8]) {
    let sealed = crate::gossip::fuzzing::test_keys()
        .seal(frame)
        .expect("sealing under the test key works");
    assert!(
        gossip_datagram(&sealed),
        "a datagram sealed under the member's own key must open"
    );
}

/// A DNS query as a task sends it to 127.0.0.11 (and the same bytes as an upstream's reply).
/// Returns whether the resolver answered it itself.
pub fn dns_query(datagram: &[u8]) -> bool {
    crate::dns::fuzzing::query(datagram)
}

/// Seed inputs, per target: `(target, name, bytes)`, made from real encodings.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let tag = |target: &'static str| move |(name, bytes)| (target, name, bytes);
    crate::gossip::fuzzing::frame_seeds()
        .into_iter()
        .map(tag("gossip_frame"))
        .chain(
            crate::gossip::fuzzing::datagram_seeds()
                .into_iter()
                .map(tag("gossip_datagram")),
        )
        .chain(
            crate::dns::fuzzing::seeds()
                .into_iter()
                .map(tag("dns_query")),
        )
        .collect()
}
