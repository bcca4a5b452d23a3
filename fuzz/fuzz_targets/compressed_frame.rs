//! Fuzz target `compressed_frame`: OP_COMPRESSED frames with every compressor (see `brook_fuzz::compressed`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::compressed::check_compressed(data));
