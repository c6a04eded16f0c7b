//! A Raft message from a peer manager on 2377 (AppendEntries, Vote, InstallSnapshot) and its responses.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_control::fuzzing::raft_payload(data);
});
