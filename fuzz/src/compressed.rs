//! `compressed_frame`: OP_COMPRESSED frames with every compressor, arbitrary payloads and
//! arbitrary declared sizes.
//!
//! The input is either a real OP_COMPRESSED frame (fed to the decoder as it is, so that
//! libFuzzer mutates captured pymongo frames), or a structured description from which
//! the target builds the frame itself, compressing with the `snap`, `flate2` and `zstd`
//! crates directly (not with brook-wire's encoder, so the two sides are independent).
//!
//! Invariants: no panic; the Rust heap never grows past [`ALLOC_BOUND`] whatever size the
//! frame declares; a frame that decodes names the compressor it was built with, wrapped
//! an OP_MSG and decompressed to exactly its declared size (within the limit); a
//! well-formed frame (known compressor, true size, valid OP_MSG inside) must decode, to
//! the message that was compressed; a payload that inflates past the limit must be
//! refused.

use std::io::Write;

use arbitrary::Arbitrary;
use brook_wire::{DecodeLimits, EncodeOptions, decode};
use bytes::BytesMut;

use crate::alloc_track;
use crate::arb;
use crate::frame;
use crate::roundtrip::ArbMessage;

/// The decode limit of this target.
pub const LIMIT: usize = frame::FRAME_LIMIT;

/// How much one decode may allocate on the Rust heap (see [`frame::ALLOC_BOUND`]).
pub const ALLOC_BOUND: usize = frame::ALLOC_BOUND;

/// The compressor id written in the frame.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum IdPick {
    /// 0
    Noop,
    /// 1
    Snappy,
    /// 2
    Zlib,
    /// 3
    Zstd,
    /// any byte
    Raw(u8),
}

impl IdPick {
    fn id(self) -> u8 {
        match self {
            IdPick::Noop => 0,
            IdPick::Snappy => 1,
            IdPick::Zlib => 2,
            IdPick::Zstd => 3,
            IdPick::Raw(b) => b,
        }
    }
}

/// The originalOpcode field.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum OpPick {
    /// OP_MSG
    Msg,
    /// OP_COMPRESSED (nested compression must be refused)
    Compressed,
    /// OP_QUERY
    Query,
    /// any value
    Raw(i32),
}

/// The uncompressedSize field.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum SizePick {
    /// The true size of what was compressed.
    Exact,
    /// The true size plus a small signed offset.
    Off(i8),
    /// Any value (negative, huge…).
    Raw(i32),
}

/// What follows the compressor id.
#[derive(Debug, Clone, Arbitrary)]
pub enum Payload {
    /// These bytes, as they are (usually not valid compressed data).
    Raw(Vec<u8>),
    /// These bytes, compressed (valid compressed data, not an OP_MSG).
    Compress(Vec<u8>),
    /// A structured OP_MSG, encoded uncompressed by brook-wire, then compressed here.
    Message(Box<ArbMessage>),
    /// `len` copies of `byte`, compressed: a payload that inflates far beyond its size.
    Bomb {
        /// the repeated byte
        byte: u8,
        /// how many (taken modulo 2 MiB)
        len: u32,
    },
}

/// A structured OP_COMPRESSED frame.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbCompressed {
    /// requestID
    pub request_id: i32,
    /// responseTo
    pub response_to: i32,
    /// originalOpcode
    pub op: OpPick,
    /// compressorId
    pub id: IdPick,
    /// uncompressedSize
    pub size: SizePick,
    /// the payload
    pub payload: Payload,
}

/// The fuzz target's body.
pub fn check_compressed(data: &[u8]) {
    if data.len() >= 16 && data.get(12..16) == Some(&2012i32.to_le_bytes()[..]) {
        // A real (or mutated) OP_COMPRESSED frame: decode it as it came.
        let limits = DecodeLimits {
            max_message_size: LIMIT,
        };
        let mut buf = BytesMut::from(data);
        if let Some(Ok(record)) = frame::step(&mut buf, &limits) {
            assert!(
                record.compressor.is_some(),
                "an OP_COMPRESSED frame decoded as uncompressed"
            );
        }
        return;
    }
    if let Some(input) = arb::from_bytes::<ArbCompressed>(data) {
        check_structured(&input);
    }
}

/// Builds the frame `input` describes and checks how it decodes.
pub fn check_structured(input: &ArbCompressed) {
    let id = input.id.id();
    let (original, compressed, message) = match &input.payload {
        Payload::Raw(bytes) => (None, bytes.clone(), None),
        Payload::Compress(bytes) => match compress(id, bytes) {
            Some(c) => (Some(bytes.clone()), c, None),
            None => (None, bytes.clone(), None),
        },
        Payload::Message(m) => {
            let Some(msg) = m.build_message() else { return };
            let mut out = BytesMut::new();
            let opts = EncodeOptions {
                max_message_size: usize::MAX,
                ..EncodeOptions::default()
            };
            if msg.encode(&mut out, &opts).is_err() {
                return;
            }
            // Everything after the 16-byte header is what OP_COMPRESSED carries.
            let inner = out.get(16..).unwrap_or_default().to_vec();
            match compress(id, &inner) {
                Some(c) => (Some(inner), c, Some(msg)),
                None => (None, inner, None),
            }
        }
        Payload::Bomb { byte, len } => {
            let bytes = vec![*byte; (*len as usize) % (2 * 1024 * 1024)];
            match compress(id, &bytes) {
                Some(c) => (Some(bytes), c, None),
                None => (None, bytes, None),
            }
        }
    };
    let true_size = original.as_ref().map_or(compressed.len(), Vec::len);
    let declared: i64 = match input.size {
        SizePick::Exact => i64::try_from(true_size).unwrap_or(i64::MAX),
        SizePick::Off(d) => i64::try_from(true_size).unwrap_or(i64::MAX) + i64::from(d),
        SizePick::Raw(v) => i64::from(v),
    };
    let declared = i32::try_from(declared).unwrap_or(i32::MAX);
    let op = match input.op {
        OpPick::Msg => 2013,
        OpPick::Compressed => 2012,
        OpPick::Query => 2004,
        OpPick::Raw(v) => v,
    };

    let total = 16 + 9 + compressed.len();
    let Ok(total_i32) = i32::try_from(total) else {
        return;
    };
    let mut frame_bytes = Vec::with_capacity(total);
    for v in [
        total_i32,
        input.request_id,
        input.response_to,
        2012,
        op,
        declared,
    ] {
        frame_bytes.extend_from_slice(&v.to_le_bytes());
    }
    frame_bytes.push(id);
    frame_bytes.extend_from_slice(&compressed);

    let limits = DecodeLimits {
        max_message_size: LIMIT,
    };
    let mut buf = BytesMut::from(&frame_bytes[..]);
    let outcome = alloc_track::within("decode of OP_COMPRESSED", ALLOC_BOUND, || {
        decode(&mut buf, &limits)
    });
    // The frame is complete: the decoder must decide.
    let well_formed = total <= LIMIT
        && op == 2013
        && id <= 3
        && matches!(input.size, SizePick::Exact)
        && message.is_some()
        && original.as_ref().is_some_and(|o| o.len() + 16 <= LIMIT);
    match outcome {
        Ok(None) => panic!("Ok(None) for a complete {total}-byte frame"),
        Ok(Some(decoded)) => {
            assert!(buf.is_empty());
            assert_eq!(decoded.compressor.map(|c| c.id()), Some(id));
            assert_eq!(op, 2013, "decoded an OP_COMPRESSED wrapping opcode {op}");
            let declared = usize::try_from(declared)
                .unwrap_or_else(|_| panic!("decoded a negative size {declared}"));
            assert!(
                declared + 16 <= LIMIT,
                "decoded {declared} uncompressed bytes, over the limit"
            );
            assert_eq!(
                decoded.message.encoded_len() - 16,
                declared,
                "the decoded message is not the declared size"
            );
            let original = original.as_deref().unwrap_or(&compressed[..]);
            assert_eq!(
                original.len(),
                declared,
                "accepted a wrong uncompressed size"
            );
            if let Some(m) = &message {
                // The ids a reader sees are the OP_COMPRESSED header's.
                let mut expected = m.clone();
                expected.request_id = input.request_id;
                expected.response_to = input.response_to;
                assert_eq!(decoded.message, expected, "decompressed to another message");
            }
        }
        Err(e) => {
            assert!(
                !well_formed,
                "a well-formed OP_COMPRESSED frame was refused: {e}"
            );
        }
    }
}

impl ArbMessage {
    /// The message this input describes (used by the compressed target).
    pub fn build_message(&self) -> Option<brook_wire::Message> {
        let mut m = self.clone();
        // Keep the flags valid: this target is about compression, not flag bits.
        m.options.only_valid_flags = true;
        m.options.flag_bits &= !brook_wire::MsgFlags::CHECKSUM_PRESENT.bits();
        m.build()
    }
}

/// Compresses `data` with compressor `id` (0–3), with the compression crates themselves.
pub fn compress(id: u8, data: &[u8]) -> Option<Vec<u8>> {
    match id {
        0 => Some(data.to_vec()),
        1 => snap::raw::Encoder::new().compress_vec(data).ok(),
        2 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).ok()?;
            e.finish().ok()
        }
        3 => zstd::bulk::compress(data, 1).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: IdPick, size: SizePick, payload: Payload) -> ArbCompressed {
        ArbCompressed {
            request_id: 1,
            response_to: 2,
            op: OpPick::Msg,
            id,
            size,
            payload,
        }
    }

    #[test]
    fn bombs_are_refused_for_every_compressor() {
        for id in [IdPick::Noop, IdPick::Snappy, IdPick::Zlib, IdPick::Zstd] {
            for size in [
                SizePick::Exact,
                SizePick::Raw(1000),
                SizePick::Raw(i32::MAX),
                SizePick::Raw(-1),
            ] {
                check_structured(&input(
                    id,
                    size,
                    Payload::Bomb {
                        byte: 0,
                        len: 1 << 20,
                    },
                ));
            }
        }
    }

    #[test]
    fn garbage_payloads_are_refused() {
        for id in [
            IdPick::Noop,
            IdPick::Snappy,
            IdPick::Zlib,
            IdPick::Zstd,
            IdPick::Raw(9),
        ] {
            check_structured(&input(
                id,
                SizePick::Raw(100),
                Payload::Raw(vec![0xff; 100]),
            ));
            check_structured(&input(
                id,
                SizePick::Exact,
                Payload::Compress(b"not an OP_MSG at all".to_vec()),
            ));
        }
    }
}
