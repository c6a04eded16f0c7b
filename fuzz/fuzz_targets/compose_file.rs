//! One compose file, loaded and converted as `meshctl stack deploy` does.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mesh_control::fuzzing::compose_file(data);
});
