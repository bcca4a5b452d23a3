//! The checks behind brook's fuzz targets.
//!
//! Each target in `fuzz_targets/` is one line that hands libFuzzer's input to a `check_*`
//! function here. Keeping the checks in a library means that `cargo test` (on the stable
//! toolchain, without libFuzzer) replays every committed seed through every check, so the
//! seeds double as regression tests, and a crash artifact can be turned into a test by
//! dropping it in `seeds/<target>/`.
//!
//! | target              | check                                 | input                    |
//! |---------------------|---------------------------------------|--------------------------|
//! | `frame_decode`      | [`frame::check_frame_decode`]         | raw bytes off a socket   |
//! | `message_roundtrip` | [`roundtrip::check_roundtrip`]        | a frame, or structured   |
//! | `compressed_frame`  | [`compressed::check_compressed`]      | a frame, or structured   |
//! | `reply_parse`       | [`reply::check_reply`]                | a frame, or structured   |
//! | `event_decode`      | [`event::check_event_decode`]         | one event document       |
//!
//! "A frame, or structured": when the input starts with a frame that decodes, the target
//! works from that real frame (so the committed seeds, captured from pymongo talking to a
//! real peer, are meaningful to every target); otherwise the input is read with
//! [`arbitrary`] into a structured value (a message, a compressed frame's fields, a reply
//! document built from the field names the parsers look for).
//!
//! Every decode runs under [`alloc_track::measure`], which fails the run when the Rust heap
//! grows by more than a bound derived from the decode limit: a decoder that allocates what
//! a header *declares* rather than what arrived is caught even without AddressSanitizer.

pub mod alloc_track;
pub mod arb;
pub mod compressed;
pub mod event;
pub mod frame;
pub mod reply;
pub mod roundtrip;

#[cfg(test)]
mod seeds;
