//! A gossip frame from a peer holding the cluster key: sealed, opened, parsed, merged, answered.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_agent::fuzzing::gossip_frame(data);
});
