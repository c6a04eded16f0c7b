//! A control API write request, decoded and handled against a small cluster.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_control::fuzzing::api_request(data);
});
