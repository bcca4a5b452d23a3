//! OP_MSG and OP_COMPRESSED framing for MongoDB, without IO.
//!
//! # Design
//!
//! **Sans-IO.** This crate never reads a socket, a clock or an environment variable, and
//! pulls in no async runtime. [`decode`] takes a growing [`BytesMut`](bytes::BytesMut)
//! that the caller fills however it likes and answers `Ok(None)` ("need more bytes",
//! buffer untouched) until one whole frame is there; [`Message::encode`] appends a frame to
//! the caller's `BytesMut`. The same code therefore serves the tokio connection, the fake
//! server of the test kit and the fuzzer.
//!
//! **Zero-copy replies.** A complete frame is split off the read buffer with
//! `split_to(len).freeze()`; its body and every document of its kind-1 sequences are
//! [`SharedDoc`]s, i.e. [`Bytes`](bytes::Bytes) slices of that one frozen buffer (for
//! OP_COMPRESSED: of the one decompressed buffer). Decoding validates only what framing
//! needs: each document's length prefix lies inside its section and its last byte is NUL.
//! Elements are checked lazily by bson's raw API when a field is read, and
//! [`SharedDoc::share`] hands out a sub-document (e.g. a batch element) as another slice of
//! the same buffer. Encoding writes the body and documents with `put_slice` after one exact
//! `reserve`.
//!
//! **Limits.** Every length read off the wire is checked before it is used:
//! a frame's declared length must lie within `16..=`[`DecodeLimits::max_message_size`] and
//! is refused as soon as its four bytes are present, before anything is allocated for it;
//! an OP_COMPRESSED frame's declared uncompressed size is bounded by the same limit and must
//! equal what the decompressor produced, which is itself capped at one byte more than
//! declared (no decompression bombs). Bad input yields a typed [`WireError`] — one variant
//! per kind of malformation — never a panic. The encoder refuses frames larger than
//! [`EncodeOptions::max_message_size`].
//!
//! **Flags and checksums.** Unknown required flag bits (0–15) are an error; optional bits
//! (16–31) are kept but otherwise ignored. A CRC-32C checksum is verified whenever present and
//! written when asked for; for OP_COMPRESSED it covers the uncompressed OP_MSG, header
//! included, as the server computes it.
//!
//! **Compressors.** noop always; snappy, zlib and zstd behind the cargo features `snappy`,
//! `zlib` and `zstd` (all on by default). A frame using a compressor whose feature is off is
//! refused with [`WireError::CompressorDisabled`]. Whether a command may be compressed at all
//! is answered by [`may_compress`].
//!
//! ```
//! use brook_wire::{decode, DecodeLimits, EncodeOptions, Message, SharedDoc};
//! use bytes::BytesMut;
//!
//! let body = SharedDoc::from_document(&bson::doc! { "ping": 1, "$db": "admin" })?;
//! let mut buf = BytesMut::new();
//! Message::command(1, body.clone()).encode(&mut buf, &EncodeOptions::default())?;
//! let decoded = decode(&mut buf, &DecodeLimits::default())?.expect("a whole frame");
//! assert_eq!(decoded.message.body, body);
//! assert!(buf.is_empty());
//! # Ok::<(), brook_wire::WireError>(())
//! ```

#![forbid(unsafe_code)]

mod compress;
mod decode;
mod doc;
mod error;
mod header;
mod message;

pub use compress::{Compressor, may_compress};
pub use decode::{DecodeLimits, Decoded, decode};
pub use doc::SharedDoc;
pub use error::WireError;
pub use header::{MsgFlags, MsgHeader, OpCode, peek_header};
pub use message::{DocumentSequence, EncodeOptions, Message, Section};

/// The default largest message, in bytes (the server's usual `maxMessageSizeBytes`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 48_000_000;
