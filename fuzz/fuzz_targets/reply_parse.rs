//! Fuzz target `reply_parse`: brook-command's reply parsers on decoded frames (see `brook_fuzz::reply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::reply::check_reply(data));
