//! `frame_decode`: `brook_wire::decode` on arbitrary bytes, whole and in chunks.
//!
//! Invariants checked for every call:
//!
//! * it returns (no panic), and the Rust heap never grows past [`ALLOC_BOUND`];
//! * `Ok(None)` leaves the buffer exactly as it was, and only happens while fewer bytes
//!   are buffered than the frame needs (a 16-byte header that declares a length outside
//!   `16..=limit` must be refused, not waited on);
//! * `Ok(Some(frame))` consumed exactly the declared `messageLength` (never more than the
//!   limit) and left the following bytes untouched; its header is what `peek_header`
//!   saw; the message re-encodes and decodes to itself, and an uncompressed frame whose
//!   body section comes first re-encodes to the very same bytes;
//! * feeding the same bytes in random chunks (as a socket would deliver them) gives the
//!   same frames and the same ending (error, or waiting for more) as feeding them whole.

use brook_wire::{DecodeLimits, Decoded, EncodeOptions, MsgHeader, decode, peek_header};
use bytes::BytesMut;

use crate::alloc_track;

/// The decode limit used by this target: small, so that "too large" paths are reached.
pub const FRAME_LIMIT: usize = 64 * 1024;

/// How much one `decode` call may allocate: a frame and its decompression are each at
/// most the limit; the rest is room for decompressor state and small vectors.
pub const ALLOC_BOUND: usize = 4 * FRAME_LIMIT + 512 * 1024;

/// What one decoded frame looked like, for comparing whole and chunked feeding.
#[derive(Debug, PartialEq)]
pub struct FrameRecord {
    /// Bytes the frame consumed.
    pub consumed: usize,
    /// Its header.
    pub header: MsgHeader,
    /// Its compressor id, if it was OP_COMPRESSED.
    pub compressor: Option<u8>,
    /// The message.
    pub message: brook_wire::Message,
}

/// How a sequence of decode calls ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Ending {
    /// `Ok(None)` with this many bytes left buffered.
    NeedMore(usize),
    /// An error (the buffer's state after an error is unspecified).
    Error,
}

/// The fuzz target's body.
pub fn check_frame_decode(data: &[u8]) {
    let limits = DecodeLimits {
        max_message_size: FRAME_LIMIT,
    };
    let whole = feed(data, &[data.len()], &limits);
    let plan = chunk_plan(data);
    let chunked = feed(data, &plan, &limits);
    assert_eq!(
        whole, chunked,
        "feeding the input in chunks {plan:?} decoded differently than feeding it whole"
    );
}

/// Feeds `data` to the decoder in chunks of the given sizes (the last chunk takes what
/// is left), decoding as many frames as possible after each chunk.
pub fn feed(data: &[u8], chunks: &[usize], limits: &DecodeLimits) -> (Vec<FrameRecord>, Ending) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().copied();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match step(&mut buf, limits) {
                Some(Ok(frame)) => frames.push(frame),
                Some(Err(())) => return (frames, Ending::Error),
                None => break,
            }
        }
    }
    if data.is_empty() {
        // The empty input: one call on an empty buffer must wait.
        if let Some(outcome) = step(&mut buf, limits) {
            panic!("decode of an empty buffer returned {outcome:?}, expected Ok(None)");
        }
    }
    (frames, Ending::NeedMore(buf.len()))
}

/// One `decode` call with every per-call invariant checked. `None` = need more bytes.
pub fn step(buf: &mut BytesMut, limits: &DecodeLimits) -> Option<Result<FrameRecord, ()>> {
    let before = buf.clone();
    let outcome = alloc_track::within("decode", ALLOC_BOUND, || decode(buf, limits));
    match outcome {
        Ok(None) => {
            assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
            if let Some(h) = peek_header(&before) {
                let declared = usize::try_from(h.message_length).ok();
                let acceptable =
                    declared.filter(|&d| (MsgHeader::LEN..=limits.max_message_size).contains(&d));
                match acceptable {
                    Some(d) => assert!(
                        before.len() < d,
                        "Ok(None) with {} bytes buffered, frame declares {d}",
                        before.len()
                    ),
                    None => panic!(
                        "Ok(None) for a header declaring {} bytes (limit {}): must be refused",
                        h.message_length, limits.max_message_size
                    ),
                }
            }
            None
        }
        Ok(Some(decoded)) => Some(Ok(check_decoded(&before, buf, decoded, limits))),
        Err(e) => {
            // The error must render (Display is what logs and users see).
            let text = e.to_string();
            assert!(!text.is_empty());
            Some(Err(()))
        }
    }
}

fn check_decoded(
    before: &BytesMut,
    after: &BytesMut,
    decoded: Decoded,
    limits: &DecodeLimits,
) -> FrameRecord {
    let consumed = before.len() - after.len();
    let declared = usize::try_from(decoded.header.message_length).unwrap_or_else(|_| {
        panic!(
            "decoded a frame with negative length {}",
            decoded.header.message_length
        )
    });
    assert_eq!(
        consumed, declared,
        "a decoded frame consumed other than its declared length"
    );
    assert!(
        consumed <= limits.max_message_size,
        "decoded a frame over the limit"
    );
    assert_eq!(
        before.get(consumed..),
        Some(&after[..]),
        "the bytes after the frame changed"
    );
    assert_eq!(
        peek_header(before),
        Some(decoded.header),
        "peek_header disagrees with decode"
    );
    let message = decoded.message;
    assert_eq!(message.request_id, decoded.header.request_id);
    assert_eq!(message.response_to, decoded.header.response_to);
    let compressor = decoded.compressor.map(|c| c.id());
    match compressor {
        None => assert_eq!(
            decoded.header.op_code, 2013,
            "uncompressed frame not OP_MSG"
        ),
        Some(_) => assert_eq!(
            decoded.header.op_code, 2012,
            "compressed frame not OP_COMPRESSED"
        ),
    }

    // Re-encode (uncompressed, same flags: a verified checksum is written again).
    let mut again = BytesMut::new();
    let opts = EncodeOptions {
        max_message_size: usize::MAX,
        ..EncodeOptions::default()
    };
    message
        .encode(&mut again, &opts)
        .unwrap_or_else(|e| panic!("a decoded message does not re-encode: {e}"));
    assert_eq!(
        again.len(),
        message.encoded_len(),
        "encoded_len disagrees with encode"
    );
    let body_first = before.get(20) == Some(&0);
    if compressor.is_none() && body_first {
        assert_eq!(
            &again[..],
            before.get(..consumed).unwrap_or_default(),
            "an OP_MSG with its body first did not re-encode to the same bytes"
        );
    }
    let unlimited = DecodeLimits {
        max_message_size: usize::MAX,
    };
    let mut again_buf = again;
    match decode(&mut again_buf, &unlimited) {
        Ok(Some(d)) => {
            assert_eq!(d.message, message, "re-encoded message decodes differently");
            assert!(again_buf.is_empty());
        }
        other => panic!("re-encoded message does not decode: {other:?}"),
    }

    FrameRecord {
        consumed,
        header: decoded.header,
        compressor,
        message,
    }
}

/// Chunk sizes for feeding `data`, from a PRNG seeded by the bytes themselves: byte by
/// byte through the first header, then a mix of small and large pieces.
pub fn chunk_plan(data: &[u8]) -> Vec<usize> {
    let mut rng = SplitMix(fnv1a(data));
    let mut plan = Vec::new();
    let mut covered = 0usize;
    while covered < data.len() {
        let n = if covered < 20 {
            1
        } else {
            match rng.next() % 8 {
                0 => 1,
                1..=4 => 1 + (rng.next() % 16) as usize,
                5 | 6 => 1 + (rng.next() % 512) as usize,
                _ => 1 + (rng.next() % 8192) as usize,
            }
        };
        plan.push(n);
        covered = covered.saturating_add(n);
    }
    plan
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_plans_cover_the_input() {
        for len in [0usize, 1, 15, 16, 17, 300, 70_000] {
            let data = vec![0xa5u8; len];
            let plan = chunk_plan(&data);
            assert!(plan.iter().sum::<usize>() >= len);
            assert!(plan.iter().all(|&n| n > 0));
        }
    }

    #[test]
    fn the_empty_input_waits() {
        check_frame_decode(&[]);
        let limits = DecodeLimits {
            max_message_size: FRAME_LIMIT,
        };
        assert_eq!(feed(&[], &[], &limits).1, Ending::NeedMore(0));
    }

    #[test]
    fn a_header_over_the_limit_is_refused() {
        let mut frame = Vec::new();
        for v in [i32::MAX, 1, 0, 2013] {
            frame.extend_from_slice(&v.to_le_bytes());
        }
        let limits = DecodeLimits {
            max_message_size: FRAME_LIMIT,
        };
        let (frames, end) = feed(&frame, &[frame.len()], &limits);
        assert!(frames.is_empty());
        assert_eq!(end, Ending::Error);
    }
}
