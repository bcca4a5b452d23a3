//! `message_roundtrip`: message → `encode` → `decode` → the same message.
//!
//! The message is either a real one (the input starts with a frame that decodes; the
//! bytes after it choose the encode options and tweaks) or a structured one built by
//! [`arbitrary`]. Invariants:
//!
//! * `encode` never panics; on error it leaves `dst` exactly as it was;
//! * on success it appended one frame after what `dst` held, no larger than
//!   `max_message_size`, of `encoded_len_with` bytes when uncompressed;
//! * that frame decodes (whole, and fed in chunks) to the same message, with
//!   `CHECKSUM_PRESENT` set iff a checksum was asked for, and with the compressor that was
//!   asked for.

use arbitrary::{Arbitrary, Unstructured};
use brook_wire::{
    Compressor, DecodeLimits, DocumentSequence, EncodeOptions, Message, MsgFlags, SharedDoc, decode,
};
use bytes::BytesMut;

use crate::alloc_track;
use crate::arb::{self, Doc};
use crate::frame;

/// Compressor choices, with levels kept where compression stays fast.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum CompressorPick {
    /// id 0
    Noop,
    /// id 1
    Snappy,
    /// id 2 at a level; values past 9 test clamping
    Zlib(Option<u8>),
    /// id 3 at a level in -7..=9
    Zstd(Option<i8>),
}

impl CompressorPick {
    /// The compressor.
    pub fn compressor(self) -> Compressor {
        match self {
            CompressorPick::Noop => Compressor::Noop,
            CompressorPick::Snappy => Compressor::Snappy,
            CompressorPick::Zlib(level) => Compressor::Zlib {
                level: level.map(|l| u32::from(l % 16)),
            },
            CompressorPick::Zstd(level) => Compressor::Zstd {
                level: level.map(|l| i32::from(l % 10) - 2),
            },
        }
    }
}

/// How big a frame `encode` may write.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum LimitPick {
    /// The default (48 MB).
    Default,
    /// Exactly the uncompressed frame's length.
    Exact,
    /// That length minus something (compression may still fit under it).
    Under(u16),
    /// Any value.
    Raw(u32),
}

/// The encode options and message tweaks.
#[derive(Debug, Clone, Arbitrary)]
pub struct Options {
    /// Ask for a checksum.
    pub checksum: bool,
    /// Compress.
    pub compressor: Option<CompressorPick>,
    /// The size limit.
    pub limit: LimitPick,
    /// Bytes already in `dst` before encoding.
    pub prefix: Vec<u8>,
    /// XOR-ed into the flag bits (used on structured messages).
    pub flag_bits: u32,
    /// Keep `flag_bits` to known and optional bits (else any bit, usually refused).
    pub only_valid_flags: bool,
}

/// A structured message.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbMessage {
    /// requestID
    pub request_id: i32,
    /// responseTo
    pub response_to: i32,
    /// the body
    pub body: Doc,
    /// kind-1 sections: identifier and documents
    pub sequences: Vec<(String, Vec<Doc>)>,
    /// how to encode it
    pub options: Options,
}

impl ArbMessage {
    /// The message, or `None` if a generated document does not serialise.
    pub fn build(&self) -> Option<Message> {
        let body = SharedDoc::from_document(&self.body.to_document()).ok()?;
        let mut sequences = Vec::new();
        for (identifier, docs) in self.sequences.iter().take(4) {
            let mut documents = Vec::new();
            for d in docs.iter().take(8) {
                documents.push(SharedDoc::from_document(&d.to_document()).ok()?);
            }
            sequences.push(DocumentSequence::new(identifier.clone(), documents));
        }
        let flags = flags_from(&self.options);
        Some(Message {
            request_id: self.request_id,
            response_to: self.response_to,
            flags,
            body,
            sequences,
        })
    }
}

fn flags_from(options: &Options) -> MsgFlags {
    let bits = if options.only_valid_flags {
        options.flag_bits & (MsgFlags::KNOWN_REQUIRED | 0xffff_0000)
    } else {
        options.flag_bits
    };
    MsgFlags::from_bits_retain(bits)
}

/// The fuzz target's body.
pub fn check_roundtrip(data: &[u8]) {
    // A real frame first?
    let limits = DecodeLimits {
        max_message_size: frame::FRAME_LIMIT,
    };
    let mut buf = BytesMut::from(data);
    if let Ok(Some(decoded)) = decode(&mut buf, &limits) {
        let rest = buf.freeze();
        let options = Options::arbitrary_take_rest(Unstructured::new(&rest)).unwrap_or(Options {
            checksum: false,
            compressor: None,
            limit: LimitPick::Default,
            prefix: Vec::new(),
            flag_bits: 0,
            only_valid_flags: true,
        });
        check_message(&decoded.message, &options);
        return;
    }
    if let Some(input) = arb::from_bytes::<ArbMessage>(data)
        && let Some(message) = input.build()
    {
        check_message(&message, &input.options);
    }
}

/// Encodes `message` with `options` and checks the round trip.
pub fn check_message(message: &Message, options: &Options) {
    let uncompressed_len = message.encoded_len_with(&EncodeOptions {
        checksum: options.checksum,
        ..EncodeOptions::default()
    });
    let max_message_size = match options.limit {
        LimitPick::Default => brook_wire::DEFAULT_MAX_MESSAGE_SIZE,
        LimitPick::Exact => uncompressed_len,
        LimitPick::Under(d) => uncompressed_len.saturating_sub(usize::from(d)),
        LimitPick::Raw(v) => v as usize,
    };
    let compressor = options.compressor.map(CompressorPick::compressor);
    let opts = EncodeOptions {
        checksum: options.checksum,
        compressor,
        max_message_size,
    };

    let prefix: Vec<u8> = options.prefix.iter().copied().take(64).collect();
    let mut dst = BytesMut::from(&prefix[..]);
    // Compression may need a scratch copy of the frame and the compressor's output.
    let bound = 4 * uncompressed_len + 2 * 1024 * 1024;
    let result = alloc_track::within("encode", bound, || message.encode(&mut dst, &opts));
    if let Err(e) = result {
        assert_eq!(&dst[..], &prefix[..], "a failed encode changed dst ({e})");
        return;
    }
    assert_eq!(
        dst.get(..prefix.len()),
        Some(&prefix[..]),
        "encode changed what dst held"
    );
    let frame_bytes = dst.split_off(prefix.len());
    assert!(
        frame_bytes.len() <= max_message_size,
        "encode wrote a frame over its limit"
    );
    if compressor.is_none() {
        assert_eq!(
            frame_bytes.len(),
            uncompressed_len,
            "encoded_len_with disagrees with encode"
        );
    }

    let mut expected = message.clone();
    let checksum = options.checksum || message.flags.contains(MsgFlags::CHECKSUM_PRESENT);
    expected.flags.set(MsgFlags::CHECKSUM_PRESENT, checksum);

    // The limit bounds both the frame and, for OP_COMPRESSED, the frame once inflated.
    let limits = DecodeLimits {
        max_message_size: frame_bytes.len().max(uncompressed_len),
    };
    let mut buf = frame_bytes.clone();
    match decode(&mut buf, &limits) {
        Ok(Some(decoded)) => {
            assert!(
                buf.is_empty(),
                "decode left {} bytes of a single frame",
                buf.len()
            );
            assert_eq!(
                decoded.message, expected,
                "the message did not survive the round trip"
            );
            assert_eq!(
                decoded.compressor.map(|c| c.id()),
                compressor.map(|c| c.id()),
                "decoded with another compressor than encoded"
            );
        }
        other => panic!("an encoded message does not decode: {other:?}"),
    }
    // And fed in pieces, as a socket delivers it.
    let plan = frame::chunk_plan(&frame_bytes);
    let (frames, end) = frame::feed(&frame_bytes, &plan, &limits);
    assert_eq!(end, frame::Ending::NeedMore(0));
    assert_eq!(frames.len(), 1);
    assert!(frames.iter().all(|f| f.message == expected));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn message() -> Message {
        let body =
            SharedDoc::from_document(&doc! { "insert": "events", "$db": "brook" }).expect("doc");
        let d = SharedDoc::from_document(&doc! { "_id": 1, "x": "y" }).expect("doc");
        let mut m = Message::command(7, body);
        m.sequences
            .push(DocumentSequence::new("documents", vec![d.clone(), d]));
        m
    }

    #[test]
    fn every_compressor_round_trips() {
        for compressor in [
            None,
            Some(CompressorPick::Noop),
            Some(CompressorPick::Snappy),
            Some(CompressorPick::Zlib(Some(9))),
            Some(CompressorPick::Zstd(None)),
        ] {
            for checksum in [false, true] {
                let options = Options {
                    checksum,
                    compressor,
                    limit: LimitPick::Default,
                    prefix: vec![1, 2, 3],
                    flag_bits: 0,
                    only_valid_flags: true,
                };
                check_message(&message(), &options);
            }
        }
    }

    #[test]
    fn refusals_leave_dst_alone() {
        let mut m = message();
        m.sequences[0].identifier = "docu\0ments".to_owned();
        let options = Options {
            checksum: false,
            compressor: None,
            limit: LimitPick::Default,
            prefix: vec![9; 5],
            flag_bits: 0,
            only_valid_flags: true,
        };
        check_message(&m, &options);
        let mut m = message();
        m.flags = MsgFlags::from_bits_retain(1 << 5);
        check_message(&m, &options);
        let under = Options {
            limit: LimitPick::Under(1),
            ..options
        };
        check_message(&message(), &under);
    }
}
