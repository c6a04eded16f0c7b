//! A datagram on 7946/udp from anyone: opened, parsed, merged, answered.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_agent::fuzzing::gossip_datagram(data);
});
