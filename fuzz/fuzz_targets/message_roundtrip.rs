//! Fuzz target `message_roundtrip`: message -> encode -> decode -> the same message (see `brook_fuzz::roundtrip`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::roundtrip::check_roundtrip(data));
