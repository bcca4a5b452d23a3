//! Fuzz target `frame_decode`: `brook_wire::decode` on arbitrary bytes, whole and in random chunks (see `brook_fuzz::frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::frame::check_frame_decode(data));
