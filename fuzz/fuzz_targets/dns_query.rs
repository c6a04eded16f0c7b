//! A task's query to the embedded DNS at 127.0.0.11, and an upstream's reply.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_agent::fuzzing::dns_query(data);
});
