//! Fuzz target `event_decode`: brook's direct change-event decoder against serde's (see `brook_fuzz::event`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::event::check_event_decode(data));
