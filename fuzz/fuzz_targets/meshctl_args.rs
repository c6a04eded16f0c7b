//! A meshctl command line (words split at NUL bytes), parsed and checked as meshctl does.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_control::fuzzing::meshctl_args(data);
});
