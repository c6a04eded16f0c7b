//! One meshctl flag value, through every flag parser.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_control::fuzzing::meshctl_flag(data);
});
